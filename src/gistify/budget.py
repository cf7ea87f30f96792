"""Budget: how much of a context to keep, in one convention for every method.

`keep` is the fraction of tokens kept (0 < keep <= 1, LLMLingua's "rate"); `tokens` is the number of tokens
kept. Exactly one is given. Tokens are counted with the target tokenizer of the result (README, "Budget
convention"). A method honours the budget within one token and the result reports what it achieved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Budget:
    keep: float | None = None
    tokens: int | None = None

    def __post_init__(self):
        if (self.keep is None) == (self.tokens is None):
            raise ValueError("give exactly one of `keep` (a fraction in (0, 1]) or `tokens` (a count >= 1)")
        if self.keep is not None:
            if isinstance(self.keep, bool) or not isinstance(self.keep, (int, float)) or math.isnan(self.keep):
                raise ValueError(f"`keep` must be a number in (0, 1], got {self.keep!r}")
            if not 0.0 < self.keep <= 1.0:
                raise ValueError(f"`keep` must be in (0, 1], got {self.keep}")
        if self.tokens is not None:
            if isinstance(self.tokens, bool) or not isinstance(self.tokens, int):
                raise ValueError(f"`tokens` must be a whole number >= 1, got {self.tokens!r}")
            if self.tokens < 1:
                raise ValueError(f"`tokens` must be >= 1, got {self.tokens}")

    def target(self, n: int) -> int:
        """How many of `n` units this budget keeps: ceil(keep * n) (docs/methods.md §1.2 step 6), or `tokens`,
        never more than `n`."""
        if self.tokens is not None:
            return min(self.tokens, n)
        # The epsilon stops float noise (0.3 * 10 = 3.0000000000000004) from rounding up a whole token.
        return min(n, max(1, math.ceil(self.keep * n - 1e-9)))

    def __str__(self) -> str:
        return f"keep={self.keep:g}" if self.keep is not None else f"tokens={self.tokens}"
