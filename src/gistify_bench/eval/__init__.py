"""The harness's evaluation half: every family's tasks (tasks/) on one Task / runner / report path, under one
results root (--out, default ./results: ROOT/text, ROOT/vision, ROOT/vist). `gistify bench` is eval.cli."""
