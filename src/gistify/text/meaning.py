"""The meaning check: what a compressed text lost that can silently change its meaning.

Deleting words is safe for filler and dangerous for a few kinds of word: a dropped "not" whose clause was
kept inverts the clause ("the door is not locked" -> "the door is locked"); a dropped number whose label was
kept leaves a claim with a hole or, worse, lets the reader attach another number to it; an identifier or a
name the question asks about, once gone, cannot be rebuilt from context. `risk` finds these by aligning the
compressed words with the source's (deletion-based compressors keep a subsequence of the source words) and
looking at each critical word: kept, dropped with its neighbours (a whole clause gone: information lost, but
nothing false said), or dropped while its neighbours were kept (meaning changed).

It is a pure function of strings, with no model and no dependency beyond the standard library. It was the
proxy's own risk report (gistify/serve/fidelity.py); it lives in the library now, beside the risk score
(fidelity.py), so that the library's fallback can read a changed meaning and the proxy keeps no second report:
the proxy reads `meaning_changed` in the risk report of the library's result where the library puts it there.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections import defaultdict

# A token: a word with its inner apostrophes, dots, commas, colons, slashes and hyphens ("isn't", "3.5",
# "1,200", "12:30", "a.b.c", "ABC-123"), or one punctuation character.
_TOKEN = re.compile(r"\w+(?:['’.,:/\-]\w+)*|[^\w\s]")
_NUMBER = re.compile(r"[-+−]?\d(?:[\d,.:/]*\d)?(?:%|st|nd|rd|th|[kKmMgG][bB]?|ms|s)?")
# the negating words ("n't" endings are found apart); "except" and "unless" turn their phrase around too
_NEGATIONS = frozenset("not no never none nobody nothing nowhere neither nor without except unless cannot".split())
# snake_case, dotted.names, camelCase and PascalCase with an inner capital, letters mixed with digits.
_IDENTIFIER = re.compile(
    r"[A-Za-z_]\w*(?:[._:/\-]\w+)+|_\w+|[a-z]+[A-Z]\w*|[A-Z][a-z0-9]+[A-Z]\w*|[A-Za-z]+\d\w*|\d+[A-Za-z_]\w*"
)
_SENTENCE_END = frozenset(".!?:;\n")
_RUN, _CANDIDATES = 2, 16  # alignment: tokens that confirm a run's restart; occurrences tried
_NEIGHBOURS = 2  # words on each side of a critical word that tell "clause kept" from "clause dropped"

KINDS = ("numbers", "negations", "identifiers", "entities")
ONE = {"numbers": "number", "negations": "negation", "identifiers": "identifier", "entities": "entity"}


def _kind(tokens: list[str], i: int) -> str | None:
    """Which critical kind tokens[i] is, if any. Capitalised words count as names only mid-sentence (a
    sentence's first word is capitalised whatever it is); acronyms of two or more capitals count anywhere."""
    t = tokens[i]
    low = t.lower()
    if low in _NEGATIONS or low.endswith(("n't", "n’t")):
        return "negations"
    if _NUMBER.fullmatch(t):
        return "numbers"
    if _IDENTIFIER.fullmatch(t):
        return "identifiers"
    if t[0].isupper() and t.isalpha():
        if len(t) >= 2 and t.isupper():
            return "entities"
        if i > 0 and tokens[i - 1] not in _SENTENCE_END and not tokens[i - 1].startswith(('"', "'", "(")):
            return "entities"
    return None


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


def _kept(source: list[str], compressed: list[str]) -> list[bool]:
    """For each source token, whether the compressed text kept it.

    A deletion-based compressor keeps a subsequence of the source's tokens. Each compressed token can sit
    between its earliest place (a greedy forward match) and its latest (a greedy backward match) without
    making the rest unmatchable; within that range, where a kept run restarts after a gap, the place where
    the next compressed tokens follow is taken (the earliest may be a dropped copy of a common word such as
    "the"), else the earliest. Tokens the source does not have (a compressor's own separator) are skipped.
    Near-linear; an exact alignment with difflib takes minutes on a few thousand tokens.
    """
    where: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(source):
        where[t].append(i)
    earliest: list[tuple[int, int]] = []  # (compressed index, earliest source place)
    p = 0
    for j, t in enumerate(compressed):
        places = where.get(t, [])
        k = bisect_left(places, p)
        if k < len(places):
            earliest.append((j, places[k]))
            p = places[k] + 1
    latest = [0] * len(earliest)
    limit = len(source)
    for n in range(len(earliest) - 1, -1, -1):
        places = where[compressed[earliest[n][0]]]
        limit = latest[n] = places[bisect_left(places, limit) - 1]
    kept = [False] * len(source)
    p = 0
    for (j, first), last in zip(earliest, latest):
        places = where[compressed[j]]
        k = bisect_left(places, max(first, p))
        q = places[k]
        if q != p:  # a gap: prefer a place where the run continues
            follow = compressed[j + 1 : j + 1 + _RUN]
            for cand in places[k : k + _CANDIDATES]:
                if cand > last:
                    break
                if source[cand + 1 : cand + 1 + len(follow)] == follow:
                    q = cand
                    break
        kept[q] = True
        p = q + 1
    return kept


def _kept_in(source: str, spans: list[tuple[int, int]]) -> list[bool]:
    """For each source token, whether it lies inside one of the kept spans (sorted [start, end) offsets)."""
    ends = [e for _, e in spans]
    kept = []
    for m in _TOKEN.finditer(source):
        k = bisect_left(ends, m.end())  # the first span ending at or after the token's end
        kept.append(k < len(spans) and spans[k][0] <= m.start())
    return kept


def _neighbours(tokens: list[str], i: int) -> list[int]:
    """Indices of up to _NEIGHBOURS word tokens on each side of i, within i's sentence."""
    out = []
    for step in (-1, 1):
        j, found = i + step, 0
        while 0 <= j < len(tokens) and found < _NEIGHBOURS:
            if tokens[j] in _SENTENCE_END:
                break
            if tokens[j][0].isalnum():
                out.append(j)
                found += 1
            j += step
    return out


def _context(tokens: list[str], i: int, width: int = 4) -> str:
    left = " ".join(tokens[max(0, i - width) : i])
    right = " ".join(tokens[i + 1 : i + 1 + width])
    return f"{left} [{tokens[i]}] {right}".strip()


def risk(
    source: str, compressed: str, question: str | None = None, kept_spans: list[tuple[int, int]] | None = None
) -> dict:
    """What `compressed` lost of `source`'s numbers, negations, identifiers and names, and how risky that is.

    `kept_spans`, the [start, end) ranges of `source` that `compressed` kept (gistify's results carry them), make
    the report exact: without them, which source word each compressed word is must be guessed by alignment,
    and on a long text where a number or word recurs the guess can call a kept clause's number dropped.

    Returns a dict:
        lost: per kind, the distinct items of the source that appear nowhere in the compressed text
            (negations: one context per dropped occurrence);
        changed: the dropped critical words whose neighbours were kept, each {kind, text, context}: a
            negation dropped from a kept clause, a number dropped from its kept label, a name or identifier
            dropped from a kept phrase. These are the losses that can make the text say something false;
        question_lost: numbers, identifiers and names of `question` that the source has and the compressed
            text lost;
        counts: per kind, how many distinct items the source has;
        score: the share of the source's critical items lost entirely (negations counted per occurrence,
            the rest per distinct item), 0 (none) to 1 (all);
        meaning_changed: True when a negation or a number was dropped from a kept clause, or the question's
            items were lost (a name or identifier dropped from a kept phrase counts in `score` only: the
            text says less, not something false).
    """
    src, out = _tokens(source), _tokens(compressed)
    kept = _kept(src, out) if kept_spans is None else _kept_in(source, kept_spans)
    # with kept spans, a change also says where: its kept neighbours' [start, end), what a repair may drop
    where = [m.span() for m in _TOKEN.finditer(source)] if kept_spans is not None else None
    present = {t.lower() for t in out}
    kinds = [_kind(src, i) for i in range(len(src))]

    distinct: dict[str, set[str]] = {k: set() for k in KINDS}
    lost: dict[str, set[str] | list[str]] = {k: set() for k in KINDS}
    lost["negations"] = []
    changed = []
    for i, kind in enumerate(kinds):
        if kind is None:
            continue
        t = src[i]
        distinct[kind].add(t.lower() if kind == "negations" else t)
        if kept[i]:
            continue
        if kind == "negations":
            lost["negations"].append(_context(src, i))
            around = [j for j in _neighbours(src, i) if j > i]  # the clause a negation governs follows it
        else:
            if t.lower() not in present:
                lost[kind].add(t)
            around = _neighbours(src, i)
        if around and any(kept[j] for j in around) and not (kind != "negations" and t.lower() in present):
            change = {"kind": ONE[kind], "text": t, "context": _context(src, i)}
            if where is not None:
                change["kept_around"] = [where[j] for j in around if kept[j]]
            changed.append(change)

    question_lost = []
    if question:
        q = _tokens(question)
        source_items = {t.lower() for t, k in zip(src, kinds) if k and k != "negations"}
        for i in range(len(q)):
            k = _kind(q, i)
            if k and k != "negations" and q[i].lower() in source_items and q[i].lower() not in present:
                question_lost.append(q[i])
        question_lost = sorted(set(question_lost))

    # negations are counted per occurrence (the same "not" matters in every clause), the rest per distinct item
    n_negations = sum(1 for k in kinds if k == "negations")
    n_items = n_negations + sum(len(v) for k, v in distinct.items() if k != "negations")
    n_lost = sum(len(v) for v in lost.values())
    return {
        "lost": {k: sorted(v) if isinstance(v, set) else v for k, v in lost.items()},
        "changed": changed,
        "question_lost": question_lost,
        "counts": {k: len(v) for k, v in distinct.items()},
        "score": round(n_lost / n_items, 4) if n_items else 0.0,
        "meaning_changed": bool(question_lost or any(c["kind"] in ("negation", "number") for c in changed)),
    }
