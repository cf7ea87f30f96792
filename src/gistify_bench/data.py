"""Real text for the benchmarks, placed in a cache by a setup step and never fetched at run time.

Wikipedia: the 106 articles of the English Wikipedia dump that ships in the gensim 4.4.0 wheel's test data
(CC BY-SA 4.0), converted to plain text with mwparserfromhell. `python -m gistify_bench.data fetch`
downloads the wheel (no dependencies, 28 MB) and writes `$GISTIFY_HOME/data/wikipedia/<slug>.txt`.

Splits keep tuning, training and evaluation apart:
- "dev": the articles used to choose `reinforce`'s defaults (experiments/reinforce_dev.py);
- "train": every fourth remaining article by title (for trained components such as the RL controller);
- "eval": the rest; benchmarks draw only from it.
"""

from __future__ import annotations

import bz2
import json
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

GENSIM = "gensim==4.4.0"
DUMP = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
DEV = {"Abacus", "Arithmetic mean", "Astronaut"}
MIN_WORDS = 300  # stubs and disambiguation pages are too short to hide anything in
_END_SECTIONS = re.compile(
    r"^==+\s*(See also|References|External links|Notes|Further reading|Bibliography)\s*==+", re.M
)


class DataError(RuntimeError):
    """Benchmark data is missing; the message says which command places it."""


def data_dir() -> Path:
    from gistify.models import cache_dir

    return cache_dir().parent / "data"


def articles(wheel: str | Path):
    """(title, wikitext) of each non-redirect page of the dump inside the gensim wheel."""
    with zipfile.ZipFile(wheel) as z:
        xml = bz2.decompress(z.read(DUMP))
    for page in ET.fromstring(xml).iter():
        if not page.tag.endswith("}page"):
            continue
        title = next(e.text for e in page.iter() if e.tag.endswith("}title"))
        text = next((e.text for e in page.iter() if e.tag.endswith("}text")), None) or ""
        if not text.lower().startswith("#redirect"):
            yield title, text


def plain(wikitext: str) -> str:
    """Plain text of an article: no references, templates, tables, files or categories; headings on lines
    of their own; nothing after "See also" / "References" / "External links"."""
    import mwparserfromhell

    m = _END_SECTIONS.search(wikitext)
    wikitext = wikitext[: m.start()] if m else wikitext
    wikitext = re.sub(r"<ref[^>/]*/>|<ref[^>]*>.*?</ref>", "", wikitext, flags=re.S)
    wikitext = re.sub(r"\{\|.*?\|\}", "", wikitext, flags=re.S)  # tables
    code = mwparserfromhell.parse(wikitext)
    for link in code.filter_wikilinks():
        if re.match(r"(?i)(file|image|category):", str(link.title)):
            code.remove(link)
    text = code.strip_code(normalize=True, collapse=True)
    text = re.sub(r"^=+\s*(.*?)\s*=+$", r"\1", text, flags=re.M)
    lines = [ln.strip() for ln in text.splitlines()]
    text = "\n".join(ln for ln in lines if ln and not ln.startswith(("thumb|", "|")))
    text = re.sub(r"\(\s*[;,]?\s*\)", "", text)  # parentheses emptied by removed templates
    text = re.sub(r"[ \t]+([,.;:])", r"\1", text)
    text = re.sub(r"[ \t]{2,}", " ", text)
    return re.sub(r"\n{2,}", "\n\n", text).strip() + "\n"


def slug(title: str) -> str:
    return re.sub(r"\W+", "_", title).strip("_").lower()


def fetch_wikipedia(force: bool = False) -> Path:
    """Download the gensim wheel (no dependencies) and write its articles as plain text."""
    out = data_dir() / "wikipedia"
    if (out / "index.json").is_file() and not force:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, GENSIM]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise DataError(f"could not download {GENSIM} from PyPI: {done.stderr.strip()[-300:]}")
        out.mkdir(parents=True, exist_ok=True)
        index = {}
        for title, wikitext in articles(wheels[0]):
            text = plain(wikitext)
            if len(text.split()) >= MIN_WORDS:
                (out / f"{slug(title)}.txt").write_text(text, encoding="utf-8")
                index[title] = {"file": f"{slug(title)}.txt", "words": len(text.split())}
        (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
    return out


def split_of(title: str, rank: int) -> str:
    return "dev" if title in DEV else ("train" if rank % 4 == 3 else "eval")


def wikipedia(split: str = "eval") -> dict[str, str]:
    """{title: plain text} of one split ("dev", "train", "eval"), in title order."""
    root = data_dir() / "wikipedia"
    if not (root / "index.json").is_file():
        raise DataError(f"the Wikipedia articles are not in {root}; run: python -m gistify_bench.data fetch")
    index = json.loads((root / "index.json").read_text())
    rest = sorted(t for t in index if t not in DEV)
    ranks = {t: i for i, t in enumerate(rest)}
    return {
        t: (root / index[t]["file"]).read_text(encoding="utf-8")
        for t in sorted(index)
        if split_of(t, ranks.get(t, -1)) == split
    }


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m gistify_bench.data", description="place benchmark data in the cache")
    p.add_argument("action", choices=["fetch", "list"])
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    if args.action == "fetch":
        print(f"wikipedia: {fetch_wikipedia(args.force)}")
    for split in ("dev", "train", "eval"):
        try:
            arts = wikipedia(split)
        except DataError as e:
            print(e)
            return 3
        print(f"{split}: {len(arts)} articles, {sum(len(t.split()) for t in arts.values())} words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
