"""The baseline every method must beat: keep words at random."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gistify.text.base import TextMethod
from gistify.text.words import Document


@dataclass
class RandomWords(TextMethod):
    """Keep random words (seeded) up to the budget: the floor every method must beat.

    Args:
        seed: random seed; the same seed and text keep the same words.
    """

    name = "random"
    seed: int = 0

    def __post_init__(self):
        self._check_int("seed", 0)

    def score(self, doc: Document) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(doc.words))
