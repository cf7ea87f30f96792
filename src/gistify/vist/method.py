"""vist behind the common interface: its hyperparameters as a Method dataclass, so that `gistify.methods()` and
`gistify methods` list it and `gistify.compress(text, method="vist")` or `method=Vist(...)` runs it. The work is
done by gistify.vist.compress (loaded only when used: listing the methods does not load the model code)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from gistify.method import Method

if TYPE_CHECKING:
    from gistify.vist.compress import VistCompressed


@dataclass
class Vist(Method):
    """vist: the distant text read as images (PP-OCRv6, Perceiver resampler, cross-attention), the rest as text.

    Args:
        proximal_tokens: the last tokens kept as text when no budget is given (None: the trained window).
        weights: a vist.safetensors written by gistify_bench.train.vist (None: the shipped weights).
    """

    name: ClassVar[str] = "vist"
    kind: ClassVar[str] = "rendered"  # reads text as images: neither a text nor a visual-token method
    # It drops nothing (the distant part is read as images), so the text family's protection, scorer and target
    # tokenizer do not apply: `model` is a VistModel, and tokens are counted with its LLM's tokenizer.
    options: ClassVar[tuple[str, ...]] = ("model", "tokenizer")

    proximal_tokens: int | None = None
    weights: str | None = None

    def __post_init__(self):
        self._check_int("proximal_tokens", 0, optional=True)

    def compress(
        self, text: str, question: str | None = None, *, keep: float | None = None, tokens: int | None = None, **options
    ) -> VistCompressed:
        """The last tokens of `text` as text, the rest read as images (see gistify.vist.compress.compress)."""
        from gistify.vist.compress import compress  # torch and the model code, only when vist is used

        return compress(text, question, keep=keep, tokens=tokens, proximal_tokens=self.proximal_tokens,
                        weights=self.weights, **options)  # fmt: skip
