"""Write chosen Wikipedia articles from the gensim 4.4.0 wheel's dump as plain text (provenance of
examples/ and tests/data/; CC BY-SA 4.0). The conversion is gistify_bench.data.plain.

    pip download --no-deps -d /tmp/gensim gensim==4.4.0
    python scripts/extract_wiki.py /tmp/gensim/gensim-4.4.0-*.whl OUT_DIR "Title A" "Title B" ...
"""

import sys
from pathlib import Path

from gistify_bench.data import articles, plain, slug

if __name__ == "__main__":
    wheel, out, *titles = sys.argv[1:]
    Path(out).mkdir(parents=True, exist_ok=True)
    for title, wikitext in articles(wheel):
        if title in titles:
            text = plain(wikitext)
            (Path(out) / f"{slug(title)}.txt").write_text(text, encoding="utf-8")
            print(f"{slug(title)}.txt", len(text.split()), "words")
