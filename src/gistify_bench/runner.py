"""Run methods over budgets on one task's examples, resumably, and write one record per example.

Layout: <out>/<task>/<reader>/<method>/keep=<k>/records.jsonl (one JSON object per example, appended as
each finishes, so an interrupted run resumes where it stopped) and metrics.json (the cell's summary).
The uncompressed baseline is method "none" at keep=1; every other record says whether its answer agrees
with the baseline's.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gistify_bench.measure import machine, reset_peak_rss, rss_mb
from gistify_bench.reader import Reader
from gistify_bench.task import Example, Task, normalize

NONE = "none"


@dataclass
class Compression:
    text: str
    tokens_in: int
    tokens_out: int
    seconds: float


# A compressor: (context, question, keep) -> Compression. In-library methods and peers both fit.
Compressor = Callable[[str, str, float], Compression]


def gistify_compressor(method: str, reader: Reader, scorer=None, **params) -> Compressor:
    """A gistify text method, budgets counted in the reader's tokens."""
    import gistify

    def run(context: str, question: str, keep: float) -> Compression:
        r = gistify.compress(
            context, question, keep=keep, method=method, scorer=scorer, tokenizer=reader.tokenizer, **params
        )
        return Compression(r.text, r.tokens_in, r.tokens_out, r.seconds)

    return run


def _uncompressed(reader: Reader) -> Compressor:
    def run(context: str, question: str, keep: float) -> Compression:
        n = len(reader.tokenizer(context, add_special_tokens=False).input_ids)
        return Compression(context, n, n, 0.0)

    return run


def cell_dir(out: Path, task: str, reader: str, method: str, keep: float) -> Path:
    return out / task / reader.replace("/", "_") / method / f"keep={keep:g}"


def _read_records(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            records[r["id"]] = r
    return records


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
    done = _read_records(path)
    measured_memory = reset_peak_rss()
    worker = getattr(compressor, "worker_pid", lambda: None)  # a peer's process, whose memory is its own
    if worker() is not None:
        reset_peak_rss(worker())
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
                if baseline is not None and ex.id in baseline and rec.get("prediction") is not None:
                    rec["agreement"] = float(normalize(rec["prediction"]) == normalize(baseline[ex.id]["prediction"]))
                f.write(json.dumps(rec) + "\n")
                f.flush()
                done[ex.id] = rec
            if progress:
                progress()
    records = [done[ex.id] for ex in examples]
    metrics = summarize(records)
    metrics.update(task=task_name, reader=reader.name, method=method, keep=keep, n=len(records), metric=task.metric)
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
        "agreement": mean("agreement"),
        "survival": mean("survival"),
        "keep_ratio": mean("keep_ratio"),
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
    """Every (method, keep) on the same `n` examples of `task_name`; the uncompressed baseline first.

    gistify methods score with `scorer` (default: the embedded SmolLM2); `compressors` adds peers by name.
    """
    from gistify.progress import progress_bar
    from gistify_bench.task import get_task

    task = get_task(task_name)
    reader = reader or Reader.load()
    examples = task.examples(n, seed)
    compressors = dict(compressors or {})
    cells = [(NONE, 1.0)] + [(m, k) for m in methods if m != NONE for k in keeps if k < 1]
    results, baseline = [], None
    with progress_bar(len(cells) * len(examples), task_name, show_progress) as advance:
        for method, keep in cells:
            if method == NONE:
                comp = _uncompressed(reader)
            else:
                comp = compressors.get(method) or gistify_compressor(method, reader, scorer)
            results.append(run_cell(task, task_name, examples, method, keep, comp, reader, out, baseline, advance))
            if method == NONE:
                baseline = _read_records(cell_dir(out, task_name, reader.name, NONE, 1.0) / "records.jsonl")
    return results
