"""Benchmark tasks, one file per family. Importing this package registers them."""

from gistify_bench.tasks import icl, needle, wiki  # noqa: F401
