"""`gistify bench`: run tasks over methods and budgets, and write reports, under one results root.

gistify bench needle-single-1k,needle-multikey-2k --methods reinforce,selfinfo,random,truncate --keep 0.5,0.33,0.2
gistify bench needle-single-1k --quick          # a few examples: minutes
gistify bench easyvqa-4 --keep 0.25,0.1         # a vision task: gistify.methods("vision") on the small VLM
gistify bench vision accuracy|speed|report ...  # the visual-token benchmarks (gistify_bench.eval.vision)
gistify bench vist lm|icl|cost|ablation|diversity|report ...  # vist against text (gistify_bench.eval.vist)
gistify bench report                            # remake every family's report from the results
gistify bench tasks                             # list the tasks, by family

Every command writes under --out ROOT (default ./results, resolved and printed): ROOT/text/, ROOT/vision/,
ROOT/vist/. The committed results are docs/results (--out docs/results).
"""

from __future__ import annotations

import argparse
import sys

from gistify_bench.options import with_params

QUICK_N, FULL_N = 4, 30
TEXT_METHODS = ("reinforce", "selfinfo", "random", "truncate")  # the default; `all`: every gistify text method
FAMILY_COMMANDS = {"vision": "gistify_bench.eval.vision", "vist": "gistify_bench.eval.vist"}


def _floats(text: str) -> list[float]:
    """--keep: keep fractions separated by commas, each checked as the library checks a keep."""
    from gistify.text.options import TextOptions

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected keep fractions separated by commas, got {text!r}")
    try:
        for v in values:
            TextOptions(keep=v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{e} (in {text!r})") from None
    return values


def methods_for(family: str, spec: str | None) -> list[str]:
    """The methods to run: `spec` (comma-separated; `all`: every registered method of the family), or the family's
    default (text: TEXT_METHODS; vision: gistify.methods("vision")). Text runs also take the peers by name."""
    import gistify

    known = list(gistify.methods(family))
    if spec is None:
        return list(TEXT_METHODS) if family == "text" else known
    names = list(known) if spec == "all" else [m for m in spec.split(",") if m]
    if family == "text":
        from gistify_bench.eval.peers import kv_presses, lingua

        known += list(lingua.MODES) + list(kv_presses.PRESSES)
    if family == "vision":  # the ground-truth control and recover's released-code mode (gistify_bench.eval.tasks.vqa)
        from gistify_bench.eval.tasks.vqa import CONTROL, VARIANTS

        known += [CONTROL, *VARIANTS]
    unknown = [m for m in names if with_params(m)[0] not in known and m != "none"]
    if unknown:
        raise ValueError(f"unknown {family} method(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in FAMILY_COMMANDS:  # a family's own benchmarks: their command line
        import importlib

        return importlib.import_module(FAMILY_COMMANDS[argv[0]]).main(argv[1:])
    p = argparse.ArgumentParser(prog="gistify bench", description=__doc__.split("\n\n")[0])
    p.add_argument("task", help="task name(s), comma-separated; or `report`, `tasks`, `vision ...`, `vist ...`")
    p.add_argument(
        "--methods",
        default=None,
        help="comma-separated methods, or `all` (text default: reinforce,selfinfo,random,truncate; vision default: "
        "every gistify vision method); text tasks also take the peers llmlingua, longllmlingua and the kvpress "
        "presses kvpress-expected, kvpress-snapkv, kvpress-knorm, kvpress-streaming, kvpress-tova; a text method "
        "takes parameters as NAME[KEY=VALUE;...], e.g. truncate[side=tail]",
    )
    p.add_argument("--keep", type=_floats, default=None, help="comma-separated keep fractions "
                   "(text default 0.5,0.33,0.2; vision 0.5,0.25,0.1,0.05)")  # fmt: skip
    p.add_argument("--n", type=int, help=f"examples per task (default {FULL_N}; {QUICK_N} with --quick)")
    p.add_argument("--quick", action="store_true", help="a few examples, for a run of minutes")
    p.add_argument("--seed", type=int, default=None, help="examples' seed (text default 0; vision 1)")
    p.add_argument("--reader", default=None, help="text tasks' reader model (default: the embedded SmolLM2)")
    p.add_argument("--out", default=None, help="results root (default ./results): ROOT/text, ROOT/vision, ROOT/vist")
    args = p.parse_args(argv)

    from gistify_bench.eval import report
    from gistify_bench.eval.registry import get_task, load_tasks, tasks_of
    from gistify_bench.eval.task import FAMILIES, Measurement

    if args.task == "tasks":
        load_tasks()
        for family in FAMILIES:
            print(f"{family}: " + ", ".join(tasks_of(family)))
        return 0
    from gistify_bench.options import resolve_out

    out = resolve_out(args.out)
    if args.task != "report":
        from gistify_bench.eval.runner import run

        n = args.n or (QUICK_N if args.quick else FULL_N)
        names = args.task.split(",")
        tasks = {name: get_task(name) for name in names}
        reader, peers = None, {}
        for name, task in tasks.items():
            if isinstance(task, Measurement):
                p.error(f"{name} is a measurement: run it with `gistify bench {task.family} ...`")
            methods = methods_for(task.family, args.methods)
            if task.family != "text":
                seed = 1 if args.seed is None else args.seed
                run(name, methods, args.keep, n, out, seed, show_progress=sys.stderr.isatty())
                continue
            if reader is None:
                from gistify_bench.eval.peers import kv_presses, lingua
                from gistify_bench.eval.reader import Reader

                reader = Reader.load(args.reader)
                peers = {m: lingua.compressor(m, reader) for m in methods if m in lingua.MODES}
                peers.update({m: kv_presses.compressor(m, reader) for m in methods if m in kv_presses.PRESSES})
            for m in methods:  # a gistify method with parameters: its own compressor, its cell named as written
                base, params = with_params(m)
                if params and m not in peers:
                    from gistify_bench.eval.runner import gistify_compressor

                    peers[m] = gistify_compressor(base, reader, **params)
            keeps = args.keep or [0.5, 0.33, 0.2]
            run(name, methods, keeps, n, out, args.seed or 0, reader, peers, show_progress=sys.stderr.isatty())
    written = report.write(out)
    for family, paths in written.items():
        if family == "text":
            print(paths[0].read_text())
        print(f"{family} report: " + ", ".join(map(str, paths)))
    return 0
