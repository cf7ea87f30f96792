"""Compress a list of retrieved passages for a question, under one budget for all of them or one each.

What a framework integration needs, without the framework: the LangChain compressor and the LlamaIndex
postprocessor are thin wrappers around `compress_passages`.

One budget for all (`joint=True`, the default) is what a RAG prompt needs: the model reads the retrieved
passages together, so the budget is the whole context's, and a passage that does not bear on the question
should give up more than one that does. The passages are joined with a separator (a blank line) into one
text, compressed once, and the kept spans, character offsets into that text, are cut at the passage
boundaries and shifted to be offsets into each passage. Each passage's compressed text is its kept spans
joined by the whitespace the compressor itself would put there (a line break where one was dropped, else a
space), and its tokens are counted on their own with the same tokenizer; the sum over passages can differ
from the joint count by a token or so where a span was cut at a boundary.

With `joint=False` each passage is compressed on its own with the budget (`keep` of each, or `tokens` each).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gistify.text import DEFAULT_METHOD

SEPARATOR = "\n\n"
_WHITESPACE = re.compile(r"\s+")


@dataclass
class Passage:
    """One passage after compression; `kept_spans` are [start, end) offsets into the passage's own text."""

    text: str
    tokens_in: int
    tokens_out: int
    kept_spans: list[tuple[int, int]]
    budget: str
    method: str

    def metadata(self) -> dict[str, Any]:
        return {
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "kept_spans": [list(s) for s in self.kept_spans],
            "budget": self.budget,
            "method": self.method,
        }


def compress_passages(
    texts: list[str],
    question: str | None,
    *,
    keep: float | None = None,
    tokens: int | None = None,
    joint: bool = True,
    method: str = DEFAULT_METHOD,
    scorer: Any = None,
    tokenizer: str = "scorer",
    **params: Any,
) -> list[Passage]:
    """The passages compressed for `question`, in the same order (an empty passage stays empty)."""
    import gistify

    budget = str(gistify.Budget(keep=keep, tokens=tokens))
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"passage {i} is not text (got {type(t).__name__})")
    kw = dict(method=method, scorer=scorer, tokenizer=tokenizer, **params)
    if not joint:
        out = []
        for t in texts:
            if not t.strip():
                out.append(Passage("", 0, 0, [], budget, method))
                continue
            r = gistify.compress(t, question, keep=keep, tokens=tokens, **kw)
            out.append(Passage(r.text, r.tokens_in, r.tokens_out, list(r.kept_spans), r.budget, r.method))
        return out
    if not any(t.strip() for t in texts):
        return [Passage("", 0, 0, [], budget, method) for _ in texts]
    starts, pos = [], 0
    for t in texts:
        starts.append(pos)
        pos += len(t) + len(SEPARATOR)
    r = gistify.compress(SEPARATOR.join(texts), question, keep=keep, tokens=tokens, **kw)
    out = []
    for t, o in zip(texts, starts):
        spans = [(max(s, o) - o, min(e, o + len(t)) - o) for s, e in r.kept_spans if s < o + len(t) and e > o]
        spans = [(s, e) for s, e in spans if t[s:e].strip()]
        text = _join(t, spans)
        out.append(
            Passage(text, _count(t, scorer, tokenizer), _count(text, scorer, tokenizer), spans, budget, r.method)
        )
    return out


def _join(text: str, spans: list[tuple[int, int]]) -> str:
    """Kept spans joined by the whitespace run with the most line breaks from each dropped gap (a space when
    the gap has none), as gistify.compress joins them."""
    pieces = []
    for i, (s, e) in enumerate(spans):
        if i:
            runs = _WHITESPACE.findall(text[spans[i - 1][1] : s])
            pieces.append(max(reversed(runs), key=lambda r: r.count("\n")) if runs else "")
        pieces.append(text[s:e])
    return "".join(pieces)


def _count(text: str, scorer: Any, tokenizer: str) -> int:
    """Tokens of `text` with the tokenizer of the budget: gistify.compress at keep=1 counts and returns at
    once, without scoring."""
    import gistify

    if not text.strip():
        return 0
    return gistify.compress(text, keep=1.0, method="truncate", scorer=scorer, tokenizer=tokenizer).tokens_in


class PassageCompression:
    """What both framework wrappers share, as a mixin of their pydantic models (which declare the fields `keep`,
    `tokens`, `joint`, `method`, `params`, `model`, `tokenizer`, `scorer` and the private `_loaded`)."""

    def _validate(self) -> None:
        import gistify

        gistify.Budget(keep=self.keep, tokens=self.tokens)  # a bad budget fails here, not at the first query
        gistify.get_method(self.method, kind="text", **self.params)

    def _scorer(self):
        if self.scorer is not None:
            return self.scorer
        if self._loaded is None:
            import gistify

            self._loaded = gistify.Scorer.load(self.model)  # once per wrapper, not per query
        return self._loaded

    def _compress(self, texts: list[str], query: str | None) -> list:
        return compress_passages(
            texts, query, keep=self.keep, tokens=self.tokens, joint=self.joint, method=self.method,
            scorer=self._scorer(), tokenizer=self.tokenizer, **self.params,
        )  # fmt: skip
