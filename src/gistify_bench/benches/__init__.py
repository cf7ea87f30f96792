"""Measurements and stand-alone benches, apart from the grid tasks of gistify_bench.eval.tasks.

Measurements (each a `Measurement` registered with the tasks, run by `gistify bench vision|vist ...`):
vision_speed (visual-token prefill timings), vist_lm, vist_icl, vist_cost, vist_bench, vist_runs (vist against
text). Stand-alone benches, each its own command (`python -m gistify_bench.benches.<name>`): speed (compression
time by input length), negations (the fidelity corpus), batch (compress-batch's engines), serve (the proxy under
load); flops holds the analytic FLOPs counts the vision report and vist_cost read.
"""
