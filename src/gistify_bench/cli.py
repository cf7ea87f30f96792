"""`gistify bench`, registered through the `gistify.commands` entry point (bench = "gistify_bench.cli:main"): the
command line lives in gistify_bench.eval.cli."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from gistify_bench.eval.cli import main as bench

    return bench(argv)
