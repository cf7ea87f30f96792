"""A batch job from start to summary: scan, resume, run an engine, write each line as it comes, summarise.

Engines only turn locators into output lines, in order; everything about files (what is done, what is
written, what a crash leaves behind) happens here, in one process, so the local and Ray engines resume and
write the same way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from gistify.batch import records
from gistify.batch.records import Settings
from gistify.progress import progress_bar
from gistify.text.options import TextOptions


@dataclass
class Summary:
    """What a job did. Timing lives here, never in the output lines (they must not change run to run)."""

    records: int = 0  # in the input
    skipped: int = 0  # already in the output when the job started
    compressed: int = 0
    errors: int = 0
    fell_back: int = 0  # compressed records whose first cut changed the meaning (their notes say what was done)
    tokens_in: int = 0  # of the records compressed in this run
    tokens_out: int = 0
    seconds: float = 0.0  # wall time of this run, startup (scorer loads, Ray) included
    seconds_to_first: float = 0.0  # until the first line was written: roughly the startup
    seconds_to_half: float = 0.0  # until half of this run's lines were written
    engine: str = "local"
    workers: int = 1
    error_examples: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.compressed + self.errors

    @property
    def rate(self) -> float:
        """Records per second over the whole run."""
        return self.done / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float:
        """Records per second over the second half of the run: the engine's speed once started (the first
        line waits for the workers to start and load the scorer)."""
        half = (self.done + 1) // 2
        span = self.seconds - self.seconds_to_half
        return (self.done - half) / span if self.done > 1 and span > 0 else 0.0

    def __str__(self) -> str:
        ratio = f" ({self.tokens_out / self.tokens_in:.2f})" if self.tokens_in else ""
        unit = "actor" if self.engine == "ray" else "worker"
        who = f"{self.workers} {unit}{'s' if self.workers != 1 else ''}"
        lines = [
            f"compress-batch: {self.records} records: {self.compressed} compressed, {self.errors} errors, "
            f"{self.skipped} already done; {self.tokens_in} -> {self.tokens_out} tokens{ratio}; "
            f"{self.seconds:.1f} s, {self.rate:.2f} records/s ({self.engine} engine, {who})"
        ]
        if self.fell_back:
            lines.append(f"  {self.fell_back} compressed records fell back to keep their meaning (their notes say how)")
        lines += [f"  error: {e}" for e in self.error_examples]
        if self.errors > len(self.error_examples):
            lines.append(f"  ... and {self.errors - len(self.error_examples)} more (lines with an error field)")
        return "\n".join(lines)


def compress_batch(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    workers: int = 1,
    engine: str = "local",
    ray_address: str | None = None,
    max_chars: int = records.DEFAULT_MAX_CHARS,
    scorer: Any = None,
    progress: bool = False,
    options: TextOptions | None = None,
    **kwargs: Any,
) -> Summary:
    """Compress every record of `input` (JSONL or Parquet) into `output`, resuming what a previous run left.

    `workers` is the number of local processes, or of Ray actors with `engine="ray"`. `scorer` (local engine,
    one worker) reuses a loaded `gistify.Scorer`. The job's budget, method and options are `options`, or
    keywords as `gistify.compress` takes them (`kwargs`: `keep=0.3`, `method=...`, `model=...`, the method's
    fields, the pipeline's options `fallback="off"`, `protect_negations=False`, ...: TextOptions). A record's own
    `keep` or `tokens` overrides the job's.
    """
    if engine not in ("local", "ray"):
        raise ValueError(f"unknown engine {engine!r}; use local or ray")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    if options is not None and kwargs:
        raise ValueError(f"give the job's options either as `options` or as keywords, not both: {', '.join(kwargs)}")
    # every option, the budget, the method and its parameters checked before any record is read or any model loads
    options = options or TextOptions.from_kwargs(**kwargs)
    options.check_method()
    if os.path.abspath(input) == os.path.abspath(output):
        raise ValueError("the output must be another file than the input (the input is never changed)")
    settings = Settings(options, max_chars)

    t0 = time.perf_counter()
    entries = records.scan(input)
    out = records.Output.open(output, {key for key, _ in entries})
    summary = Summary(records=len(entries), skipped=len(out.done), engine=engine, workers=workers)
    todo = [loc for key, loc in entries if key not in out.done]
    if engine == "ray":
        from gistify.batch import ray_engine

        lines = ray_engine.run(settings, input, todo, actors=workers, address=ray_address)
    else:
        from gistify.batch import local

        lines = local.run(settings, input, todo, workers=workers, scorer=scorer)
    try:
        with progress_bar(len(todo), "compressing", progress, unit="records") as advance:
            for line in lines:
                _count(summary, out.write(line))
                if summary.done == 1:
                    summary.seconds_to_first = time.perf_counter() - t0
                if summary.done == (len(todo) + 1) // 2:
                    summary.seconds_to_half = time.perf_counter() - t0
                advance()
    finally:
        lines.close()
        out.close()
        summary.seconds = time.perf_counter() - t0
    out.finish()
    return summary


def _count(summary: Summary, row: dict) -> None:
    if "error" in row:
        summary.errors += 1
        if len(summary.error_examples) < 5:
            summary.error_examples.append(f"id {row.get('id')!r}: {row['error']}")
    else:
        summary.compressed += 1
        summary.fell_back += any(n.startswith("fell back") for n in row.get("notes", ()))
        summary.tokens_in += row["tokens_in"]
        summary.tokens_out += row["tokens_out"]
