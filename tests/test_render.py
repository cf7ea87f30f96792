"""gistify.render (gistify/rendering.py): deterministic pixels, the paper's fold and the 48-px line, masks,
spans, words kept whole, code and CJK, and the `gistify render` command."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import CJK_FONT, DATA, missing, prose
from gistify.cli import main
from gistify.rendering import Layout, render

CODE = 'def mean(xs):\n\tif not xs:\n        raise ValueError("empty")\n\n    return sum(xs) / len(xs)\n'
CJK = "北京是中华人民共和国的首都，也是全国的政治和文化中心。東京は日本の首都です。한국어 텍스트"


def has_cjk_font() -> bool:
    return len(render("中", Layout.line()).fonts) > 1


def row_texts(r):
    return [r.text[s:e] for s, e in (row.span for row in r.rows)]


@pytest.mark.parametrize("layout", [Layout.fold(), Layout.line()], ids=["fold", "line"])
def test_same_text_same_pixels(layout):
    text = prose()[:3000]
    a, b = render(text, layout), render(text, layout)
    assert [im.tobytes() for im in a.images] == [im.tobytes() for im in b.images]
    assert [a.key(i) for i in range(len(a))] == [b.key(i) for i in range(len(b))]
    assert a.rows == b.rows
    other = render(text, Layout.fold(font_size=9) if layout.rows > 1 else Layout.line(font_size=30))
    assert other.key(0) != a.key(0)


def test_fold_is_the_papers_canvas():
    r = render(prose()[:2000])
    assert all(im.size == (224, 224) and im.mode == "RGB" for im in r.images)
    assert r.masks().shape == (len(r), 16, 16)  # 256 patches of 14 x 14, one text row per patch row
    assert len(r.rows) == 16 * len(r)


def test_line_matches_the_encoder_height():
    r = render(prose()[:600], Layout.line())
    assert all(im.size == (768, 48) for im in r.images)
    assert r.masks().shape == (len(r), 1, 96)  # one mask cell per 8-px encoder token
    assert len(r.rows) == len(r)


@pytest.mark.parametrize("layout", [Layout.fold(), Layout.line()], ids=["fold", "line"])
def test_spans_cover_the_text_without_breaking_words(layout):
    text = prose("a_modest_proposal.txt")[:5000]
    r = render(text, layout)
    pos = 0
    for row in r.rows:
        s, e = row.span
        assert text[pos:s].strip() == ""  # only blanks and newlines between rows
        if not row.empty:
            assert not text[s].isspace() or s == 0 or text[s - 1] == "\n"
            assert s == 0 or not (text[s - 1].isalnum() and text[s].isalnum())  # no word cut at the start
            assert e == len(text) or not (text[e - 1].isalnum() and text[e].isalnum())  # nor at the end
        pos = max(pos, e)
    assert text[pos:].strip() == ""


def test_rows_and_images_in_reading_order_with_image_spans():
    text = prose()
    r = render(text)
    spans = r.spans()
    assert len(spans) == len(r) > 5
    assert spans[0][0] == 0 and spans[-1][1] == len(text.rstrip())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def test_masks_mark_empty_regions():
    r = render("A short line.\n\nAnother after a blank line.")
    m = r.masks()[0]  # (16 rows, 16 patches)
    assert m[0, 0] and not m[0, -1]  # text at the start of row 0, nothing after its end
    assert not m[1].any()  # the blank line
    assert m[2, 0]
    assert not m[3:].any()  # after the end of the text
    row0 = r.rows[0]
    assert m[0].sum() == -(-row0.end // 14)
    # the mask cells past the text are white pixels
    pixels = np.asarray(r.images[0].convert("L"))
    assert (pixels[:14, m[0].sum() * 14 :] == 255).all()


def test_empty_text_is_one_blank_masked_image():
    r = render("")
    assert len(r) == 1 and not r.masks().any() and r.spans() == [(0, 0)]


def test_start_and_end_keep_offsets_into_the_text():
    text = prose()
    r = render(text, Layout.line(), start=1000, end=1500)
    assert r.rows[0].span[0] == 1000 and max(row.span[1] for row in r.rows) <= 1500
    assert row_texts(r)[0] == text[1000 : r.rows[0].span[1]]


def test_a_word_wider_than_a_row_is_cut():
    text = "x" * 200 + " end"
    r = render(text, Layout.line())
    assert "".join(row_texts(r)[:-1]) == "x" * 200 and row_texts(r)[-1] == "end"


def test_code_keeps_indentation_and_newlines():
    r = render(CODE, Layout.line(font="DejaVuSansMono.ttf"))
    texts = row_texts(r)
    assert texts[:3] == ["def mean(xs):", "\tif not xs:", '        raise ValueError("empty")']
    assert texts[3] == ""  # the blank line is a blank row
    ends = [row.end for row in r.rows]
    assert ends[1] > ends[0] * 0.7  # the tab is drawn as 4 columns, not as nothing
    assert len(render(CODE, Layout.fold(font="DejaVuSansMono.ttf")).rows) == 16


def test_cjk_uses_a_fallback_font_and_breaks_between_characters():
    if not has_cjk_font():
        missing("a CJK font (DejaVu has no CJK glyphs)", CJK_FONT)
    r = render(CJK * 2, Layout.fold())
    assert r.missing == "" and len(r.fonts) >= 2
    texts = [t for t in row_texts(r) if t]
    assert "".join(texts).replace(" ", "") == (CJK * 2).replace(" ", "")
    assert len(texts) > 2  # wrapped without spaces to break at
    pixels = np.asarray(r.images[0].convert("L"))
    assert (pixels[:14] < 128).sum() > 100  # drawn glyphs, not boxes or blanks


def test_characters_no_font_has_are_reported():
    r = render("a\U000f0001b")
    assert r.missing == "\U000f0001"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"font_size": 40}, "font_size"),
        ({"width": 230}, "width"),
        ({"rows": 0}, "rows"),
        ({"font": "nope.ttf"}, "font"),
    ],
)
def test_bad_layouts_name_the_field(change, field):
    with pytest.raises(ValueError, match=rf"Layout\.{field}"):
        render("text", Layout.fold(**change))


def test_cli_render_writes_images_and_spans(tmp_path, capsys):
    assert main(["render", str(DATA / "aardwolf.txt"), "-o", str(tmp_path), "--layout", "line"]) == 0
    record = json.loads((tmp_path / "aardwolf.json").read_text(encoding="utf-8"))
    text = prose()
    files = sorted(p.name for p in tmp_path.glob("aardwolf-*.png"))
    assert files == [im["file"] for im in record["images"]] and len(files) > 100
    first = record["images"][0]["rows"][0]
    assert text[slice(*first["span"])] == text.split("\n")[0][: first["span"][1]]
    assert re.search(r"\d+ images of 768x48", capsys.readouterr().err)
    assert main(["render", str(tmp_path / "missing.txt"), "-o", str(tmp_path)]) == 2
