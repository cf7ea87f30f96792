"""The fidelity guard: what a compressed text lost of the items whose loss changes meaning.

`risk(source, output)` is a pure function of two strings, so it reports on any compressor's output. It finds
four kinds of items in the source (docs/methods.md §1.5):

- numbers: `protect.NUMBER` (3, 3.5, 1,000, 12:30, 5%, 2nd);
- negations: `protect.NEGATION`, the negating word alone (not, never, no, without, isn't, ...);
- identifiers: `protect.IDENTIFIER` (snake_case, dotted.names, camelCase, f(), x86), URLs and paths;
- named entities, a heuristic with no model: runs of capitalised words ("Paris", not "NASA" or "NOT")
  joined by spaces (with "of", "de", "van", "von", "and" inside), kept when the run has two or more words,
  or one word that is not the first of a sentence (after . ! ? : ; a line break or the text's start); a
  leading "The", "A", "In" ... is not part of the run. "Paris" mid-sentence and "New York" count; "However"
  at a sentence start does not. Items that are also numbers or identifiers count once, as those.

An item is lost as many times as the output holds fewer occurrences of its exact text than the source (a
word-bounded match, counted over the whole text): a number dropped in one place and kept in another is one
loss. The score is the weighted share of occurrences lost, weights `WEIGHTS` (entities count half: the
heuristic is the noisiest), in [0, 1]; 0 when the source holds no such item.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import Counter

from gistify.text.protect import IDENTIFIER, NEGATION, NUMBER

KINDS = ("numbers", "negations", "entities", "identifiers")
WEIGHTS = {"numbers": 1.0, "negations": 1.0, "entities": 0.5, "identifiers": 1.0}
MAX_ITEMS = 50  # lost items listed in a report (the counts cover all)

_URL = re.compile(r"\b(?:https?|ftp)://[^\s<>\"'`]+[^\s<>\"'`.,;:!?)\]}]")
_PATH = re.compile(r"(?<![\w/.])(?:~|\.{1,2})?/(?:[\w.-]+/)*[\w.-]*\w")
_CAP = r"[A-Z](?:['’][A-Z])?[a-z][\w'’-]*"
_JOIN = r"(?:of|de|del|der|la|le|van|von|and|the|du|da|di)"
_ENTITY = re.compile(rf"(?<![\w-])(?:{_CAP})(?:[ ](?:{_JOIN}[ ])?(?:{_CAP}))*(?![\w-])")
_LEADING = {
    "The", "A", "An", "In", "On", "At", "For", "From", "By", "This", "That", "These", "Those", "It", "Its",
    "He", "She", "They", "We", "I", "You", "But", "And", "Or", "If", "When", "While", "As", "After", "Before",
    "Since", "Because", "However", "Although", "Also", "Then", "There", "Here", "Some", "Many", "Most", "All",
    "Each", "Every", "His", "Her", "Their", "Our", "My", "Your", "To", "With", "Of", "Not", "No",
}  # fmt: skip


def _spans(rx: re.Pattern | str, text: str) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(rx, text) if m.end() > m.start()]


class _Taken:
    """Does a span overlap any of a set of spans? O(log n) per question."""

    def __init__(self, spans: list[tuple[int, int]]):
        spans = sorted(spans)
        self.starts = [s for s, _ in spans]
        self.reach, top = [], -1
        for _, e in spans:
            top = max(top, e)
            self.reach.append(top)  # the furthest end among the spans that start up to here

    def overlaps(self, s: int, e: int) -> bool:
        i = bisect_left(self.starts, e)
        return i > 0 and self.reach[i - 1] > s


def _sentence_start(text: str, s: int) -> bool:
    """Whether the word at `s` opens a sentence: the text's start, a line break, or after . ! ? : ;"""
    j = s
    while j > 0 and text[j - 1].isspace():
        if text[j - 1] == "\n":
            return True
        j -= 1
    while j > 0 and text[j - 1] in "'\"’”)]":
        j -= 1
    return j == 0 or text[j - 1] in ".!?:;"


def items(text: str) -> dict[str, list[str]]:
    """The items of each kind in `text`, one entry per occurrence, in order."""
    urls = sorted(set(_spans(_URL, text) + _spans(_PATH, text)))
    in_url = _Taken(urls)
    ident = sorted(urls + [sp for sp in _spans(IDENTIFIER, text) if not in_url.overlaps(*sp)])
    in_ident = _Taken(ident)
    numbers = [sp for sp in _spans(NUMBER, text) if not in_ident.overlaps(*sp)]
    # a sign glued to a word is a hyphen: "58" of "BLUE-HERON-58", not "-58" (which no count would find again)
    numbers = [(s + 1, e) if s and text[s] in "-+−" and (text[s - 1].isalnum() or text[s - 1] == "_") else (s, e)
               for s, e in numbers]  # fmt: skip
    in_either = _Taken(ident + numbers)
    entities = []
    for m in _ENTITY.finditer(text):
        s, e = m.span()
        words = m.group().split(" ")
        while words and words[0] in _LEADING:
            s += len(words[0]) + 1
            words = words[1:]
        if not words or s >= e:
            continue
        if len(words) == 1:
            w = words[0]
            at_start = s == m.start() and _sentence_start(text, s)
            if at_start or w in _LEADING:
                continue  # a sentence's first word
        if in_either.overlaps(s, e):
            continue
        entities.append((s, e))
    return {
        "numbers": [text[s:e] for s, e in numbers],
        "negations": [text[s:e] for s, e in _spans(NEGATION, text)],
        "entities": [text[s:e] for s, e in entities],
        "identifiers": [text[s:e] for s, e in ident],
    }


def _count(item: str, text: str, number: bool) -> int:
    """Occurrences of `item` in `text` that are not part of a longer word (or number)."""
    n, i = 0, text.find(item)
    while i >= 0:
        j = i + len(item)
        before = text[i - 1] if i else " "
        after = text[j : j + 2]
        ok = not (before.isalnum() or before == "_") and not (after[:1].isalnum() or after[:1] == "_")
        if number:
            ok = ok and before not in ".," and not re.match(r"[.,:/]\d", after)
        n += ok
        i = text.find(item, i + 1)
    return n


def risk(source: str, output: str) -> dict:
    """The risk report of `output` as a compression of `source`.

    Returns a dict:
        score: the weighted share of the source's item occurrences that the output lost, 0 (none) to 1 (all);
        counts: per kind, occurrences in the source; lost_counts: per kind, occurrences lost;
        n_total, n_lost: the same, over all kinds;
        lost: per kind, the distinct items with an occurrence lost, in order of first appearance;
        items: up to MAX_ITEMS of them as {kind, text, lost, total} (occurrences lost, in the source).
    """
    found = items(source)
    same = output == source
    counts, lost_counts, lost, listed, num, den = {}, {}, {}, [], 0.0, 0.0
    for kind in KINDS:
        occurrences = Counter(found[kind])
        lost[kind] = []
        for item, total in occurrences.items():  # insertion order: first appearance
            kept = total if same else min(total, _count(item, output, kind == "numbers"))
            if kept < total:
                lost[kind].append(item)
                listed.append({"kind": kind, "text": item, "lost": total - kept, "total": total})
        counts[kind] = sum(occurrences.values())
        lost_counts[kind] = sum(x["lost"] for x in listed if x["kind"] == kind)
        num += WEIGHTS[kind] * lost_counts[kind]
        den += WEIGHTS[kind] * counts[kind]
    return {
        "score": round(num / den, 4) if den else 0.0,
        "n_total": sum(counts.values()),
        "n_lost": sum(lost_counts.values()),
        "counts": counts,
        "lost_counts": lost_counts,
        "lost": lost,
        "items": listed[:MAX_ITEMS],
    }


def summary(report: dict) -> str:
    """One line: "lost 3 of 41 items (1/4 numbers, 2/30 entities; risk 0.07)"."""
    parts = [f"{report['lost_counts'][k]}/{n} {k}" for k, n in report["counts"].items() if n]
    what = ", ".join(parts) if parts else "no numbers, negations, entities or identifiers"
    return f"lost {report['n_lost']} of {report['n_total']} items ({what}; risk {report['score']:.2f})"
