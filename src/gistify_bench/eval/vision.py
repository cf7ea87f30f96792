"""Benchmarks for visual-token reducers (issue 4): accuracy, prefill time, memory, tokens and FLOPs.

    python -m gistify_bench.eval.vision accuracy [--n 200] [--out ROOT]     (= gistify bench vision accuracy ...)
    python -m gistify_bench.eval.vision speed    [--repeats 7] [--out ROOT]
    python -m gistify_bench.eval.vision report   [--out ROOT]
    python -m gistify_bench.eval.vision scenes   [--n 500] [--methods a,b] [--keeps 0.1,0.05] [--out ROOT]

Results go to ROOT/vision/ (ROOT: --out, default ./results; the committed results are docs/results).
accuracy: the tasks "easyvqa" and "easyvqa-4" (gistify_bench.eval.tasks.vqa): every method of
    gistify.methods("vision") at keep 1, 0.5, 0.25, 0.1, 0.05 (and recover's own dynamic budget) on the trained
    small VLM, on held-out easy-vqa questions; cells as the text tasks' (records.jsonl, metrics.json), gathered
    into accuracy.json.
speed: "vision-speed" (gistify_bench.benches.vision_speed): prefill on the trained VLM and on a tiny-config
    LLaVA with LLaVA-1.5's 576 visual tokens -> speed.json.
scenes: the question-dependent tasks "scenes" and "labels" (issue 29) on the gistvlm-scenes weights: every method
    (and recover-code, the released code's mode) at each keep, all tokens, the ground-truth control ("oracle": the
    asked object's tokens), paired differences against random -> scenes.json and scenes.md.
report: tables, the issue's checks, a plot, and FLOPs of LLaVA-1.5-7B's prefill from our counter
    (gistify_bench.benches.flops) next to the paper's table (8.5 -> 1.5 TFLOPs) -> report.md, accuracy.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv=None) -> int:
    from gistify_bench.options import resolve_out

    p = argparse.ArgumentParser(prog="gistify bench vision", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("accuracy", "speed", "report", "scenes"))
    p.add_argument("--methods", help="accuracy, scenes: comma-separated methods (default: all; scenes adds "
                   "recover-code and oracle, the ground-truth control, which easyvqa-4 also takes)")  # fmt: skip
    p.add_argument("--keeps", help="accuracy, scenes: comma-separated keep fractions (default 0.5,0.25,0.1,0.05)")
    p.add_argument("--n", type=int, default=200, help="questions per task (accuracy)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per configuration (speed)")
    p.add_argument("--weights", help="scenes: the VLM's weights (default: the shipped gistvlm-scenes)")
    p.add_argument("--device", default="cpu", help="scenes: where the VLM runs (cpu or cuda)")
    p.add_argument(
        "--selection-only",
        action="store_true",
        help="scenes: only which tokens each reducer keeps "
        "(on the asked object or not; no answers, so no LLM pass except fastv's, left out by default)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("dev", "test"),
        help="scenes --selection-only: which questions (dev: to choose settings; test: to report)",
    )
    p.add_argument("--out", help="results root (default ./results); writes ROOT/vision/")
    args = p.parse_args(argv)
    out = resolve_out(args.out)
    if args.command == "accuracy":
        from gistify_bench.eval.runner import run
        from gistify_bench.eval.tasks.vqa import KEEPS, TASK_NAMES, vision_methods

        methods = args.methods.split(",") if args.methods else vision_methods()
        keeps = [float(k) for k in args.keeps.split(",")] if args.keeps else list(KEEPS)
        for task in TASK_NAMES:
            run(task, methods, keeps, args.n, out, seed=1, show_progress=True)
    elif args.command == "scenes":
        from gistify_bench.eval.cells import write_json
        from gistify_bench.eval.report.vision import write_scenes_report
        from gistify_bench.eval.runner import run
        from gistify_bench.eval.tasks import vqa

        if args.weights:
            vqa.SCENES_WEIGHTS = Path(args.weights)
        vqa.DEVICE = args.device
        methods = args.methods.split(",") if args.methods else None
        keeps = [float(k) for k in args.keeps.split(",")] if args.keeps else list(vqa.KEEPS)
        if args.selection_only:
            vlm = vqa.load_vlm("scenes")
            methods = methods or [m for m in vqa.vision_methods() if m != "fastv"] + list(vqa.VARIANTS)
            rows = [r for t in vqa.SCENE_TASKS for r in vqa.selection(vlm, t, methods, keeps, args.n, split=args.split)]
            name = "selection.json" if args.split == "test" else f"selection-{args.split}.json"
            print(write_json(out / "vision" / name, {"weights": str(args.weights or "shipped"), "split": args.split,
                                                      "cells": rows}, 1))  # fmt: skip
            return 0
        for task in vqa.SCENE_TASKS:
            run(task, methods, keeps, args.n, out, seed=1, show_progress=True)
        print(write_scenes_report(out / "vision"))
    elif args.command == "speed":
        from gistify_bench.eval.runner import measure

        measure("vision-speed", out, {"repeats": args.repeats})
    else:
        from gistify_bench.eval.report import vision

        print(vision.write_report(out / "vision"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
