"""The harness's evaluation half: every family's grid tasks (tasks/) and the measurements (gistify_bench.benches)
on one Task / registry / runner / report path, under one results root (--out, default ./results: ROOT/text,
ROOT/vision, ROOT/vist). `gistify bench` is eval.cli."""
