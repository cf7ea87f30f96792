"""Structure-aware units: Markdown, JSON and chat transcripts come out of compression well-formed.

The pipeline selects *units*, not words (docs/methods.md §1.5). A unit is a set of words that is kept whole or
dropped whole; it may need a *parent* unit (kept whenever it is), and a *skeleton* unit is never chosen for its
own score, only as the parent of something kept. In plain prose every word is its own unit with no parent, so
the selection is exactly the word-level one.

- Markdown (found with markdown-it, CommonMark plus tables): a fenced code block is one unit, fences
  included; a table's header row and delimiter row are a skeleton, each body row a unit whose parent it is
  (a kept row brings the header, so every row keeps its columns); a heading's `#` marker and a list item's
  marker are skeletons that are the parents of the words of their heading or item (nested items: of the
  outer item's marker); a setext heading (text and underline) is one unit.
- JSON (the whole text parses): every scalar member (`"key": 1`) or element is a unit; an object, an array or a
  long string (`LONG_STRING` words or more) is a skeleton (brackets or quotes, with its key and colon) whose
  children are its members, elements or words; commas are placed after selection, between kept siblings,
  so dropping any member or element leaves valid JSON. `json_minify=True` first removes the whitespace between
  JSON tokens (lossless: the string contents, numbers and key order are untouched), and the kept spans then
  refer to the minified text, which the result carries as its `source`.
- Chat transcripts (a JSON list of objects with string `role` and `content`, or an object whose `messages`
  is one): each message's members other than `content` belong to the message's skeleton, so a kept message
  always has its role; the words of `content` are compressed; a message whose words are all dropped goes
  whole.

A little over 400 lines: the three structures share the unit model above and its assembly (commas, parents),
which is why they live together.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from json.decoder import scanstring

import numpy as np

from gistify.text.options import STRUCTURES  # the one list, also checked before any model loads
from gistify.text.words import segment

LONG_STRING = 8  # a JSON string of fewer words is kept whole or dropped whole (an enum, a name, a date)
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LITERAL = re.compile(r"true|false|null|NaN|-?Infinity")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[^\s"]+', re.S)


@dataclass
class Layout:
    """The units of a text: which words go together, and what each needs."""

    text: str  # the text the words refer to: the input, or its minified JSON
    kind: str  # "prose", "markdown", "json" or "chat"
    words: np.ndarray  # (n_words, 2) character spans
    unit: np.ndarray  # (n_words,) the unit of each word; -1 for a JSON comma (placed by `repair`)
    charge: np.ndarray  # (n_words,) the unit that pays for the word's tokens (a comma: the sibling before it)
    parent: np.ndarray  # (n_units,) the unit kept whenever this one is, or -1
    selectable: np.ndarray  # (n_units,) False for skeletons, which are kept only as parents
    siblings: list = field(default_factory=list)  # JSON: per container, [(child unit, comma word or -1), ...]
    fences: dict = field(default_factory=dict)  # Markdown: fence unit -> (words of its opening line, closing line)
    minified: bool = False

    @property
    def n_units(self) -> int:
        return len(self.parent)

    @property
    def plain(self) -> bool:
        """Every word its own unit, in order, with no parents: the word-level selection."""
        return self.kind == "prose"

    def ancestors(self, u: int) -> list[int]:
        out = []
        while self.parent[u] >= 0:
            u = int(self.parent[u])
            out.append(u)
        return out

    def close(self, keep: np.ndarray) -> np.ndarray:
        """`keep` (n_units,) with every kept unit's ancestors added."""
        keep = keep.copy()
        if self.plain:
            return keep
        for u in np.flatnonzero(keep):
            keep[self.ancestors(int(u))] = True
        return keep

    def prune(self, keep: np.ndarray, protected: np.ndarray) -> np.ndarray:
        """`keep` without the skeletons that no longer have a kept child (children before parents: a
        skeleton's id is below its children's)."""
        if self.plain:
            return keep
        keep = keep.copy()
        has_child = np.zeros(self.n_units, dtype=bool)
        for u in range(self.n_units - 1, -1, -1):
            if keep[u] and not self.selectable[u] and not has_child[u] and not protected[u]:
                keep[u] = False
            if keep[u] and self.parent[u] >= 0:
                has_child[self.parent[u]] = True
        return keep

    def leaves(self, keep: np.ndarray) -> np.ndarray:
        """(n_units,) bool: kept units with no kept child (those that can be dropped alone)."""
        if self.plain:
            return keep.copy()
        has_child = np.zeros(self.n_units, dtype=bool)
        par = self.parent[keep]
        has_child[par[par >= 0]] = True
        return keep & ~has_child

    def word_mask(self, keep: np.ndarray) -> np.ndarray:
        """(n_words,) bool: the words of the kept units, with JSON commas between kept siblings."""
        if self.plain:
            return keep.copy()
        mask = np.zeros(len(self.words), dtype=bool)
        ok = self.unit >= 0
        mask[ok] = keep[self.unit[ok]]
        for kids in self.siblings:
            kept = [i for i, (child, _) in enumerate(kids) if keep[child]]
            for i in kept[:-1]:
                mask[kids[i][1]] = True
        return mask

    def check(self, out: str) -> str | None:
        """Why `out` is not well-formed where the input was (None when it is): JSON must parse."""
        if self.kind in ("json", "chat"):
            try:
                json.loads(out)
            except ValueError as e:
                return f"the output is not valid JSON ({e})"
        return None


def prose_layout(text: str, words: np.ndarray | None = None) -> Layout:
    words = segment(text) if words is None else words
    n = len(words)
    ids = np.arange(n, dtype=np.int64)
    return Layout(text, "prose", words, ids, ids, np.full(n, -1, dtype=np.int64), np.ones(n, dtype=bool))


def minify_json(text: str) -> str:
    """`text` (valid JSON) without the whitespace between its tokens; strings and numbers are untouched."""
    return "".join(m.group() for m in _JSON_TOKEN.finditer(text))


def analyse(text: str, structure: str = "auto", json_minify: bool = False) -> tuple[Layout, list[str]]:
    """The layout of `text` under `structure` ("auto": JSON if the whole text parses as JSON, else the
    Markdown structure found in it, else plain prose; "off": plain words), and notes for the result."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure must be one of {', '.join(map(repr, STRUCTURES))}, got {structure!r}")
    notes: list[str] = []
    if structure == "off":
        if json_minify:
            notes.append("json_minify needs structure='auto' or 'json': the text was left as it is")
        return prose_layout(text), notes
    data, is_json = None, False
    if structure in ("auto", "json"):
        try:
            data, is_json = json.loads(text), True
        except ValueError as e:
            if structure == "json":
                raise ValueError(f"structure='json' but the text is not valid JSON: {e}") from None
    if is_json:
        source = minify_json(text) if json_minify else text
        layout = _json_layout(source, _chat_messages(data))
        layout.minified = json_minify and source != text
        if layout.minified:
            notes.append(
                f"the JSON was minified ({len(text)} -> {len(source)} characters) before compression: "
                "source and kept_spans refer to the minified text"
            )
        return layout, notes
    if json_minify:
        notes.append("json_minify applies to JSON input only: the text is not JSON and was left as it is")
    return _markdown_layout(text), notes


# -- JSON ---------------------------------------------------------------------------------------------------------


def _chat_messages(data) -> str | None:
    """Where a chat transcript's messages are: "root" (a list of messages), "messages" (a key), or None."""

    def is_chat(xs):
        return (
            isinstance(xs, list)
            and len(xs) > 0
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in xs)
            and all(isinstance(m.get("content"), str) for m in xs)
        )

    if is_chat(data):
        return "root"
    if isinstance(data, dict) and is_chat(data.get("messages")):
        return "messages"
    return None


class _Builder:
    def __init__(self, text: str):
        self.text = text
        self.words: list[tuple[int, int]] = []
        self.unit: list[int] = []
        self.charge: list[int] = []
        self.parent: list[int] = []
        self.selectable: list[bool] = []
        self.siblings: list[list[tuple[int, int]]] = []

    def new_unit(self, parent: int, selectable: bool, into: int | None) -> int:
        if into is not None:
            return into
        self.parent.append(parent)
        self.selectable.append(selectable)
        return len(self.parent) - 1

    def word(self, s: int, e: int, u: int, charge: int | None = None) -> int:
        self.words.append((s, e))
        self.unit.append(u)
        self.charge.append(u if charge is None else charge)
        return len(self.words) - 1

    def ws(self, i: int) -> int:
        while i < len(self.text) and self.text[i] in " \t\n\r":
            i += 1
        return i


def _json_layout(text: str, chat: str | None) -> Layout:
    b = _Builder(text)

    def value(i, parent, pending, into=None, compressible=False, messages=False, message=False):
        """Scan the value at `i` (after whitespace); `pending` are the spans of its key and colon. Returns
        (end, the value's top unit)."""
        i = b.ws(i)
        c = text[i]
        if c in "{[":
            close = "}" if c == "{" else "]"
            j = b.ws(i + 1)
            if text[j] == close:  # an empty container: one unit
                u = b.new_unit(parent, True, into)
                for s, e in pending:
                    b.word(s, e, u)
                b.word(i, i + 1, u)
                b.word(j, j + 1, u)
                return j + 1, u
            u = b.new_unit(parent, False, into)
            for s, e in pending:
                b.word(s, e, u)
            b.word(i, i + 1, u)
            kids: list[tuple[int, int]] = []
            i += 1
            while True:
                i = b.ws(i)
                if c == "{":
                    _, kend = scanstring(text, i + 1)
                    key, k = (i, kend), text[i + 1 : kend - 1]
                    colon = b.ws(kend)
                    if message and k != "content":  # a message's role and the like belong to its skeleton
                        i, child = value(colon + 1, u, [key, (colon, colon + 1)], into=u)
                    else:
                        is_messages = chat == "messages" and parent == -1 and k == "messages"
                        i, child = value(
                            colon + 1, u, [key, (colon, colon + 1)], into=into,
                            compressible=message, messages=is_messages,
                        )  # fmt: skip
                else:
                    i, child = value(i, u, [], into=into, message=messages)
                i = b.ws(i)
                if text[i] == ",":
                    kids.append((child, b.word(i, i + 1, -1, charge=child)))
                    i += 1
                else:
                    kids.append((child, -1))
                    b.word(i, i + 1, u)
                    i += 1
                    break
            if into is None:
                b.siblings.append(kids)
            else:  # all one unit: every comma goes with it
                for _, comma in kids:
                    if comma >= 0:
                        b.unit[comma] = into
            return i, u
        if c == '"':
            _, end = scanstring(text, i + 1)
            runs = [m.span() for m in re.finditer(r"\S+", text[i + 1 : end - 1])]
            if into is not None or len(runs) < (2 if compressible else LONG_STRING):
                u = b.new_unit(parent, True, into)
                for s, e in pending:
                    b.word(s, e, u)
                b.word(i, end, u)
                return end, u
            u = b.new_unit(parent, False, into)
            for s, e in pending:
                b.word(s, e, u)
            b.word(i, i + 1, u)
            for s, e in runs:
                b.word(i + 1 + s, i + 1 + e, b.new_unit(u, True, None))
            b.word(end - 1, end, u)
            return end, u
        m = _NUMBER.match(text, i) or _LITERAL.match(text, i)
        if m is None:
            raise ValueError(f"unexpected JSON at character {i}")
        u = b.new_unit(parent, True, into)
        for s, e in pending:
            b.word(s, e, u)
        b.word(m.start(), m.end(), u)
        return m.end(), u

    value(0, -1, [], messages=chat == "root")
    words = np.array(b.words, dtype=np.int64).reshape(-1, 2)
    unit = np.array(b.unit, dtype=np.int64)
    # commas that belong to a unit-wide container were reassigned; keep their charge consistent
    charge = np.where(unit >= 0, unit, np.array(b.charge, dtype=np.int64))
    return Layout(
        text, "chat" if chat else "json", words, unit, charge,
        np.array(b.parent, dtype=np.int64), np.array(b.selectable, dtype=bool), siblings=b.siblings,
    )  # fmt: skip


# -- Markdown -----------------------------------------------------------------------------------------------------


def _markdown_layout(text: str) -> Layout:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    structural = {"fence", "table_open", "heading_open", "list_item_open"}
    if not any(t.type in structural for t in tokens):
        return prose_layout(text)
    words = segment(text)
    n = len(words)
    starts = np.array([0] + [m.end() for m in re.finditer("\n", text)], dtype=np.int64)
    line = np.searchsorted(starts, words[:, 0], side="right") - 1  # (n,) line of each word

    def on_lines(a: int, b: int) -> np.ndarray:
        return np.flatnonzero((line >= a) & (line < b))

    key: list[tuple | None] = [None] * n  # the group a word belongs to (None: a unit of its own)
    container = np.full(n, -1, dtype=np.int64)  # innermost list item holding the word (its number)
    items: list[int] = []  # the marker word of each list item
    item_parent: list[int] = []  # the enclosing list item of each, or -1
    heading_of = np.full(n, -1, dtype=np.int64)  # the heading whose marker a word's unit hangs from
    fence_lines: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for t in tokens:
        if t.map is None:
            continue
        a, b = t.map
        ws = on_lines(a, b)
        if len(ws) == 0:
            continue
        if t.type == "list_item_open":
            marker = t.info + t.markup if t.markup in (".", ")") else t.markup
            first = ws[0]
            if text[words[first, 0] : words[first, 1]] != marker:
                continue
            items.append(first)
            item_parent.append(int(container[first]))
            container[ws] = len(items) - 1
            key[first] = ("item", len(items) - 1)
        elif t.type == "fence":
            for w in ws:
                key[w] = ("fence", a)
            last = on_lines(b - 1, b) if b - 1 > a else ws[:0]
            closed = len(last) == 1 and text[words[last[0], 0] : words[last[0], 1]].startswith(t.markup)
            fence_lines[("fence", a)] = (on_lines(a, a + 1), last if closed else ws[:0])
        elif t.type == "table_open":
            for w in on_lines(a, a + 2):
                key[w] = ("thead", a)
            for r in range(a + 2, b):
                for w in on_lines(r, r + 1):
                    key[w] = ("row", a, r)
        elif t.type == "heading_open":
            if not t.markup.startswith("#"):  # setext: the text and its underline, whole
                for w in ws:
                    key[w] = ("setext", a)
                continue
            if text[words[ws[0], 0] : words[ws[0], 1]] != t.markup:
                continue
            key[ws[0]] = ("heading", a)
            for w in ws[1:]:
                if key[w] is None:
                    heading_of[w] = a

    unit = np.empty(n, dtype=np.int64)
    parent: list[int] = []
    selectable: list[bool] = []
    unit_of: dict[tuple, int] = {}
    fences = {}

    def item_unit(i: int) -> int:
        return unit_of.get(("item", i), -1) if i >= 0 else -1  # -1: its marker became part of another element

    for w in range(n):
        k = key[w]
        if k is not None and k in unit_of:
            unit[w] = unit_of[k]
            continue
        if k is None:
            if heading_of[w] >= 0 and ("heading", int(heading_of[w])) in unit_of:
                par = unit_of[("heading", int(heading_of[w]))]
            else:
                par = item_unit(int(container[w]))
            sel = True
        elif k[0] == "item":
            par, sel = item_unit(item_parent[k[1]]), False
        elif k[0] == "row":
            par, sel = unit_of.get(("thead", k[1]), item_unit(int(container[w]))), True
        else:  # fence, setext, thead, heading
            par, sel = item_unit(int(container[w])), k[0] in ("fence", "setext")
        parent.append(par)
        selectable.append(sel)
        unit[w] = len(parent) - 1
        if k is not None:
            unit_of[k] = unit[w]
            if k in fence_lines:
                fences[int(unit[w])] = fence_lines[k]
    return Layout(
        text, "markdown", words, unit, unit.copy(), np.array(parent, dtype=np.int64),
        np.array(selectable, dtype=bool), fences=fences,
    )  # fmt: skip
