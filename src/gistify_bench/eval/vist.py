"""vist against keeping the text (docs/methods.md §3.7): language modelling, in-context learning, cost.

    python -m gistify_bench.eval.vist lm   [--weights W] [--distant 1024] [--n 48]     (= gistify bench vist lm ...)
    python -m gistify_bench.eval.vist icl  [--weights W] [--classes 6] [--per-class 20] [--seeds 0 1 2]
    python -m gistify_bench.eval.vist cost [--weights W] [--lengths 1024 2048 4096 8192 16384]
    python -m gistify_bench.eval.vist bench --weights W [--distant 512] [--n 16]
    python -m gistify_bench.eval.vist ablation --run frequency=DIR --run no_pve=DIR --run random=DIR
    python -m gistify_bench.eval.vist diversity [--run main=DIR ...]
    python -m gistify_bench.eval.vist report

Each subcommand runs one task of the vist family (vist-lm, vist-icl, vist-cost, vist-bench, vist-ablation,
vist-diversity: gistify_bench.benches.vist_*; their docstrings say what each measures) through
gistify_bench.eval.runner.measure, which writes ROOT/vist/<task>.json (ROOT: --out, default ./results; the committed
results are docs/results), then remakes ROOT/vist/report.md (gistify_bench.eval.report.vist). The oracle probe
(gistify_bench.train.oracle: the cross-attention reading a perfect memory) writes oracle.json there too, and the
report shows it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

SUBCOMMANDS = ("lm", "icl", "cost", "bench", "ablation", "diversity", "report")


def main(argv=None) -> int:
    from gistify_bench.options import resolve_out

    p = argparse.ArgumentParser(prog="gistify bench vist", description=__doc__.split("\n")[0])
    p.add_argument("task", choices=SUBCOMMANDS)
    p.add_argument("--weights", help="a vist.safetensors (default: the shipped weights)")
    p.add_argument("--distant", type=int, help="lm, bench: most distant tokens per window (default 1024, 512)")
    p.add_argument("--n", type=int, help="lm: held-out windows (default 48); bench: of each kind (default 16)")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--per-class", type=int, default=20, help="icl: test sentences per label")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--run", action="append", default=[], help="ablation, diversity: NAME=DIR of a vist trainer run")
    p.add_argument("--cache", help="a vist trainer's folder whose features/ cache encoded lines "
                   "(default ./results/train/vist)")  # fmt: skip
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", help="results root (default ./results); writes ROOT/vist/")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = resolve_out(a.out)
    from gistify_bench.eval.report.vist import report

    if a.task != "report":
        runs = []
        for spec in a.run:
            name, sep, folder = spec.partition("=")
            if not (sep and name and folder):
                p.error(f"--run takes NAME=DIR (a vist trainer's --out folder), got {spec!r}")
            runs.append((name, Path(folder)))
        options = {"weights": a.weights, "distant": a.distant, "n": a.n, "classes": a.classes, "per_class": a.per_class,
                   "seeds": a.seeds, "lengths": a.lengths, "runs": runs, "cache": a.cache}  # fmt: skip
        from gistify_bench.eval.runner import measure

        measure(f"vist-{a.task}", out, options)
    print(report(out / "vist"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
