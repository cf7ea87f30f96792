"""Benchmarks for visual-token reducers (issue 4): accuracy, prefill time, memory, tokens and FLOPs.

    python -m gistify_bench.eval.vision accuracy [--n 200] [--out ROOT]     (= gistify bench vision accuracy ...)
    python -m gistify_bench.eval.vision speed    [--repeats 7] [--out ROOT]
    python -m gistify_bench.eval.vision report   [--out ROOT]

Results go to ROOT/vision/ (ROOT: --out, default ./results; the committed results are docs/results).
accuracy: the tasks "easyvqa" and "easyvqa-4" (gistify_bench.eval.tasks.vqa): every method of
    gistify.methods("vision") at keep 1, 0.5, 0.25, 0.1, 0.05 (and recover's own dynamic budget) on the trained
    small VLM, on held-out easy-vqa questions; cells as the text tasks' (records.jsonl, metrics.json), gathered
    into accuracy.json.
speed: "vision-speed" (gistify_bench.benches.vision_speed): prefill on the trained VLM and on a tiny-config
    LLaVA with LLaVA-1.5's 576 visual tokens -> speed.json.
report: tables, the issue's checks, a plot, and FLOPs of LLaVA-1.5-7B's prefill from our counter
    (gistify_bench.benches.flops) next to the paper's table (8.5 -> 1.5 TFLOPs) -> report.md, accuracy.png.
"""

from __future__ import annotations

import argparse


def main(argv=None) -> int:
    from gistify_bench.options import resolve_out

    p = argparse.ArgumentParser(prog="gistify bench vision", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("accuracy", "speed", "report"))
    p.add_argument("--n", type=int, default=200, help="questions per task (accuracy)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per configuration (speed)")
    p.add_argument("--out", help="results root (default ./results); writes ROOT/vision/")
    args = p.parse_args(argv)
    out = resolve_out(args.out)
    if args.command == "accuracy":
        from gistify_bench.eval.runner import run
        from gistify_bench.eval.tasks.vqa import KEEPS, TASK_NAMES, vision_methods

        for task in TASK_NAMES:
            run(task, vision_methods(), list(KEEPS), args.n, out, seed=1, show_progress=True)
    elif args.command == "speed":
        from gistify_bench.eval.runner import measure

        measure("vision-speed", out, {"repeats": args.repeats})
    else:
        from gistify_bench.eval.report import vision

        print(vision.write_report(out / "vision"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
