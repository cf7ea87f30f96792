"""Text to images, deterministically: the fast-path input of vist (docs/methods.md §3.2).

A layout is a stack of `rows` text rows, each `row_height` px high and `width` px wide, on a white canvas. Two
presets cover the two encoders vist can read with:

- `Layout.fold()`: the paper's canvas. PIXEL renders a 14 x 3584 px strip and folds it into a 224 x 224 square:
  16 rows of 14 px, one text row per row of 14 x 14 ViT patches (256 patches). Noto Sans 10 px in the paper;
  DejaVu Sans 10 px here, the font every machine of ours has. Unlike PIXEL, which cuts the strip every 224 px
  wherever that falls (inside a glyph, often), each row is word-wrapped: a row is a readable line, so the text
  span each row holds is exact, and an OCR encoder can read the rows one by one (gistify.vist.encoder scales
  each 14-px row to its 48-px input).
- `Layout.line()`: one 48-px row per image, the input height of the PP-OCRv6 recognition model that gistify
  uses as its frozen encoder, so the encoder reads the pixels as drawn. The
  encoder makes one token per 8 px of width, so a line of 768 px gives 96 tokens.

Long text fills row after row and image after image; rows break between words (and between CJK characters,
which have no spaces), never inside one, unless one word is wider than a whole row. A newline in the text
always ends a row; a blank line leaves a blank row (the paper's "blank line after each demonstration").
Leading indentation is kept and tabs are expanded, so code keeps its shape (use a monospaced font for it).
Characters the main font lacks are drawn with the first fallback font that has them (CJK fonts by default);
characters no font has are drawn as the main font's box and listed in `Rendering.missing`.

Every row records the span of the input it holds (character offsets: `text[start:end]`) and where its text
ends in pixels; the masks for empty regions (PIXEL's attention mask: patches after the end of the text, and
empty rows) come from that record. Same text and layout give the same pixels: drawing uses Pillow's basic
layout engine (no dependence on whether libraqm is installed) with no antialiasing choices left to chance.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# CJK fonts tried, in order, for characters the main font lacks. The first is Debian's fonts-wqy-microhei
# (1.6 MB: Chinese, Japanese kana, Korean hangul); the others are used where it is absent.
CJK_FALLBACKS = ("wqy-microhei.ttc", "NotoSansCJK-Regular.ttc", "DroidSansFallbackFull.ttf", "wqy-zenhei.ttc")
FONT_HINT = "see `fc-list`; for CJK text: apt-get install -y --no-install-recommends fonts-wqy-microhei"

# Break opportunities: runs of blanks, single CJK characters (no spaces between words), runs of anything else.
_CJK = "\u2e80-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff"
_PIECES = re.compile(rf"[ \t\r\f\v]+|[{_CJK}]|[^ \t\r\f\v{_CJK}]+")
_BLANK = " \t\r\f\v"
_NOTDEF_PROBE = "\U0010fffd"  # a private-use code point: no font maps it, so it draws the font's .notdef box


@dataclass(frozen=True)
class Layout:
    """How text is laid out on images: `rows` rows of `row_height` px, `width` px wide, per image.

    Args:
        font: main font, a file name found in the system font folders or a path (`fc-list` lists them).
        font_size: in px.
        rows: text rows per image.
        row_height: px per row; the font's ascent + descent must fit.
        width: image width in px.
        patch: width in px of one cell of the empty-region mask (14: the ViT/14 patch of the paper's canvas;
            8: one PP-OCRv6 feature column of a 48-px line).
        padding: blank px left of the text on each row (and kept free on the right).
        tab_size: columns per tab stop.
        fallbacks: fonts tried, in order, for characters the main font lacks; missing files are skipped.
    """

    font: str = "DejaVuSans.ttf"
    font_size: int = 10
    rows: int = 16
    row_height: int = 14
    width: int = 224
    patch: int = 14
    padding: int = 2
    tab_size: int = 4
    fallbacks: tuple[str, ...] = CJK_FALLBACKS

    def __post_init__(self):
        for name in ("font_size", "rows", "row_height", "width", "patch", "tab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Layout.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.padding, int) or not 0 <= 2 * self.padding < self.width:
            raise ValueError(f"Layout.padding must be an integer in [0, width / 2), got {self.padding!r}")
        if self.width % self.patch:
            raise ValueError(f"Layout.width ({self.width}) must be a multiple of Layout.patch ({self.patch})")
        if isinstance(self.fallbacks, str):
            raise ValueError("Layout.fallbacks must be a tuple of font names, not one string")

    @classmethod
    def fold(cls, **changes) -> Layout:
        """The paper's canvas (§3.2): 224 x 224, 16 rows of 14 px, 10-px font, a mask cell per 14 x 14 patch."""
        return replace(cls(), **changes)

    @classmethod
    def line(cls, **changes) -> Layout:
        """One 48-px line per image, PP-OCRv6's input height; 768 px wide (96 encoder tokens), a 32-px font
        (text about 70% of the height, as in the detector's crops the recogniser was trained on)."""
        return replace(cls(font_size=32, rows=1, row_height=48, width=768, patch=8, padding=4), **changes)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of every image."""
        return self.width, self.rows * self.row_height

    def to_dict(self) -> dict:
        return {**asdict(self), "fallbacks": list(self.fallbacks)}


@dataclass(frozen=True)
class Row:
    """One row of one image: it holds `text[span[0]:span[1]]`, drawn from x = padding to x = `end` px."""

    image: int
    row: int
    span: tuple[int, int]
    end: int

    @property
    def empty(self) -> bool:
        return self.span[0] == self.span[1]


@dataclass
class Rendering:
    """Images of a text, with what each row holds.

    images: the PIL images (RGB, `layout.size` each). rows: every row of every image, in reading order (blank
    rows after the end of the text included). fonts: the font files used, main font first. missing: characters
    no font had, drawn as boxes.
    """

    text: str
    layout: Layout
    images: list[Image.Image]
    rows: list[Row]
    fonts: tuple[str, ...]
    missing: str = ""
    _keys: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.images)

    def spans(self) -> list[tuple[int, int]]:
        """Per image, the span of the input it holds, (start, end) character offsets ((s, s) when blank)."""
        out = []
        for i in range(len(self.images)):
            spans = [r.span for r in self.rows if r.image == i and not r.empty]
            out.append((spans[0][0], spans[-1][1]) if spans else self._blank_at(i))
        return out

    def _blank_at(self, image: int) -> tuple[int, int]:
        before = [r.span[1] for r in self.rows if r.image <= image]
        at = max(before) if before else 0
        return at, at

    def masks(self) -> np.ndarray:
        """(M, rows, width / patch) bool: True where a cell holds text, False for empty regions (after the end
        of a row's text, blank rows, the rest of the last image). A cell is kept if any of it is before the end
        of the row's text: PIXEL's mask, which keeps the gaps between words."""
        lay = self.layout
        cells = lay.width // lay.patch
        mask = np.zeros((len(self.images), lay.rows, cells), dtype=bool)
        for r in self.rows:
            if not r.empty:
                mask[r.image, r.row, : -(-r.end // lay.patch)] = True
        return mask

    def key(self, image: int) -> str:
        """A content key of one image: sha256 of its pixels and of the layout (row geometry) it was drawn with,
        so a feature cache can never mix images that look alike but are cut into rows differently."""
        if not self._keys:
            settings = json.dumps(self.layout.to_dict(), sort_keys=True).encode()
            for im in self.images:
                h = hashlib.sha256(settings)
                h.update(repr((im.mode, im.size)).encode())
                h.update(im.tobytes())
                self._keys.append(h.hexdigest())
        return self._keys[image]

    def save(self, folder: str | Path, stem: str = "page") -> list[Path]:
        """Write `stem-0001.png`, ... and `stem.json` (layout, fonts and each row's span) into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, im in enumerate(self.images):
            paths.append(folder / f"{stem}-{i + 1:04d}.png")
            im.save(paths[-1])
        record = {
            "layout": self.layout.to_dict(),
            "fonts": list(self.fonts),
            "missing": self.missing,
            "characters": len(self.text),
            "images": [
                {
                    "file": p.name,
                    "span": list(span),
                    "rows": [{"row": r.row, "span": list(r.span), "end": r.end} for r in self.rows if r.image == i],
                }
                for i, (p, span) in enumerate(zip(paths, self.spans()))
            ],
        }
        text = json.dumps(record, ensure_ascii=False, indent=1)
        text = re.sub(r"\[\s*(\d+),\s*(\d+)\s*\]", r"[\1, \2]", text)  # a span on one line
        (folder / f"{stem}.json").write_text(text, encoding="utf-8")
        return paths


# -- fonts -----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _font(name: str, size: int, required: bool) -> ImageFont.FreeTypeFont | None:
    try:
        return ImageFont.truetype(name, size, layout_engine=ImageFont.Layout.BASIC)
    except OSError:
        if required:
            raise ValueError(f"Layout.font: cannot open font {name!r} ({FONT_HINT})") from None
        return None


def _glyph(font: ImageFont.FreeTypeFont, ch: str) -> tuple:
    mask = font.getmask(ch)
    return font.getlength(ch), mask.size, bytes(mask)


class _Fonts:
    """The main font plus the fallbacks that exist, and which of them draws each character."""

    def __init__(self, layout: Layout):
        self.fonts = [_font(layout.font, layout.font_size, True)]
        self.fonts += [f for f in (_font(n, layout.font_size, False) for n in layout.fallbacks) if f is not None]
        self._notdef = [_glyph(f, _NOTDEF_PROBE) for f in self.fonts]
        self._which: dict[str, int] = {}
        self.missing: set[str] = set()

    def files(self) -> tuple[str, ...]:
        return tuple(str(f.path) for f in self.fonts)

    def which(self, ch: str) -> int:
        """Index of the first font that has a glyph for `ch` (0, drawn as a box, if none has)."""
        i = self._which.get(ch)
        if i is None:
            i = 0
            if not ch.isspace() and unicodedata.category(ch) not in ("Cc", "Cf", "Mn", "Me"):
                # Pillow has no "has glyph" call: a missing glyph draws exactly the .notdef box.
                has = [_glyph(f, ch) != nd for f, nd in zip(self.fonts, self._notdef)]
                i = has.index(True) if any(has) else 0
                if not any(has):
                    self.missing.add(ch)
            self._which[ch] = i
        return i

    def runs(self, s: str) -> list[tuple[int, str]]:
        """`s` cut into runs drawn with one font each: [(font index, text)]."""
        runs: list[tuple[int, str]] = []
        for ch in s:
            i = self.which(ch)
            if runs and runs[-1][0] == i:
                runs[-1] = (i, runs[-1][1] + ch)
            else:
                runs.append((i, ch))
        return runs

    def length(self, s: str) -> float:
        return sum(self.fonts[i].getlength(run) for i, run in self.runs(s))


# -- layout --------------------------------------------------------------------------------------------------------


def _drawable(s: str, tab_size: int) -> str:
    """What is drawn for a row's text: tabs expanded, other control characters as spaces."""
    s = s.expandtabs(tab_size)
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in s)


def _wrap(text: str, start: int, end: int, fits) -> list[tuple[int, int]]:
    """Rows (start, end) of text[start:end]: greedy, breaking at blanks and between CJK characters. Blanks at a
    break belong to no row; leading indentation of a line stays on its first row."""
    rows = []
    line_start = start
    while line_start <= end:
        nl = text.find("\n", line_start, end)
        line_end = end if nl < 0 else nl
        pos = line_start
        if pos == line_end:
            rows.append((pos, pos))  # a blank line: a blank row
        while pos < line_end:
            if not text[pos:line_end].strip(_BLANK):  # only blanks are left: a blank row, if the line has none
                if not rows or rows[-1][0] < line_start:
                    rows.append((pos, pos))
                break
            row_end = pos
            for m in _PIECES.finditer(text, pos, line_end):
                if m.group()[0] in _BLANK:
                    continue  # blanks never end a row; the next piece decides
                if not fits(text[pos : m.end()]):
                    break
                row_end = m.end()
            if row_end == pos:  # the first piece alone is wider than a row: cut it where it must be cut
                lo, hi = pos + 1, line_end
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    lo, hi = (mid, hi) if fits(text[pos:mid]) else (lo, mid - 1)
                row_end = lo
            rows.append((pos, row_end))
            pos = row_end
            while pos < line_end and text[pos] in _BLANK:
                pos += 1
        if nl < 0:
            break
        line_start = nl + 1
    return rows


def _rows(text: str, layout: Layout, start: int, end: int | None) -> tuple[_Fonts, list[tuple[int, int]]]:
    """The fonts and the rows (character spans) of text[start:end] in `layout`, checked."""
    if not isinstance(text, str):
        raise TypeError(f"render() takes a str, got {type(text).__name__}")
    end = len(text) if end is None else end
    if not 0 <= start <= end <= len(text):
        raise ValueError(f"render(): need 0 <= start <= end <= len(text) = {len(text)}, got {start}, {end}")
    fonts = _Fonts(layout)
    ascent, descent = fonts.fonts[0].getmetrics()
    if ascent + descent > layout.row_height + 2:  # a pixel of overhang at each edge is harmless
        raise ValueError(
            f"Layout.font_size {layout.font_size} is too large for Layout.row_height {layout.row_height} "
            f"(the font needs {ascent + descent} px)"
        )
    room = layout.width - 2 * layout.padding
    return fonts, _wrap(text, start, end, lambda s: fonts.length(_drawable(s, layout.tab_size)) <= room)


def row_spans(text: str, layout: Layout | None = None, start: int = 0, end: int | None = None) -> list:
    """The rows render() makes of text[start:end], as (start, end) character spans, without drawing them: a
    long text can be rendered piece by piece from row starts (greedy wrapping gives the same rows)."""
    return _rows(text, layout or Layout.fold(), start, end)[1]


def render(text: str, layout: Layout | None = None, start: int = 0, end: int | None = None) -> Rendering:
    """Render `text[start:end]` (all of it by default) with `layout` (default: the paper's fold).

    Spans in the result are offsets into `text` itself, so a caller that cuts a long text into pieces (the
    paper splits the encoder text evenly into M images) renders each piece with `start`/`end` and keeps offsets
    into the original. An empty text gives one blank image, fully masked.
    """
    layout = layout or Layout.fold()
    fonts, spans = _rows(text, layout, start, end)
    ascent, descent = fonts.fonts[0].getmetrics()
    # Centre the main font's ascent + descent in the row; every run sits on that baseline.
    baseline = (layout.row_height - ascent - descent) // 2 + ascent

    images, rows = [], []
    n_images = max(1, -(-len(spans) // layout.rows))
    for i in range(n_images):
        image = Image.new("RGB", layout.size, (255, 255, 255))
        draw = ImageDraw.Draw(image)
        draw.fontmode = "L"  # antialiased greyscale glyphs, always
        for r in range(layout.rows):
            k = i * layout.rows + r
            if k >= len(spans):
                at = spans[-1][1] if spans else start
                rows.append(Row(i, r, (at, at), layout.padding))
                continue
            s, e = spans[k]
            x, y = float(layout.padding), r * layout.row_height + baseline
            for f, run in fonts.runs(_drawable(text[s:e], layout.tab_size)):
                draw.text((x, y), run, font=fonts.fonts[f], fill=(0, 0, 0), anchor="ls")
                x += fonts.fonts[f].getlength(run)
            rows.append(Row(i, r, (s, e), int(np.ceil(x))))
        images.append(image)
    return Rendering(text, layout, images, rows, fonts.files(), "".join(sorted(fonts.missing)))
