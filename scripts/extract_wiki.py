"""Extract plain-text Wikipedia articles from the dump that ships in the gensim 4.4.0 wheel's test data.

Provenance of the bundled documents in examples/ and tests/data/ (Wikipedia, CC BY-SA 4.0). Run:

    pip download --no-deps -d /tmp/gensim gensim==4.4.0
    pip install mwparserfromhell
    python scripts/extract_wiki.py /tmp/gensim/gensim-4.4.0-*.whl OUT_DIR "Title A" "Title B" ...

Markup is removed with mwparserfromhell; references, templates, tables, files and categories are dropped;
headings become their own lines; the text stops before "See also" / "References" / "External links".
"""

import bz2
import re
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import mwparserfromhell

DUMP = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
END_SECTIONS = re.compile(r"^==+\s*(See also|References|External links|Notes|Further reading|Bibliography)\s*==+", re.M)


def articles(wheel: str):
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
    m = END_SECTIONS.search(wikitext)
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


if __name__ == "__main__":
    wheel, out, *titles = sys.argv[1:]
    Path(out).mkdir(parents=True, exist_ok=True)
    for title, text in articles(wheel):
        if title in titles:
            name = re.sub(r"\W+", "_", title).strip("_").lower() + ".txt"
            (Path(out) / name).write_text(plain(text), encoding="utf-8")
            print(name, len(plain(text).split()), "words")
