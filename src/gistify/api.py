"""`gistify.compress`: any method that compresses text, behind one call.

The method object decides how it compresses (`Method.compress`): the text family runs its word pipeline, vist
reads the distant part as images. This function only resolves the method and sorts the keyword arguments into
the method's hyperparameters (its dataclass fields) and the options its class declares (`Method.options`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gistify.method import REGISTRY, Method, get_method, method_class
from gistify.result import Compressed
from gistify.text import DEFAULT_METHOD


def compressor_class(method: str | Method) -> type[Method]:
    """The class of a method that `compress` takes, or a ValueError listing those that compress text."""
    if isinstance(method, Method):
        return type(method)
    try:
        return method_class(method)
    except ValueError:
        known = ", ".join(i for i, c in REGISTRY.items_by_id() if c.compress is not Method.compress)
        raise ValueError(f"unknown method {method!r}; methods that compress text: {known}") from None


def compress(
    text: str,
    question: str | None = None,
    *,
    keep: float | None = None,
    tokens: int | None = None,
    method: str | Method = DEFAULT_METHOD,
    **kwargs: Any,
) -> Compressed:
    """Compress `text` for `question` to a budget of `keep` (fraction of tokens) or `tokens` (count).

    Args:
        method: a method name (see `gistify.methods("text")`; "vist" reads the distant part as images) or a
            method instance.
        kwargs: the method's hyperparameters (e.g. `side="tail"` for truncate), and the options its family
            declares in `options`: for text methods `scorer`, `model`, `tokenizer`, `protect`, `protect_*`,
            `structure`, `fallback`, ... (`TextMethod.options`; see `gistify.text.pipeline.compress_text`).
    """
    cls = compressor_class(method)
    fields = {f.name for f in dataclasses.fields(cls)}
    params = {k: v for k, v in kwargs.items() if k in fields}
    options = {k: v for k, v in kwargs.items() if k not in fields}
    m = get_method(method, **params)
    if type(m).compress is Method.compress:  # not a text-compressing family: its own error says what to use
        return m.compress(text, question, keep=keep, tokens=tokens)
    unknown = sorted(set(options) - set(m.options))
    if unknown:
        its = ", ".join(sorted(fields)) or "none"
        opts = f"; its options: {', '.join(m.options)}" if m.options else ""
        raise ValueError(f"method {m.name!r} has no parameter {', '.join(unknown)}; its parameters: {its}{opts}")
    return m.compress(text, question, keep=keep, tokens=tokens, **options)
