"""vist's data and held-out scoring, shared by its trainer (gistify_bench.train.vist) and its benchmarks
(gistify_bench.eval.vist): articles in cached line features and windows (corpus), and the four-way held-out
NLL (heldout)."""
