"""Benchmark tasks of every family (text, vision, vist), in one registry.

Two kinds, both run by gistify_bench.eval.runner and written under one output root (<out>/<family>/...):
- `Task` (and `CellTask`, its base): examples -> each (method, budget) cell -> one record per example -> the
  cell's metrics, resumable (runner.run). Text tasks (a context, a question, answers; a reader answers from the
  compressed context) are `Task`s; the visual-question tasks (gistify_bench.eval.tasks.vqa) are `CellTask`s whose
  cells are visual-token reducers at a keep fraction inside the small VLM.
- `Measurement`: a task whose result is one JSON document rather than a grid of cells: vist's comparisons of
  ways of giving the LLM a distant text (language modelling, in-context learning, cost, diversity, ablations)
  and the visual-token prefill timings. Each says in its docstring why it does not fit the cell grid
  (runner.measure writes <out>/<family>/<result>.json).

One file per grid task in `tasks/`, one per measurement in gistify_bench/benches/; each registers its named variants
in TASKS when imported, and gistify_bench.eval.registry imports them all (this module imports none: the tasks
import it). A task's examples are deterministic in (n, seed), so every method and budget sees the same examples in
one run.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

TASKS: dict[str, CellTask | Measurement] = {}
FAMILIES = ("text", "vision", "vist")


@dataclass
class Example:
    id: str
    context: str
    question: str
    answers: list[str]
    all_answers: bool = False  # score the fraction of answers found (several values), else any one
    meta: dict[str, Any] = field(default_factory=dict)


def normalize(text: str) -> str:
    """Lower case, punctuation (but not digit separators) to spaces, one space between words."""
    text = re.sub(r"(?<!\d)[^\w\s]|[^\w\s](?!\d)", " ", text.lower())
    return " ".join(text.split())


def found(answers: list[str], text: str, all_answers: bool) -> float:
    """1.0 if any answer occurs in `text` (normalised), or the fraction found when `all_answers`."""
    t = f" {normalize(text)} "
    hits = [f" {normalize(a)} " in t for a in answers]
    return sum(hits) / len(hits) if all_answers else float(any(hits))


class CellTask(ABC):
    """A task of (method, budget) cells over the same examples, each cell one records.jsonl + metrics.json."""

    family: ClassVar[str]
    name: ClassVar[str]
    metric: ClassVar[str] = "accuracy"

    @abstractmethod
    def examples(self, n: int, seed: int = 0) -> list:
        """`n` examples (each with an `id`), the same for the same (n, seed)."""


class Measurement(ABC):
    """A task whose result is one JSON document (<out>/<family>/<result>.json), not cells of records."""

    family: ClassVar[str]
    result: ClassVar[str]  # the JSON file's stem

    @abstractmethod
    def run(self, options: dict[str, Any]) -> dict:
        """Measure, with the command line's `options`; the result to write."""


class Task(CellTask):
    """A text task: examples (context, question, answers), the reader's prompt, and the scores."""

    family = "text"
    name: ClassVar[str]
    max_new_tokens: ClassVar[int] = 32
    metric: ClassVar[str] = "accuracy"  # what `score` measures; "perplexity" is lower-is-better
    chat: ClassVar[bool] = True  # prompt through the reader's chat template, or as plain text to continue

    @abstractmethod
    def examples(self, n: int, seed: int = 0) -> list[Example]:
        """`n` examples, the same for the same (n, seed)."""

    def prompt(self, context: str, question: str) -> str:
        """The reader's user message: the (compressed) context, then the question."""
        return f"{context}\n\nAnswer the question using the text above. Be brief.\nQuestion: {question}"

    def evaluate(self, reader, example: Example, context: str) -> dict[str, Any]:
        """The reader on a (compressed) context: {"prediction", "score", "prompt_tokens", "prefill_s", ...}."""
        a = reader.answer(self.prompt(context, example.question), self.max_new_tokens, self.chat)
        return {
            "prediction": a["text"],
            "score": self.score(example, a["text"]),
            "prompt_tokens": a["prompt_tokens"],
            "prefill_s": a["prefill_s"],
            "decode_s": a["decode_s"],
        }

    def score(self, example: Example, prediction: str) -> float:
        return found(example.answers, prediction, example.all_answers)

    def survival(self, example: Example, compressed: str) -> float | None:
        """Reader-free: does the answer survive compression? (None for tasks without answers.)"""
        return found(example.answers, compressed, example.all_answers) if example.answers else None


def register(name: str, task: CellTask | Measurement) -> None:
    """Add a task under `name` (each task module registers its variants when it is imported: registry.py)."""
    if name in TASKS:
        raise ValueError(f"two tasks are named {name!r}")
    TASKS[name] = task
