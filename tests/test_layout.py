"""The harness's layout, checked on the source as test_architecture.py checks the library's: no import cycle in
gistify_bench, training imports no evaluation module, the task registry fills itself without a task importing it
back, and the measurements and stand-alone benches live apart from the grid tasks.

Imports are read as test_architecture.py reads them (`graph`): module-level and function-level imports both count
(a function-level import still runs, and a cycle through one still loads a module half-initialised); only those
under `if TYPE_CHECKING:` do not (they never run).
"""

from __future__ import annotations

import re
from pathlib import Path

from test_architecture import SRC, find_cycle, graph

ROOT = SRC.parent
EVAL = "gistify_bench.eval"


def test_no_import_cycle_in_the_harness():
    """(test_architecture.py checks the library's.) The whole harness is read: 60 modules or so."""
    edges = graph("gistify_bench")
    assert len(edges) > 50 and find_cycle(edges) is None, find_cycle(edges)


def test_training_imports_no_evaluation_module():
    """What training and evaluation share (the cloze questions, the statistics, the data) lives in shared modules."""
    offenders = {
        module: sorted(t for t in targets if t == EVAL or t.startswith(EVAL + "."))
        for module, targets in graph("gistify_bench").items()
        if module.startswith("gistify_bench.train")
    }
    assert {m: t for m, t in offenders.items() if t} == {}
    assert "gistify_bench.cloze" in graph("gistify_bench")["gistify_bench.train.controller"]


def test_the_registry_imports_every_task_module_and_no_task_imports_it():
    edges = graph("gistify_bench")
    registering = {  # the modules that register tasks: they import task.py and call its register()
        name
        for name, targets in edges.items()
        if f"{EVAL}.task" in targets and re.search(r"^\s*register\(", _source(name), re.M)
    }
    assert {"gistify_bench.eval.tasks.needle", "gistify_bench.benches.vist_lm"} <= registering
    assert registering <= edges[f"{EVAL}.registry"]
    for name in registering:  # nor through the runner, which imports the registry
        assert not edges[name] & {f"{EVAL}.registry", f"{EVAL}.runner"}, name
    assert not edges[f"{EVAL}.task"] & registering and not edges[f"{EVAL}.tasks"]


def test_measurements_and_benches_live_apart_from_the_grid_tasks():
    from gistify_bench.eval.registry import load_tasks
    from gistify_bench.eval.task import Measurement

    tasks = [t for t in load_tasks().values() if type(t).__module__.startswith("gistify_bench.")]  # not tests'
    measurements = {type(t).__module__ for t in tasks if isinstance(t, Measurement)}
    grid_tasks = {type(t).__module__ for t in tasks if not isinstance(t, Measurement)}
    assert measurements and all(m.startswith("gistify_bench.benches.") for m in measurements)
    assert grid_tasks and all(m.startswith("gistify_bench.eval.tasks.") for m in grid_tasks)
    grid = {p.stem for p in (SRC / "gistify_bench/eval/tasks").glob("*.py")} - {"__init__"}
    assert grid == {"icl", "needle", "vqa", "wiki"}
    assert {"speed", "negations", "batch", "serve", "flops"} <= {
        p.stem for p in (SRC / "gistify_bench/benches").glob("*.py")
    }


def test_every_documented_harness_command_names_a_module():
    """`python -m gistify_bench.X` in the README and the docs (not docs/results/, which record the commands of
    past runs) runs a module that exists."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    commands = {
        (page.name, m) for page in pages for m in re.findall(r"python -m (gistify_bench[\w.]*)", page.read_text())
    }
    assert commands
    missing = sorted((page, m) for page, m in commands if not _is_module(m))
    assert missing == []


def _source(module: str) -> str:
    path = SRC / Path(*module.split("."))
    return (path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py").read_text()


def _is_module(name: str) -> bool:
    path = SRC / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()
