"""The layout's rules, checked on the source: no import cycle in src/gistify, the library never imports the
harness, and `gistify compress` runs without loading it.

Imports are read with `ast` (the standard library): every `import` / `from ... import` of a gistify module,
at any depth of a module (a function-level import still runs when that function does), except under
`if TYPE_CHECKING:`, which never runs. A relative import is resolved against its package.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def imports_of(path: Path, package: str) -> set[str]:
    """The modules under `package` that the file at `path` imports (a `from pkg import name` counts as pkg.name
    when that is a module, else pkg)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_lines(tree)
    me = module_name(path)
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = me.split(".") if is_package else me.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        out.update(n for n in names if n == package or n.startswith(package + "."))
    return out


def graph(package: str) -> dict[str, set[str]]:
    files = {module_name(p): p for p in (SRC / package).rglob("*.py")}
    edges = {}
    for name, path in files.items():
        targets = set()
        for imported in imports_of(path, package):
            # "a.b.c" may name a module or an attribute of module "a.b": take the longest module prefix
            parts = imported.split(".")
            while parts and ".".join(parts) not in files:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        # importing a.b.c runs a/__init__ and a/b/__init__ first
        for t in list(targets):
            parts = t.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in files)
        edges[name] = targets - {name}
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None (iterative DFS with colours)."""
    state = dict.fromkeys(edges, 0)  # 0 unseen, 1 on the stack, 2 done
    for root in sorted(edges):
        if state[root]:
            continue
        stack = [(root, iter(sorted(edges[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
                path.pop()
            elif state.get(child) == 1:
                return path[path.index(child) :] + [child]
            elif state.get(child) == 0:
                state[child] = 1
                path.append(child)
                stack.append((child, iter(sorted(edges[child]))))
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_relative_and_type_checking_imports_are_read(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text(
        "from typing import TYPE_CHECKING\nfrom . import b\nif TYPE_CHECKING:\n    import pkg.c\n"
    )
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    (pkg / "c.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    edges = graph("pkg")
    assert edges["pkg.a"] == {"pkg", "pkg.b"} and edges["pkg.b"] == {"pkg", "pkg.a"}
    assert find_cycle(edges) == ["pkg.a", "pkg.b", "pkg.a"]


def test_no_import_cycle_in_the_library():
    edges = graph("gistify")
    assert len(edges) > 40  # the whole library was read
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_library_never_imports_the_harness():
    offenders = sorted(module_name(p) for p in (SRC / "gistify").rglob("*.py") if imports_of(p, "gistify_bench"))
    assert offenders == []


def test_compress_leaves_the_harness_unloaded():
    code = (
        "import sys; from gistify.cli import main; "
        "code = main(['compress', '-', '--keep', '0.5', '--method', 'truncate', '--tokenizer', 'cl100k_base']); "
        "assert code == 0, code; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'gistify_bench'); "
        "print('LOADED', loaded)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], input="one two three four five six seven eight", capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout
    assert out.stdout.startswith("one two three four")


def test_gistify_bench_is_a_registered_command():
    from importlib.metadata import entry_points

    (bench,) = [ep for ep in entry_points(group="gistify.commands") if ep.name == "bench"]
    assert bench.value == "gistify_bench.cli:main"
    out = subprocess.run([sys.executable, "-m", "gistify.cli", "bench", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "usage: gistify bench" in out.stdout


def test_a_new_method_is_one_class():
    """Adding a method is one file holding one dataclass: defining it registers it (the registry line in
    text/methods.py or vision/methods.py only makes the file load with the family)."""
    from dataclasses import dataclass

    import numpy as np
    import torch

    import gistify
    from gistify.method import REGISTRY
    from gistify.text.base import TextMethod
    from gistify.vision.base import VisionMethod, VisualContext

    gistify.methods()  # the built-in families first, so the new names do not shadow a later load
    before = dict(REGISTRY)

    @dataclass
    class Longest(TextMethod):
        """Keep the longest words."""

        name = "longest-words"

        def score(self, doc):
            return (doc.words[:, 1] - doc.words[:, 0]).astype(np.float64)

    @dataclass
    class Brightest(VisionMethod):
        """Keep the tokens with the largest norm."""

        name = "brightest"

        def score(self, ctx):
            return ctx.features.norm(dim=-1)

    try:
        assert gistify.methods("text")["longest-words"] == "Keep the longest words."
        text = "a b c d e f g h extraordinarily i j k"
        r = gistify.compress(text, tokens=4, method="longest-words", tokenizer="cl100k_base")
        assert "extraordinarily" in r.text and r.tokens_out <= 4 and r.method == "longest-words"
        ctx = VisualContext(features=torch.tensor([[1.0, 0], [3, 0], [2, 0], [0, 0]]))
        red = gistify.get_method("brightest").reduce(ctx, gistify.Budget(tokens=2))
        assert red.kept.tolist() == [1, 2]
    finally:
        REGISTRY.clear()
        REGISTRY.update(before)


# --- docs/architecture.md is the one tree of modules ----------------------------------------------------------

ARCHITECTURE = SRC.parent / "docs" / "architecture.md"
ENTRY = re.compile(r"[\w./]+\.py|[\w./]+/")


def tree_entries(text: str) -> set[str]:
    """The paths the tree of `## Layout` names, relative to the repository (a folder as its `__init__.py`).

    A line names entries when it starts, after its indent, with names ending in `.py` or `/`, one space apart;
    what follows two spaces is a description, and a line that starts otherwise continues a description. An
    entry belongs to the nearest folder above it with a smaller indent."""
    block = re.search(r"^## Layout\n.*?^```text\n(.*?)^```$", text, re.M | re.S).group(1)
    folders: list[tuple[int, str]] = []  # (indent, path) of the open folders
    out = set()
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        names = []
        for word in line.strip().split(" "):
            if not ENTRY.fullmatch(word):
                break
            names.append(word)
        if not names:
            continue
        while folders and folders[-1][0] >= indent:
            folders.pop()
        parent = folders[-1][1] if folders else ""
        for name in names:
            path = f"{parent}/{name}".lstrip("/").rstrip("/")
            if name.endswith("/"):
                out.add(f"{path}/__init__.py")
                folders.append((indent, path))
            else:
                out.add(path)
    return out


def source_modules() -> set[str]:
    root = SRC.parent
    return {str(p.relative_to(root)) for p in SRC.rglob("*.py") if "__pycache__" not in p.parts}


def test_the_tree_reader_reads_folders_files_and_descriptions():
    text = (
        "## Layout\n\n```text\nsrc/pkg/   the package\n  a.py   one\n  sub/   a folder\n    b.py c.py   two\n"
        "                  a continued description with x.py in it\n  d.py\nsrc/other/\n  e.py\n```\n"
    )
    assert tree_entries(text) == {
        "src/pkg/__init__.py", "src/pkg/a.py", "src/pkg/sub/__init__.py", "src/pkg/sub/b.py",
        "src/pkg/sub/c.py", "src/pkg/d.py", "src/other/__init__.py", "src/other/e.py",
    }  # fmt: skip


def test_the_architecture_tree_names_every_module_and_only_modules():
    named = tree_entries(ARCHITECTURE.read_text(encoding="utf-8"))
    modules = source_modules()
    assert len(modules) > 100  # the whole of src/ was read
    assert sorted(modules - named) == [], "modules missing from docs/architecture.md's tree"
    assert sorted(named - modules) == [], "names in docs/architecture.md's tree with no module"
