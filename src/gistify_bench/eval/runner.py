"""Run every family's tasks, resumably, under one output root.

Cell tasks (text, vision): methods over budgets on one task's examples, one record per example. Layout:
<out>/<family>/<task>/<model>/<method>/keep=<k>/records.jsonl (one JSON object per example, appended as each
finishes, so an interrupted run resumes where it stopped) and metrics.json (the cell's summary; keep=own for a
method's own budget). The uncompressed baseline is method "none" at keep=1; in text tasks every other record says
whether its answer agrees with the baseline's. Text cells run through `run_cell` (a reader answers from each
compressed context); other families' cells through `run_grid`, which asks the task for the records of the
examples not yet recorded (cells.py: a cell's files, which the tasks write through without importing the runner).

Measurements (gistify_bench.eval.task.Measurement) write one JSON document: <out>/<family>/<result>.json (`measure`).
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gistify_bench.eval.cells import cell_dir, read_records, write_json
from gistify_bench.eval.reader import Reader
from gistify_bench.eval.task import Example, Measurement, Task, normalize
from gistify_bench.machine import machine, reset_peak_rss, rss_mb
from gistify_bench.stats import interval95

NONE = "none"


@dataclass
class Compression:
    text: str
    tokens_in: int
    tokens_out: int
    seconds: float
    fell_back: bool | None = None  # a gistify method's fidelity fallback replaced the first cut (None: not known)


# A compressor: (context, question, keep) -> Compression. In-library methods and peers both fit.
Compressor = Callable[[str, str, float], Compression]


def gistify_compressor(method: str, reader: Reader, scorer=None, **params) -> Compressor:
    """A gistify text method, budgets counted in the reader's tokens."""
    import gistify

    def run(context: str, question: str, keep: float) -> Compression:
        r = gistify.compress(
            context, question, keep=keep, method=method, scorer=scorer, tokenizer=reader.tokenizer, **params
        )
        return Compression(r.text, r.tokens_in, r.tokens_out, r.seconds, r.fell_back)

    return run


def _uncompressed(reader: Reader) -> Compressor:
    def run(context: str, question: str, keep: float) -> Compression:
        n = len(reader.tokenizer(context, add_special_tokens=False).input_ids)
        return Compression(context, n, n, 0.0)

    return run


def run_cell(
    task: Task,
    task_name: str,
    examples: list[Example],
    method: str,
    keep: float,
    compressor: Compressor,
    reader: Reader,
    out: Path,
    baseline: dict[str, dict] | None,
    progress: Callable | None = None,
) -> dict:
    """Run one (method, keep) over the examples; skip those already recorded. Returns the cell's metrics."""
    d = cell_dir(out, task_name, reader.name, method, keep)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "records.jsonl"
    done = read_records(path)
    measured_memory = reset_peak_rss()
    worker = getattr(compressor, "worker_pid", lambda: None)  # a peer's process, whose memory is its own
    if worker() is not None:
        reset_peak_rss(worker())
    added = 0
    with path.open("a") as f:
        for ex in examples:
            if ex.id not in done:
                c = compressor(ex.context, ex.question, keep)
                rec = {
                    "id": ex.id,
                    "answers": ex.answers,
                    # a peer whose output is not text (a pruned KV cache) brings the reader that reads it
                    **task.evaluate(getattr(compressor, "reader", None) or reader, ex, c.text),
                    "survival": task.survival(ex, c.text),
                    "tokens_in": c.tokens_in,
                    "tokens_out": c.tokens_out,
                    "keep_ratio": c.tokens_out / max(1, c.tokens_in),
                    "compress_s": c.seconds,
                }
                if c.fell_back is not None:
                    rec["fell_back"] = c.fell_back
                if baseline is not None and ex.id in baseline and rec.get("prediction") is not None:
                    rec["agreement"] = float(normalize(rec["prediction"]) == normalize(baseline[ex.id]["prediction"]))
                f.write(json.dumps(rec) + "\n")
                f.flush()
                done[ex.id] = rec
                added += 1
            if progress:
                progress()
    records = [done[ex.id] for ex in examples]
    metrics = summarize(records)
    metrics.update(task=task_name, reader=reader.name, method=method, keep=keep, n=len(records), metric=task.metric)
    earlier = d / "metrics.json"
    if not added and earlier.is_file():
        # Nothing ran here: the machine and memory stay those of the run that measured the records.
        old = json.loads(earlier.read_text())
        metrics.update({k: old[k] for k in ("machine", "peak_rss_mb", "worker_peak_rss_mb") if k in old})
    else:
        metrics["machine"] = machine()
        if measured_memory and len(records) > 0:
            metrics["peak_rss_mb"] = rss_mb()
        if worker() is not None:
            metrics["worker_peak_rss_mb"] = rss_mb("VmHWM", worker())
    (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def summarize(records: list[dict]) -> dict[str, Any]:
    def mean(key):
        vals = [r[key] for r in records if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    tokens_in = sum(r["tokens_in"] for r in records)
    return {
        "accuracy": mean("score"),
        "accuracy_ci95": interval95([r["score"] for r in records if r.get("score") is not None]),
        "agreement": mean("agreement"),
        "survival": mean("survival"),
        "keep_ratio": mean("keep_ratio"),
        "fell_back": mean("fell_back"),  # the share of examples where the fidelity fallback replaced the cut
        "tokens_in": mean("tokens_in"),
        "tokens_out": mean("tokens_out"),
        "compress_s_per_1k": sum(r["compress_s"] for r in records) / tokens_in * 1000 if tokens_in else None,
        "prefill_s_median": statistics.median(r["prefill_s"] for r in records) if records else None,
    }


def run(
    task_name: str,
    methods: list[str],
    keeps: list[float],
    n: int,
    out: Path,
    seed: int = 0,
    reader: Reader | None = None,
    compressors: dict[str, Compressor] | None = None,
    show_progress: bool = True,
    scorer=None,
) -> list[dict]:
    """Every (method, keep) on the same `n` examples of the text task `task_name`, written under
    <out>/text/; the uncompressed baseline first.

    gistify methods score with `scorer` (default: the embedded SmolLM2); `compressors` adds peers by name.
    A task of another family runs through its own `run` (e.g. gistify_bench.eval.tasks.vqa), on `run_grid`.
    """
    from gistify.progress import progress_bar
    from gistify_bench.eval.registry import get_task

    task = get_task(task_name)
    if isinstance(task, Measurement):
        raise ValueError(f"{task_name} is a measurement, not a grid of cells: use runner.measure")
    if not isinstance(task, Task):
        return task.run(task_name, methods, keeps, n, out, seed, show_progress=show_progress)
    out = Path(out) / task.family
    reader = reader or Reader.load()
    examples = task.examples(n, seed)
    compressors = dict(compressors or {})
    cells = [(NONE, 1.0)] + [(m, k) for m in methods if m != NONE for k in keeps if k < 1]
    window = reader_window(reader)
    longest = max((len(reader.tokenizer(ex.context, add_special_tokens=False).input_ids) for ex in examples), default=0)
    if window is not None and longest > window:  # the reader cannot read the whole context: compressed only
        print(f"{task_name}: contexts of up to {longest} tokens exceed {reader.name}'s window of {window}: "
              "no uncompressed baseline, compressed contexts only", file=sys.stderr)  # fmt: skip
        cells = cells[1:]
    results, baseline = [], None
    with progress_bar(len(cells) * len(examples), task_name, show_progress) as advance:
        for method, keep in cells:
            if method == NONE:
                comp = _uncompressed(reader)
            else:
                comp = compressors.get(method) or gistify_compressor(method, reader, scorer)
            results.append(run_cell(task, task_name, examples, method, keep, comp, reader, out, baseline, advance))
            if method == NONE:
                baseline = read_records(cell_dir(out, task_name, reader.name, NONE, 1.0) / "records.jsonl")
    return results


def reader_window(reader: Reader) -> int | None:
    """The most tokens the reader was trained to attend over (its config's max_position_embeddings), if it says."""
    return getattr(getattr(reader.model, "config", None), "max_position_embeddings", None)


def measure(task_name: str, out: Path, options: dict[str, Any] | None = None) -> dict:
    """Run the measurement `task_name` and write its result to <out>/<family>/<result>.json."""
    from gistify_bench.eval.registry import get_task

    task = get_task(task_name)
    if not isinstance(task, Measurement):
        raise ValueError(f"{task_name} is a task of cells: use runner.run")
    result = task.run(dict(options or {}))
    write_json(Path(out) / task.family / f"{task.result}.json", result)
    return result
