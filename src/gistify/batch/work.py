"""One worker of a batch job: it loads the scorer once and turns records into output lines.

The local engine runs one Worker per process and Ray runs one per actor, so both engines produce each line
with the same code from the same record, and their outputs are the same bytes. Loading the scorer is the
expensive part of starting (seconds); a worker does it once, not once per record.
"""

from __future__ import annotations

import os
from typing import Any

from gistify.batch.records import Reader, Settings, Task, check, output_line


class Worker:
    def __init__(self, settings: Settings, path: str | os.PathLike, scorer: Any = None):
        import torch

        import gistify

        # One thread a worker: on a shared machine, two OpenMP threads per process wait on each other far
        # more than they compute; throughput comes from more workers.
        torch.set_num_threads(max(1, settings.threads))
        self.settings = settings
        self.reader = Reader(path)
        text = settings.text
        method = gistify.get_method(text.method, kind="text", **text.params)
        if scorer is None and (text.tokenizer == "scorer" or getattr(method, "needs_scorer", True)):
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            scorer = gistify.Scorer.load(text.model)
        self.scorer = scorer  # None when neither the method nor the token count needs the LM
        self.kwargs = text.compress_kwargs(scorer)  # the method, its parameters, the options asked for
        self._compress = gistify.compress

    def line(self, locator: tuple[int, int]) -> str:
        """The output line of the record at `locator` (its result, or its error)."""
        record = self.reader.read(locator)
        task = check(record, self.settings)
        if isinstance(task, str):
            return output_line(record, {"error": task})
        return output_line(record, self._run(task))

    def lines(self, locators: list[tuple[int, int]]) -> list[str]:
        return [self.line(tuple(loc)) for loc in locators]

    def _run(self, task: Task) -> dict:
        try:
            r = self._compress(task.text, task.question, keep=task.keep, tokens=task.tokens, **self.kwargs)
        except (ValueError, TypeError) as e:  # the record's budget or parameters: its error, not the job's
            return {"error": str(e)}
        return {
            "text": r.text,
            "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out,
            "kept_spans": [list(span) for span in r.kept_spans],
            "method": r.method,
            "budget": r.budget,
            "notes": r.notes,
        }

    def close(self) -> None:
        self.reader.close()
