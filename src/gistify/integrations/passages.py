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

import dataclasses
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from gistify.text.options import TextOptions
from gistify.text.tokens import TokenCounter, counter

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
    joint: bool = True,
    scorer: Any = None,
    options: TextOptions | None = None,
    **kwargs: Any,
) -> list[Passage]:
    """The passages compressed for `question`, in the same order (an empty passage stays empty). The budget,
    method and options are `options`, or keywords as `gistify.compress` takes them (`keep=0.3`, `tokens=300`,
    `method=...`, `tokenizer=...`, the method's fields, the pipeline's options: TextOptions)."""
    import gistify

    opts = options or TextOptions.from_kwargs(**kwargs)
    keep, tokens, method = opts.keep, opts.tokens, opts.method
    budget = str(gistify.Budget(keep=keep, tokens=tokens))
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"passage {i} is not text (got {type(t).__name__})")
    kw = opts.compress_kwargs(scorer)
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
    # each passage counted on its own with the tokenizer of the budget (the scorer compress loaded, if none given)
    if scorer is None and opts.tokenizer == "scorer":
        from gistify.text.pipeline import shared_scorer

        scorer = shared_scorer(opts.model)
    count = counter(opts.tokenizer, scorer)
    out = []
    for t, o in zip(texts, starts):
        spans = [(max(s, o) - o, min(e, o + len(t)) - o) for s, e in r.kept_spans if s < o + len(t) and e > o]
        spans = [(s, e) for s, e in spans if t[s:e].strip()]
        text = _join(t, spans)
        out.append(Passage(text, _count(t, count), _count(text, count), spans, budget, r.method))
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


def _count(text: str, count: TokenCounter) -> int:
    return count.count(text) if text.strip() else 0


@cache
def options_model(cls: type = TextOptions) -> type:
    """A pydantic model with a field for each TextOptions field (its default and help) and the wrappers' own
    (`joint`, `keep_empty`, `scorer`): the base of the LangChain and LlamaIndex wrappers (both are pydantic
    models), so that they take every option by its name. Values are checked by TextOptions itself (`options`)."""
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model

    class Wrapper(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)

        joint: bool = Field(default=True, description="one budget for all the passages (False: each its own)")
        keep_empty: bool = Field(default=False, description="keep a passage the budget took everything from")
        scorer: Any = Field(default=None, exclude=True, description="a loaded gistify.Scorer to share")
        _loaded: Any = PrivateAttr(default=None)

    option_fields = {}
    for f in dataclasses.fields(cls):
        default = {"default_factory": f.default_factory} if f.default is dataclasses.MISSING else {"default": f.default}
        option_fields[f.name] = (Any, Field(description=f.metadata["help"], **default))
    return create_model("GistifyOptions", __base__=Wrapper, **option_fields)


class PassageCompression:
    """What both framework wrappers share, as a mixin of their pydantic models (whose fields `options_model`
    declares)."""

    def model_post_init(self, context: Any) -> None:
        self._validate()

    def options(self) -> TextOptions:
        """The wrapper's text options, each checked (a ValueError names the first that is wrong)."""
        return TextOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TextOptions)})

    def _validate(self) -> None:
        from gistify.budget import Budget

        options = self.options()
        Budget(keep=options.keep, tokens=options.tokens)  # a bad budget fails here, not at the first query
        options.check_method()

    def _scorer(self):
        if self.scorer is not None:
            return self.scorer
        if self._loaded is None:
            import gistify

            self._loaded = gistify.Scorer.load(self.model)  # once per wrapper, not per query
        return self._loaded

    def _compress(self, texts: list[str], query: str | None) -> list:
        return compress_passages(texts, query, joint=self.joint, scorer=self._scorer(), options=self.options())
