"""The text family's compress pipeline: shrink a text for a question under a token budget, with any text method.

segment into words -> count target-tokenizer tokens (each word's cost) -> protected spans -> the method's score
per word -> select the best words within the budget -> reassemble in order -> fit to the real token count.
`TextMethod.compress` runs it; `gistify.compress` reaches it through the method object.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from gistify.budget import Budget
from gistify.method import check_text
from gistify.result import Compressed
from gistify.text import tokens as tok
from gistify.text.protect import Protect, missing, protected_ranges, protected_words
from gistify.text.scorer import Scorer
from gistify.text.words import Document, assemble, segment, select, word_costs

if TYPE_CHECKING:
    from gistify.text.base import TextMethod

_MAX_RECOUNTS = 64


@lru_cache(maxsize=4)
def _shared_scorer(model: str | None) -> Scorer:
    return Scorer.load(model)


def _counter(tokenizer: Any, scorer: Scorer | None) -> tok.TokenCounter:
    if isinstance(tokenizer, tok.TokenCounter):
        return tokenizer
    if tokenizer == "scorer":
        return tok.from_hf(scorer.tokenizer, scorer.name)
    if tokenizer in tok.OPENAI_ENCODINGS:
        return tok.openai(tokenizer)
    if isinstance(tokenizer, str):
        known = ", ".join(map(repr, tok.OPENAI_ENCODINGS))
        raise ValueError(f"unknown tokenizer {tokenizer!r}; use 'scorer', {known}, or a tokenizer object")
    return tok.from_hf(tokenizer)


def compress_text(
    m: TextMethod,
    text: str,
    question: str | None = None,
    *,
    keep: float | None = None,
    tokens: int | None = None,
    scorer: Scorer | None = None,
    model: str | None = None,
    tokenizer: Any = "scorer",
    protect: Protect = (),
    protect_numbers: bool = False,
    protect_negations: bool = False,
    protect_identifiers: bool = False,
    progress: bool = False,
) -> Compressed:
    """Compress `text` for `question` with the text method `m` to `keep` (fraction of tokens) or `tokens` (count).

    Args:
        scorer: the scoring LM (default: the embedded SmolLM2, or `model`, a name, path or hub id).
        tokenizer: how tokens are counted for the budget and the result: "scorer", "cl100k_base",
            "o200k_base", or a Hugging Face tokenizer.
        protect: regular expressions or (start, end) spans that are always kept verbatim;
            `protect_numbers`, `protect_negations`, `protect_identifiers` add common ones.
        progress: draw a progress bar on stderr for long inputs.
    """
    text = check_text(text)
    budget = Budget(keep=keep, tokens=tokens)
    if scorer is not None and model is not None:
        raise ValueError("give either `scorer` or `model`, not both")
    if scorer is None and (m.needs_scorer or tokenizer == "scorer"):
        scorer = _shared_scorer(model)
    counter = _counter(tokenizer, scorer)

    t0 = time.perf_counter()
    words = segment(text)
    tokens_in = counter.count(text)
    target = budget.target(tokens_in)
    ranges = protected_ranges(text, protect, protect_numbers, protect_negations, protect_identifiers)
    result = dict(
        source=text,
        tokens_in=tokens_in,
        target_tokens=target,
        budget=str(budget),
        method=m.name,
        params=m.params(),
        tokenizer=counter.name,
        protected=ranges,
    )
    if target >= tokens_in:
        notes = (
            []
            if budget.keep == 1
            else [f"the budget ({budget}) is not below the text's {tokens_in} tokens: returned unchanged"]
        )
        return Compressed(
            text=text,
            kept_spans=[(0, len(text))],
            tokens_out=tokens_in,
            seconds=time.perf_counter() - t0,
            notes=notes,
            **result,
        )

    scores = np.asarray(m.score(Document(text, words, question, scorer, progress)), dtype=np.float64)
    if scores.shape != (len(words),) or np.isnan(scores).any():
        raise RuntimeError(f"{m.name}.score returned shape {scores.shape} or NaN; expected ({len(words)},) numbers")
    costs = word_costs(counter.starts(text), words)
    protected = protected_words(ranges, words)
    notes = []
    if costs[protected].sum() > target:
        taken = int(costs[protected].sum())
        notes.append(f"protected content alone takes {taken} tokens, over the budget of {target}: all of it was kept")
    keep_mask = select(scores, costs, target, protected, m.fill_gaps)
    out, spans, n_out = _fit(text, words, keep_mask, scores, costs, protected, target, counter, m.fill_gaps)

    lost = missing(ranges, spans)
    if lost:  # cannot happen by construction; a loud failure beats a silently changed meaning
        raise RuntimeError(f"protected text was not kept verbatim: {[text[s:e] for s, e in lost]}")
    return Compressed(
        text=out, kept_spans=spans, tokens_out=n_out, seconds=time.perf_counter() - t0, notes=notes, **result
    )


def _fit(text, words, keep, scores, costs, protected, target, counter, fill_gaps):
    """Adjust a selection to the real token count of the reassembled text.

    Word costs come from tokenizing the whole text; joined differently, the words can tokenize a little
    differently. Drop the lowest-scoring kept words while over the budget, then (for gap-filling methods)
    add the best words that still fit while more than one token under it.
    """
    keep = keep.copy()
    out, spans = assemble(text, words, keep)
    n = counter.count(out)
    for _ in range(_MAX_RECOUNTS):
        if n <= target:
            break
        droppable = np.flatnonzero(keep & ~protected)
        if len(droppable) == 0:
            break
        order = droppable[np.argsort(scores[droppable], kind="stable")]
        cut = np.searchsorted(np.cumsum(costs[order]), n - target) + 1  # enough estimated cost to go under
        keep[order[:cut]] = False
        out, spans = assemble(text, words, keep)
        n = counter.count(out)
    if fill_gaps:
        tries = 0
        for i in np.argsort(-scores, kind="stable"):
            if n >= target - 1 or tries >= _MAX_RECOUNTS:
                break
            if keep[i] or costs[i] > target - n or not np.isfinite(scores[i]):
                continue
            keep[i] = True
            tries += 1
            cand, cand_spans = assemble(text, words, keep)
            c = counter.count(cand)
            if c <= target:
                out, spans, n = cand, cand_spans, c
            else:
                keep[i] = False
    return out, spans, n
