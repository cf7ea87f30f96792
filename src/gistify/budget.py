"""Budget: how much of a context to keep, in one convention for every method.

`keep` is the fraction of tokens kept (0 < keep <= 1, LLMLingua's "rate"); `tokens` is the number of tokens
kept. Exactly one is given. Tokens are counted with the target tokenizer of the result (README, "Budget
convention"). A method honours the budget within one token and the result reports what it achieved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def keep_error(keep) -> str | None:
    """Why `keep` is not a keep fraction (None when it is, or is not given): the one check of every surface."""
    if keep is None:
        return None
    if isinstance(keep, bool) or not isinstance(keep, int | float) or math.isnan(keep) or not 0.0 < keep <= 1.0:
        return f"`keep` must be a number in (0, 1], got {keep!r}"


def tokens_error(tokens) -> str | None:
    """Why `tokens` is not a token count (None when it is, or is not given)."""
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        return f"`tokens` must be a whole number >= 1, got {tokens!r}"


@dataclass(frozen=True)
class Budget:
    keep: float | None = None
    tokens: int | None = None

    def __post_init__(self):
        if (self.keep is None) == (self.tokens is None):
            raise ValueError("give exactly one of `keep` (a fraction in (0, 1]) or `tokens` (a count >= 1)")
        error = keep_error(self.keep) or tokens_error(self.tokens)
        if error:
            raise ValueError(error)

    def target(self, n: int) -> int:
        """How many of `n` units this budget keeps: ceil(keep * n) (docs/methods.md §1.2 step 6), or `tokens`,
        never more than `n`."""
        if self.tokens is not None:
            return min(self.tokens, n)
        # The epsilon stops float noise (0.3 * 10 = 3.0000000000000004) from rounding up a whole token.
        return min(n, max(1, math.ceil(self.keep * n - 1e-9)))

    def __str__(self) -> str:
        return f"keep={self.keep:g}" if self.keep is not None else f"tokens={self.tokens}"
