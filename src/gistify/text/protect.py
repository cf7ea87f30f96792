"""Protected content: character ranges that compression must keep verbatim.

The user gives spans (start, end) or regular expressions; options add numbers, negations (with the phrase
they negate) and identifiers, whose loss silently changes meaning ("do not delete", "3.5 mg", `max_retries`).
Every word that overlaps a protected range is kept, and the result checks that each range survived inside one
kept span.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

# with the suffixes the risk report's numbers take (gistify.text.meaning): "1960s", "5ms", "16GB", "2nd"
NUMBER = r"[-+−]?(?<![\w.])\d(?:[\d,.:/]*\d)?(?:%|st|nd|rd|th|[kKmMgG][bB]?|ms|s)?(?!\w)"
# "except" and "unless" turn their phrase around too: "delete every file except the logs"
NEGATION = r"(?i)\b(?:not|no|never|none|nobody|nothing|nowhere|neither|nor|without|except|unless|cannot|\w+n['’]t)\b"
# What `protect_negations` keeps: the negation with what it governs, so "do NOT delete the files" cannot come
# out as "NOT" or "do delete": an auxiliary just before it (do, is, can, should, ...), the negation, and up to
# NEGATED_WORDS words after it on the same line, stopping at punctuation ("isn't working", "never at night").
NEGATED_WORDS = 3
_AUXILIARY = (
    r"do|does|did|is|are|was|were|am|be|been|being|can|could|should|would|will|shall|must|may|might|have|has|had"
    r"|need|ought|to"
)
NEGATION_PHRASE = rf"(?i)(?:\b(?:{_AUXILIARY})[ \t]+)?{NEGATION[4:]}(?:[ \t]+[\w'’-]*\w){{0,{NEGATED_WORDS}}}"
# snake_case, dotted.names, camelCase / PascalCase with an inner capital, words mixing letters and digits,
# and calls such as f(x): the spellings that a model cannot rebuild from context.
IDENTIFIER = (
    r"\b(?:[A-Za-z_]\w*(?:[._]\w+)+|_\w+|[a-z]+[A-Z]\w*|[A-Z][a-z0-9]+[A-Z]\w*|[A-Za-z]+\d\w*"
    r"|\d+(?!(?:st|nd|rd|th)\b)[A-Za-z_]\w*)\b(?:\(\))?"
)

Protect = Iterable[str | tuple[int, int]]


def protected_ranges(
    text: str, protect: Protect = (), numbers: bool = False, negations: bool = False, identifiers: bool = False
) -> list[tuple[int, int]]:
    """Sorted [start, end) ranges to keep: given spans, matches of given patterns and of the options.

    Ranges are trimmed of surrounding whitespace (a whitespace-only match protects nothing). Raises
    ValueError for a span outside the text or a pattern that does not compile.
    """
    ranges: list[tuple[int, int]] = []
    patterns = [p for p, on in ((NUMBER, numbers), (NEGATION_PHRASE, negations), (IDENTIFIER, identifiers)) if on]
    for item in protect:
        if isinstance(item, str):
            patterns.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and all(isinstance(x, int) for x in item):
            s, e = item
            if not 0 <= s < e <= len(text):
                raise ValueError(f"protected span {item} is not inside the text (length {len(text)})")
            ranges.append((s, e))
        else:
            raise ValueError(f"protect takes regular expressions or (start, end) spans, got {item!r}")
    for p in patterns:
        try:
            rx = re.compile(p)
        except re.error as e:
            raise ValueError(f"protected pattern {p!r} is not a valid regular expression: {e}") from None
        ranges += [m.span() for m in rx.finditer(text) if m.end() > m.start()]
    trimmed = []
    for s, e in ranges:
        piece = text[s:e]
        s, e = s + len(piece) - len(piece.lstrip()), e - (len(piece) - len(piece.rstrip()))
        if e > s:
            trimmed.append((s, e))
    return sorted(set(trimmed))


def protected_words(ranges: list[tuple[int, int]], words: np.ndarray) -> np.ndarray:
    """(n_words,) bool: words overlapping any protected range."""
    mask = np.zeros(len(words), dtype=bool)
    for s, e in ranges:
        first = np.searchsorted(words[:, 1], s, side="right")  # first word ending after s
        last = np.searchsorted(words[:, 0], e, side="left")  # words starting before e
        mask[first:last] = True
    return mask


def missing(ranges: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Protected ranges that do not lie inside one kept span (empty when all survived verbatim)."""
    starts = np.array([s for s, _ in spans], dtype=np.int64)
    out = []
    for s, e in ranges:
        i = np.searchsorted(starts, s, side="right") - 1
        if i < 0 or spans[i][1] < e:
            out.append((s, e))
    return out
