"""Truncation: keep the head, the tail, or both ends of the text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from gistify.text.base import TextMethod
from gistify.text.words import Document


@dataclass
class Truncate(TextMethod):
    """Keep the first words (head), the last (tail), or both ends and drop the middle (middle).

    Truncation keeps whole words and stays contiguous, so it can end up to one word's tokens under the
    budget (it never skips a long word to take a later one).

    Args:
        side: "head", "tail" or "middle".
    """

    name = "truncate"
    fill_gaps: ClassVar[bool] = False
    side: str = "head"

    def __post_init__(self):
        self._check_choice("side", ("head", "tail", "middle"))

    def score(self, doc: Document) -> np.ndarray:
        n = len(doc.words)
        pos = np.arange(n, dtype=np.float64)
        if self.side == "head":
            return -pos
        if self.side == "tail":
            return pos
        # Alternate from both ends inwards: 0, n-1, 1, n-2, ... get decreasing scores.
        return np.maximum(-pos * 2, -(n - 1 - pos) * 2 - 1)
