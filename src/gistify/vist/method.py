"""vist behind the common interface: its hyperparameters as a Method dataclass, so that `gistify.methods()` and
`gistify methods` list it and `gistify.compress(text, method=Vist(...))` takes it. The work is done by
gistify.vist.model.compress (loaded only when used: `import gistify` stays light)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gistify.method import Method


@dataclass
class Vist(Method):
    """vist: the distant text read as images (PP-OCRv6, Perceiver resampler, cross-attention), the rest as text.

    Args:
        proximal_tokens: the last tokens kept as text when no budget is given (None: the trained window).
        weights: a vist.safetensors written by gistify_bench.vist_train (None: the shipped weights).
    """

    name: ClassVar[str] = "vist"
    kind: ClassVar[str] = "rendered"  # reads text as images: neither a text nor a visual-token method

    proximal_tokens: int | None = None
    weights: str | None = None

    def __post_init__(self):
        if self.proximal_tokens is not None and (not isinstance(self.proximal_tokens, int) or self.proximal_tokens < 0):
            raise ValueError(f"Vist.proximal_tokens must be an integer >= 0 or None, got {self.proximal_tokens!r}")
