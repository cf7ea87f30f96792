"""TextMethod: the base of the text family. A text method says only how much each word is worth (`score`);
segmentation, token costs, protection, selection under the budget and reassembly are the family's pipeline
(words.py, pipeline.py), which `compress` runs around that score."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from gistify.method import Method
from gistify.text.options import pipeline_options
from gistify.text.pipeline import compress_text
from gistify.text.words import Document

if TYPE_CHECKING:
    from gistify.result import Compressed

AGGREGATES = ("max", "mean", "sum")  # how a word's token values combine (Document.per_word)


@dataclass
class TextMethod(Method):
    """Base of the text methods: a method returns one score per word, higher = keep."""

    kind: ClassVar[str] = "text"
    options: ClassVar[tuple[str, ...]] = ("scorer", "progress", *pipeline_options())  # TextOptions' fields
    needs_scorer: ClassVar[bool] = False  # whether `score` reads the scorer LM (Document.stats)
    fill_gaps: ClassVar[bool] = True  # see words.select

    @abstractmethod
    def score(self, doc: Document) -> np.ndarray:
        """(n_words,) float: how much each word is worth keeping."""

    def compress(
        self, text: str, question: str | None = None, *, keep: float | None = None, tokens: int | None = None, **options
    ) -> Compressed:
        """Keep the best-scoring words of `text` within the budget; `options` are the pipeline's (see
        `gistify.text.pipeline.compress_text`)."""
        return compress_text(self, text, question, keep=keep, tokens=tokens, **options)
