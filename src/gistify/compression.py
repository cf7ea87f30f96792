"""`gistify.compress`: shrink a text for a question under a token budget, with any text method."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

import numpy as np

from gistify import tokens as tok
from gistify.budget import Budget
from gistify.method import Method, get_method
from gistify.protect import Protect, missing, protected_ranges, protected_words
from gistify.result import Compressed
from gistify.scorer import Scorer
from gistify.text.base import Document, TextMethod, assemble, segment, select, word_costs

_MAX_RECOUNTS = 64


@lru_cache(maxsize=4)
def _shared_scorer(model: str | None) -> Scorer:
    return Scorer.load(model)


def check_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TypeError(f"the text to compress must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("the text to compress is empty (or only whitespace)")
    return text


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


def compress(
    text: str,
    question: str | None = None,
    *,
    keep: float | None = None,
    tokens: int | None = None,
    method: str | TextMethod = "reinforce",
    scorer: Scorer | None = None,
    model: str | None = None,
    tokenizer: Any = "scorer",
    protect: Protect = (),
    protect_numbers: bool = False,
    protect_negations: bool = False,
    protect_identifiers: bool = False,
    progress: bool = False,
    **params: Any,
) -> Compressed:
    """Compress `text` for `question` to a budget of `keep` (fraction of tokens) or `tokens` (count).

    Args:
        method: a text method name (see `gistify.methods("text")`) or instance; `params` set its fields.
        scorer: the scoring LM (default: the embedded SmolLM2, or `model`, a name, path or hub id).
        tokenizer: how tokens are counted for the budget and the result: "scorer", "cl100k_base",
            "o200k_base", or a Hugging Face tokenizer.
        protect: regular expressions or (start, end) spans that are always kept verbatim;
            `protect_numbers`, `protect_negations`, `protect_identifiers` add common ones.
        progress: draw a progress bar on stderr for long inputs.
    """
    if isinstance(method, Method) and method.name == "vist":
        method, params = "vist", {**method.params(), **params}
    if method == "vist":  # not a text method: the distant part is read as images (gistify/vist/model.py)
        from gistify.vist.model import compress as vist_compress

        return vist_compress(text, question, keep=keep, tokens=tokens, model=model, tokenizer=tokenizer, scorer=scorer,
                             protect=protect, protect_numbers=protect_numbers, protect_negations=protect_negations,
                             protect_identifiers=protect_identifiers, **params)  # fmt: skip
    text = check_text(text)
    budget = Budget(keep=keep, tokens=tokens)
    m = get_method(method, kind="text", **params)
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
