"""The registry of every family's tasks: the grid tasks (gistify_bench.eval.tasks) and the measurements
(gistify_bench.benches), loaded on first use.

Each task module registers its variants in `task.TASKS` when imported; this module imports them, so that neither
`task.py` nor the package `tasks/` imports a task module, and a task module may import `task.py` and its sibling
modules without an import cycle.
"""

from __future__ import annotations

from gistify_bench.eval.task import TASKS, CellTask, Measurement


def load_tasks() -> dict[str, CellTask | Measurement]:
    """Every registered task (importing the built-in ones registers them)."""
    from gistify_bench.benches import (  # noqa: F401
        vision_speed,
        vist_bench,
        vist_cost,
        vist_icl,
        vist_lm,
        vist_runs,
    )
    from gistify_bench.eval.tasks import icl, needle, vqa, wiki  # noqa: F401

    return TASKS


def get_task(name: str) -> CellTask | Measurement:
    load_tasks()
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


def tasks_of(family: str) -> list[str]:
    return sorted(name for name, task in load_tasks().items() if task.family == family)
