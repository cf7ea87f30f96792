"""Words as units: what every text method shares around its score (segmentation, token costs, selection under a
budget, reassembly) and the Document a method reads.

A text method only says how much each word is worth (`TextMethod.score`, base.py). Everything else is here:
- the text is cut into words (runs of non-space characters; each CJK character is a word of its own), so
  nothing is ever split inside a word or a character;
- each word costs the target-tokenizer tokens that start in it or in the whitespace before it;
- words are kept by score, highest first, while they fit the budget, then put back in their original order
  with original whitespace (the largest whitespace run of a dropped gap, so paragraph breaks survive).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

_CJK = "\u2e80-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"
_WORD = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_WHITESPACE = re.compile(r"\s+")


def segment(text: str) -> np.ndarray:
    """(n_words, 2) int64 character spans [start, end) of the words of `text`."""
    spans = [m.span() for m in _WORD.finditer(text)]
    return np.array(spans, dtype=np.int64).reshape(-1, 2)


def token_to_word(token_starts: np.ndarray, words: np.ndarray) -> np.ndarray:
    """(n_tokens,) index of the word each token belongs to: the first word ending after the token's start
    (so a token made of a leading space and a word belongs to that word). Tokens after the last word get
    index n_words."""
    return np.searchsorted(words[:, 1], token_starts, side="right")


def per_word(values: np.ndarray, token_starts: np.ndarray, words: np.ndarray, how: str) -> np.ndarray:
    """Aggregate per-token `values` to per-word values with `how` in {"max", "mean", "sum"}.

    A word in which no token starts (a CJK character inside a multi-character token) takes the value of
    the token that covers it.
    """
    n = len(words)
    values = np.asarray(values, dtype=np.float64)
    idx = token_to_word(token_starts, words)
    ok = idx < n
    counts = np.bincount(idx[ok], minlength=n)
    if how == "max":
        out = np.full(n, -np.inf)
        np.maximum.at(out, idx[ok], values[ok])
    else:
        out = np.bincount(idx[ok], weights=values[ok], minlength=n)
        if how == "mean":
            out = out / np.maximum(counts, 1)
    empty = counts == 0
    if empty.any():
        covering = np.searchsorted(token_starts, words[empty, 0], side="right") - 1
        out[empty] = values[np.clip(covering, 0, len(values) - 1)] if len(values) else 0.0
    return out


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


def sentence_ids(text: str, words: np.ndarray) -> np.ndarray:
    """(n_words,) int64: the sentence each word belongs to. A sentence ends after a word ending in . ! or ?
    (closing quotes and brackets allowed) and at every line break, so a line of a list or a table is its own
    sentence. Abbreviations ("e.g.") end a sentence too: sentences here only group words, they are not parsed."""
    n = len(words)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.zeros(n, dtype=bool)
    for i in range(1, n):
        gap = text[words[i - 1, 1] : words[i, 0]]
        starts[i] = "\n" in gap or bool(_SENTENCE_END.search(text[words[i - 1, 0] : words[i - 1, 1]]))
    return np.cumsum(starts).astype(np.int64)


def word_costs(token_starts: np.ndarray, words: np.ndarray) -> np.ndarray:
    """(n_words,) int64: how many target tokens each word costs."""
    idx = token_to_word(token_starts, words)
    return np.bincount(idx[idx < len(words)], minlength=len(words)).astype(np.int64)


def select(
    scores: np.ndarray, costs: np.ndarray, target: int, protected: np.ndarray, fill_gaps: bool = True
) -> np.ndarray:
    """(n_words,) bool: protected words, then the best-scoring words while their cost fits `target`.

    With `fill_gaps`, a word that does not fit is skipped and smaller ones after it are still tried (a
    greedy knapsack, so the budget is met closely); without it, selection stops at the first word that does
    not fit (truncation must stay contiguous). Words scored -inf are never chosen.
    """
    keep = protected.copy()
    used = int(costs[keep].sum())
    for i in np.argsort(-scores, kind="stable"):
        if keep[i]:
            continue
        if not np.isfinite(scores[i]) and scores[i] < 0:
            break
        if used + costs[i] <= target:
            keep[i] = True
            used += int(costs[i])
        elif not fill_gaps:
            break
    return keep


def _separator(gap: str) -> str:
    """The original whitespace to put where dropped words were: the run with the most line breaks, the
    last such run on a tie, so that paragraph and line breaks survive and a plain gap stays one space."""
    runs = _WHITESPACE.findall(gap)
    if not runs:
        return ""
    return max(reversed(runs), key=lambda r: r.count("\n"))


def assemble(
    text: str, words: np.ndarray, keep: np.ndarray, cut: int | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The compressed text and its kept spans, as [start, end) character offsets into `text`.

    Adjacent kept words form one span, with the original whitespace between them; `cut`, a word whose span in
    `words` was shortened (its head kept), ends its span, so the rest of the word is not brought back.
    """
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return "", []
    gap = np.diff(idx) > 1
    if cut is not None:
        gap |= idx[:-1] == cut
    breaks = np.flatnonzero(gap)
    firsts = np.concatenate([[idx[0]], idx[breaks + 1]])
    lasts = np.concatenate([idx[breaks], [idx[-1]]])
    spans = [(int(words[a, 0]), int(words[b, 1])) for a, b in zip(firsts, lasts)]
    pieces = [text[spans[0][0] : spans[0][1]]]
    for (_, prev_end), (s, e) in zip(spans, spans[1:]):
        pieces.append(_separator(text[prev_end:s]))
        pieces.append(text[s:e])
    return "".join(pieces), spans


@dataclass
class Document:
    """What a text method may read: the text, its words, the question, and (lazily) the scorer's token
    statistics, computed once per text and shared by every method that asks."""

    text: str
    words: np.ndarray  # (n_words, 2)
    question: str | None = None
    scorer: object | None = None  # gistify.text.scorer.Scorer, when the method needs one
    progress: bool = False
    share: float | None = None  # the budget's share of the text's tokens (target / tokens_in), if there is one
    notes: list[str] = field(default_factory=list)  # what the method tells the result (Compressed.notes)
    _stats: dict = field(default_factory=dict, repr=False)

    def stats(self, layer: int = 2, fast: bool | str = False):
        """The scorer's TokenStats of the text (`fast`: from the scorer's fast path, gistify.text.fast)."""
        if self.scorer is None:
            raise ValueError("this method needs a scorer model")
        if (layer, fast) not in self._stats:
            self._stats[layer, fast] = self.scorer.stats(self.text, layer=layer, progress=self.progress, fast=fast)
        return self._stats[layer, fast]

    def per_word(self, token_values: np.ndarray, how: str) -> np.ndarray:
        """Token values combined per word ("max", "mean" or "sum"); the tokens are those of any stats read."""
        starts = next(iter(self._stats.values())).starts if self._stats else self.stats().starts
        return per_word(np.asarray(token_values), starts, self.words, how)
