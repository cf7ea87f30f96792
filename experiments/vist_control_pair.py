"""vist against the mean-pooled control, each trained end to end over several runs (a run and its continuations).

    python experiments/vist_control_pair.py VIST.json[,VIST2.json...] CONTROL.json[,CONTROL2.json...]

Each argument is one chain of `gistify_bench.train.distill` records (distill.json), in order: the first run, then
the runs that continued it (`--init` of the previous run's vist.safetensors, `--steps 0`). After each stage the
held-out windows are the same in both chains (same data, seed and eval_n), so the per-window NLLs pair: vist's
memory read by vist's blocks minus the control's mean-pooled embeddings read by the control's blocks, with the
95% bootstrap interval (gistify_bench.stats.paired); beside it, each chain's LM loss over the stage's first and
last 10 end-to-end steps (a control whose loss still falls is not yet beaten), no memory and truncation at the
same LLM-side tokens, and the tanh gates of the blocks.
"""

import json
import sys

from gistify_bench.stats import paired


def chain(arg: str) -> list[dict]:
    return [json.load(open(p)) for p in arg.split(",")]


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


vist, control = chain(sys.argv[1]), chain(sys.argv[2])
if len(vist) != len(control):
    raise SystemExit("give both chains the same number of runs")
done = 0
for stage, (a, b) in enumerate(zip(vist, control)):
    steps = len(a["end_to_end"])
    done += steps
    wa, wb = a["final"]["per_window"], b["final"]["per_window"]
    print(f"## after {done} end-to-end steps (stage {stage + 1}: {steps} steps, n = {len(wa['copy_none'])} windows)\n")
    print("| windows | vist | control | no memory | truncation | vist - control [95%], share vist lower |")
    print("|---|---|---|---|---|---|")
    for kind in ("copy", "continuation"):
        d = paired(wa[f"{kind}_vision_own"], wb[f"{kind}_mean_embedding_own"])
        print(
            f"| {kind} | {mean(wa[f'{kind}_vision_own']):.3f} | {mean(wb[f'{kind}_mean_embedding_own']):.3f} | "
            f"{mean(wa[f'{kind}_none']):.3f} | {mean(wa[f'{kind}_truncate']):.3f} | {d['mean']:+.3f} "
            f"[{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], {d['a_lower']:.0%} |"
        )
    for label, run in (("vist", a), ("control", b)):
        lm = [s["lm"] for s in run["end_to_end"]]
        gates = " / ".join(f"{g:.2f}" for g in run["gates"])
        print(f"\n{label}: LM loss {mean(lm[:10]):.3f} -> {mean(lm[-10:]):.3f} (first, last 10 steps); gates {gates}")
    print()
