"""`gistify bench`: run tasks over methods and budgets, and write reports.

gistify bench needle-single-1k,needle-multikey-2k --methods reinforce,selfinfo,random,truncate --keep 0.5,0.33,0.2
gistify bench needle-single-1k --quick          # a few examples: minutes
gistify bench report                            # remake report.md and accuracy.png from the results
gistify bench tasks                             # list the tasks
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

QUICK_N, FULL_N = 4, 30


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values or any(not 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"every keep must be in (0, 1], got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gistify bench", description=__doc__.split("\n\n")[0])
    p.add_argument("task", help="task name(s), comma-separated; or `report`, or `tasks`")
    p.add_argument(
        "--methods",
        default="reinforce,selfinfo,random,truncate",
        help="comma-separated gistify methods and peers (llmlingua, longllmlingua; the kvpress presses "
        "kvpress-expected, kvpress-snapkv, kvpress-knorm, kvpress-streaming, kvpress-tova)",
    )
    p.add_argument("--keep", type=_floats, default=[0.5, 0.33, 0.2], help="comma-separated keep fractions")
    p.add_argument("--n", type=int, help=f"examples per task (default {FULL_N}; {QUICK_N} with --quick)")
    p.add_argument("--quick", action="store_true", help="a few examples, for a run of minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reader", default=None, help="reader model (default: the embedded SmolLM2)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results directory (default ./results)")
    args = p.parse_args(argv)

    from gistify_bench import report

    if args.task == "tasks":
        from gistify_bench.task import TASKS, get_task

        get_task(next(iter(TASKS), "needle-single-1k"))
        print("\n".join(sorted(TASKS)))
        return 0
    if args.task != "report":
        from gistify_bench.peers import kv_presses, lingua
        from gistify_bench.reader import Reader
        from gistify_bench.runner import run

        reader = Reader.load(args.reader)
        n = args.n or (QUICK_N if args.quick else FULL_N)
        methods = args.methods.split(",")
        peers = {m: lingua.compressor(m, reader) for m in methods if m in lingua.MODES}
        peers.update({m: kv_presses.compressor(m, reader) for m in methods if m in kv_presses.PRESSES})
        for task in args.task.split(","):
            run(task, methods, args.keep, n, args.out, args.seed, reader, peers, show_progress=sys.stderr.isatty())
    md, png = report.write(args.out)
    print(md.read_text())
    print(f"report: {md}\nplot: {png}")
    return 0
