"""Selective Context: keep the words that carry the most self-information.

Li et al., "Compressing Context to Enhance Inference Efficiency of Large Language Models" (EMNLP 2023),
https://arxiv.org/abs/2310.06201. A lexical unit's self-information is the sum of its tokens'
-log p(x_t | x_<t) under a causal LM; predictable words are redundant and go first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gistify.text.base import AGGREGATES, TextMethod
from gistify.text.words import Document


@dataclass
class SelectiveContext(TextMethod):
    """Selective Context: drop the words a small LM finds most predictable (least self-information).

    Args:
        aggregate: how a word's tokens combine; "sum" is the paper's -log p(word | context).
    """

    name = "selfinfo"
    needs_scorer = True
    aggregate: str = "sum"

    def __post_init__(self):
        self._check_choice("aggregate", AGGREGATES)

    def score(self, doc: Document) -> np.ndarray:
        return doc.per_word(doc.stats().self_info, self.aggregate)
