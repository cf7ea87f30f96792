"""A grid cell's files, shared by the runner and the tasks that run their own cells (gistify_bench.eval.tasks.vqa),
so that no task imports the runner (which imports every task through the registry).

<out>/<family>/<task>/<model>/<method>/keep=<k>/records.jsonl (one JSON object per example, appended as each
finishes, so an interrupted run resumes where it stopped) and metrics.json (the cell's summary).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gistify_bench.eval.task import CellTask
from gistify_bench.machine import machine


def cell_dir(out: Path, task: str, reader: str, method: str, keep: float | None) -> Path:
    """A cell's folder under a family's folder `out`; keep None is the method's own budget ("keep=own")."""
    return out / task / reader.replace("/", "_") / method / ("keep=own" if keep is None else f"keep={keep:g}")


def read_records(path: Path) -> dict[str, dict]:
    """{id: record} of a records.jsonl (empty if there is none yet)."""
    if not path.is_file():
        return {}
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            records[r["id"]] = r
    return records


def run_grid(
    task: CellTask,
    task_name: str,
    cells: list[tuple[str, float | None]],
    examples: list,
    model: str,
    out: Path,
    evaluate: Callable[[str, float | None, list], list[dict]],
    progress: Callable | None = None,
) -> list[dict]:
    """The cells of a non-text task, in the same layout as the text cells: for each (method, keep), the examples
    not yet recorded go to `evaluate(method, keep, examples)` (one record per example, in order, each with the
    example's "id"), their records are appended, and `task.summarize(records)` is the cell's metrics."""
    results = []
    for method, keep in cells:
        d = cell_dir(Path(out) / task.family, task_name, model, method, keep)
        d.mkdir(parents=True, exist_ok=True)
        path = d / "records.jsonl"
        done = read_records(path)
        todo = [ex for ex in examples if ex.id not in done]
        if todo:
            with path.open("a") as f:
                for rec in evaluate(method, keep, todo):
                    f.write(json.dumps(rec) + "\n")
                    done[rec["id"]] = rec
        if progress:
            progress()
        records = [done[ex.id] for ex in examples]
        metrics = task.summarize(records)
        metrics.update(task=task_name, model=model, method=method, keep=keep, n=len(records), metric=task.metric)
        metrics["machine"] = machine()
        (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
        results.append(metrics)
    return results


def write_json(path: Path, data: Any, indent: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=indent) + "\n")
    return path
