"""The vist report: <out>/vist/report.md from the JSON files there (the vist tasks' results, the oracle probe's
oracle.json, written by gistify_bench.train.oracle, the teacher runs' teacher/*.json, written by
gistify_bench.train.teacher, and the distillation runs' distill/*.json, written by gistify_bench.train.distill)."""

from __future__ import annotations

import json
from pathlib import Path


def report(folder: Path) -> str:
    """<folder>/report.md from the JSON files there; its text."""

    def read(name):
        path = folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    lines = ["# vist against text: measured", ""]
    lm = read("lm")
    if lm:
        lines += [f"## Long-context LM: perplexity of the last 128 tokens ({lm['windows']} held-out windows, "
                  f"{lm['articles']} articles, ~{lm['distant_tokens']:.0f} distant tokens)", "",
                  "| way | LLM-side tokens | NLL/token | perplexity |", "|---|---|---|---|"]  # fmt: skip
        for way, r in lm["ways"].items():
            lines.append(f"| {way} | {r['llm_tokens']:.0f} | {r['nll']:.4f} | {r['ppl']:.2f} |")
        lines.append("")
    icl = read("icl")
    if icl:
        runs = icl["runs"]
        lines += [f"## ICL: topic classification, {len(runs[0]['labels'])} labels, {runs[0]['distant_demos']} "
                  f"distant + {runs[0]['decoder_demos']} decoder demos, {runs[0]['tests']} tests x {len(runs)} seeds",
                  "", "| way | LLM-side context tokens | accuracy | calibrated |", "|---|---|---|---|"]  # fmt: skip
        for way in runs[0]["ways"]:
            acc = sum(r["ways"][way]["accuracy"] for r in runs) / len(runs)
            cal = sum(r["ways"][way]["accuracy_calibrated"] for r in runs) / len(runs)
            ctx = sum(r["ways"][way]["llm_tokens_context"] for r in runs) / len(runs)
            lines.append(f"| {way} | {ctx:.0f} | {acc:.3f} | {cal:.3f} |")
        lines.append("")
    cost = read("cost")
    if cost:
        lines += [f"## Cost as the distant part grows ({cost['machine']}; {cost['new_tokens']} tokens generated)",
                  "", "| distant tokens | LLM tokens plain / vist | TFLOPs plain / vist (saved) | peak MB plain / vist "
                  "| s plain / vist (speed-up) |", "|---|---|---|---|---|"]  # fmt: skip
        for r in cost["rows"]:
            p, v = r["plain"], r["vist"]
            cells = [f"{r['distant_tokens']}", f"{p['llm_tokens']} / {v['llm_tokens']}",
                     f"{p['flops'] / 1e12:.3f} / {v['flops'] / 1e12:.3f} ({r['flops_saved']:.0%})",
                     f"{mb(p['peak_mb'])} / {mb(v['peak_mb'])}",
                     f"{p['seconds']:.1f} / {v['seconds']:.1f} ({r['speedup']:.2f}x)"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    ab = read("ablation")
    if ab:
        lines += ["## Ablations (the trainer's held-out numbers: NLL per token on eval articles)", "",
                  "| run | none | vist | shuffled memory | content gain | copy windows: vist / shuffled | PVE acc |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in ab["runs"].items():
            h, acc = r["held_out"], "-" if r["pve_acc"] is None else f"{r['pve_acc']:.2f}"
            if "shuffled" not in h:
                continue  # a run evaluated on one window has no shuffled control
            lines.append(f"| {name} | {h['base']:.4f} | {h['vist']:.4f} | {h['shuffled']:.4f} | "
                         f"{h['shuffled'] - h['vist']:+.4f} | {h.get('copy_vist', float('nan')):.4f} / "
                         f"{h.get('copy_shuffled', float('nan')):.4f} | {acc} |")  # fmt: skip
        lines.append("")
    div = read("diversity")
    if div:
        lines += ["## Does the memory depend on the text? (mean cosine: same slot of two texts, neighbouring slots)",
                  "", "| run | across texts | across slots |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {r['across_texts']:.4f} | {r['across_slots']:.4f} |" for name, r in div["runs"].items()]
        lines.append("")
    oracle = read("oracle")
    if oracle:
        lines += [f"## Oracle probe: the cross-attention reading a perfect memory ({oracle['held_out_copy_windows']} "
                  "held-out copy windows, NLL per token)", "", f"`{oracle['command']}`", "",
                  "| step | own memory | another window's | gap |", "|---|---|---|---|"]  # fmt: skip
        for c in oracle["curve"]:
            lines.append(f"| {c['step']} | {c['own']:.4f} | {c['shuffled']:.4f} | {c['shuffled'] - c['own']:+.4f} |")
        lines.append("")
    lines += bench_section(read("bench"))
    lines += teacher_section(folder / "teacher")
    lines += distill_section(folder / "distill")
    text = "\n".join(lines)
    (folder / "report.md").write_text(text)
    return text


def teacher_section(folder: Path) -> list[str]:
    """One row per teacher run (gistify_bench.train.teacher) in `folder`: held-out NLL per token at the end, each
    window's mean with a 95% bootstrap interval, for copy and continuation windows and each memory."""
    runs = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not runs:
        return []
    cells = ("copy_own", "copy_other", "copy_none", "continuation_own", "continuation_other", "continuation_none")
    lines = ["## The teacher: the LLM's own hidden states as memory, read by the cross-attention (issue 13)", "",
             "Held-out windows, NLL per token (mean of the windows' means, [95% interval]); `other`: another "
             "window's memory (the control), `none`: no memory.", "",
             "| run | layer | r | pool | steps | " + " | ".join(c.replace("_", " ") for c in cells) + " |",
             "|---" * (5 + len(cells)) + "|"]  # fmt: skip

    loaded = {path.stem: json.loads(path.read_text()) for path in runs}
    for name, run in loaded.items():
        c, final = run["config"], run["final"]
        row = [name, c["layer"], c["r"], c["pool"] if c["r"] > 1 else "-", c["steps"]]
        lines.append("| " + " | ".join(map(str, row + [_cell(final[k]) if k in final else "" for k in cells])) + " |")
    lines += ["", "Commands:", ""] + [f"- {name}: `{run['command']}`" for name, run in loaded.items()] + [""]
    return lines


def _cell(r) -> str:
    return f"{r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if r.get("ci95") else f"{r['mean']:.3f}"


DISTILL_ARMS = (
    ("none", "no memory"),
    ("teacher", "the teacher's memory (a state per token)"),
    ("teacher_slots", "the teacher's memory in vist's layout (a state per stretch)"),
    ("mean_embedding", "mean-pooled input embeddings (per stretch)"),
    ("vision", "vist (PP-OCRv6 features, resampled)"),
)


def distill_section(folder: Path) -> list[str]:
    """Per distillation run (gistify_bench.train.distill) in `folder`: the regression's held-out error, then each
    memory's held-out NLL per token with its own and another window's memory, after the regression and at the end."""
    runs = sorted(folder.glob("*.json")) if folder.is_dir() else []
    lines, read = [], {}
    for path in runs:
        run = json.loads(path.read_text())
        if "regression" not in run:
            continue  # not a distillation's result (a weights card, say)
        read[path.stem] = run
        lines += [f"## vist distilled into the teacher's memory: {path.stem}", "", f"`{run['command']}`", ""]
        lines += _regression_lines(run)
        if not run.get("after_regression"):
            continue  # stopped during the regression: rerun with --resume
        stages = [("after the regression", run["after_regression"])]
        if run.get("end_to_end"):
            c = run["config"]
            stages.append(
                (f"after {c['e2e_steps']} end-to-end steps on the {c.get('e2e_memory', 'vision')} memory", run["final"])
            )
        for title, stage in stages:
            table = stage.get("table", stage)  # runs before issue 24 kept the table alone
            lines += [f"Held out, {title}: NLL per token (mean [95% interval]); "
                      f"{table['text_tokens_per_memory_token']} text tokens per memory token in vist's layout.", "",
                      "| memory | copy, own | copy, another window's | continuation, own | continuation, another's |",
                      "|---|---|---|---|---|"]  # fmt: skip
            for arm, label in DISTILL_ARMS:
                own = "" if arm == "none" else "_own"
                keys = [
                    f"copy_{arm}{own}",
                    f"copy_{arm}_other",
                    f"continuation_{arm}{own}",
                    f"continuation_{arm}_other",
                ]
                if keys[0] in table:
                    lines.append(
                        f"| {label} | " + " | ".join(_cell(table[k]) if k in table else "" for k in keys) + " |"
                    )
            if "copy_truncate" in table:
                lines.append(f"| {TRUNCATE} | {_cell(table['copy_truncate'])} | | "
                             f"{_cell(table['continuation_truncate'])} | |")  # fmt: skip
            lines.append("")
            if stage.get("paired"):
                lines += _paired_lines(stage["paired"], "vist")
        if run.get("gates_before"):
            lines += [f"Gates (tanh) before: {run['gates_before']}; after: {run['gates']}. Seconds per optimizer step "
                      f"(set-up and evaluation apart): {run.get('seconds_per_step')}.", ""]  # fmt: skip
    return lines + control_lines(read)


TRUNCATE = "truncation: the distant text's last V tokens as text (V = vist's memory tokens)"

# what two runs must share for vist's windows in one to pair with the mean-pooled control's in the other
SAME_RUN = ("init", "teacher", "e2e_steps", "e2e_batch", "e2e_lr", "e2e_blocks", "copy", "eval_n", "seed", "steps")


def control_lines(runs: dict[str, dict]) -> list[str]:
    """vist against the mean-pooled control trained the same way (issue 24): two distillation runs with the blocks
    trained end to end, one reading vist's memory and one the mean-pooled input embeddings, alike in SAME_RUN, so
    their held-out windows are the same; paired per window, with each run's LM loss over its first and last 10
    end-to-end steps (a control whose loss is still falling is not yet beaten)."""
    from gistify_bench.stats import paired

    def trained(memory: str) -> list[tuple[str, dict]]:
        return [(name, r) for name, r in runs.items()
                if r.get("final") and r["config"].get("e2e_memory", "vision") == memory
                and r["config"].get("e2e_blocks") == "trained" and r.get("end_to_end")]  # fmt: skip

    lines = []
    for name, vist in trained("vision"):
        for other, control in trained("mean_embedding"):
            if any(vist["config"].get(k) != control["config"].get(k) for k in SAME_RUN):
                continue
            a, b = vist["final"]["per_window"], control["final"]["per_window"]
            lines += [f"## vist against the mean-pooled control trained the same way: {name} - {other}", "",
                      f"Both with the blocks trained for {vist['config']['e2e_steps']} end-to-end steps on the same "
                      "windows; per held-out window, vist's NLL per token minus the control's (mean [95% interval], "
                      "share of windows where vist is lower).", "",
                      "| windows | vist - mean-pooled control |", "|---|---|"]  # fmt: skip
            for kind in ("copy", "continuation"):
                d = paired(a[f"{kind}_vision_own"], b[f"{kind}_mean_embedding_own"])
                lines.append(f"| {kind} | {d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}], "
                             f"{d['a_lower']:.0%} |")  # fmt: skip
            for label, run in (("vist", vist), ("The control", control)):
                lm = [s["lm"] for s in run["end_to_end"]]
                lines += [""]
                lines.append(f"{label}'s LM loss, mean of the first and last 10 end-to-end steps: "
                             f"{sum(lm[:10]) / len(lm[:10]):.3f} -> {sum(lm[-10:]) / len(lm[-10:]):.3f}.")  # fmt: skip
            lines.append("")
    return lines


def _regression_lines(run: dict) -> list[str]:
    """The regression's held-out curve, with the constant predictor's error and the target mismatch (issue 24)."""
    curve = run["regression"]
    points = " -> ".join(
        f"{c['error']:.3f} (step {c['step']})" + (f" [train {c['train_loss']:.3f}]" if "train_loss" in c else "")
        for c in curve
    )
    lines = [f"Regression, held-out relative error: {points}."]
    last = curve[-1]
    if "constant_error" in last:
        lines[-1] += f" A constant predictor (the train targets' mean): {last['constant_error']:.3f}."
        lines[-1] += f" By line of the window: {last['by_line']}; by stretch of the line: {last['by_stretch']}"
        lines[-1] += f"; by the slot's rarest token: {last.get('by_rarity')}."
    mismatch = run.get("target_mismatch")
    if mismatch:
        lines[-1] += (
            f" The earlier run's target (states with {mismatch['context_tokens']} tokens of article context) against "
            f"the one target now (the window alone): relative error {mismatch['relative_error']:.3f} "
            f"({mismatch['windows']} held-out windows)."
        )
    return lines + [""]


def bench_section(bench: dict | None) -> list[str]:
    """vist_bench (gistify_bench.benches.vist_bench): per way, each kind's NLL and LLM-side tokens, and the
    distant facts answered exactly."""
    if not bench:
        return []
    t, w = bench["table"], bench["windows"]
    lines = [f"## vist_bench: held-out windows, ~{bench['distant_tokens']} distant tokens (issue 13, step 5)", "",
             f"`{bench.get('weights')}`; windows: {w['continuation']} continuation, {w['far_copy']} far copy, "
             f"{w['distant_fact']} distant fact. NLL per token (mean over windows [95% interval]) and mean LLM-side "
             "tokens; facts: the number's tokens, and the share answered exactly.", "",
             "| way | continuation | tokens | far copy | tokens | fact NLL | fact exact |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for way in t["continuation"]:
        row = [way]
        for kind in ("continuation", "far_copy"):
            r = t[kind].get(way)
            row += [_cell(r), f"{r['llm_tokens']:.0f}"] if r else ["", ""]
        fact, exact = t["distant_fact"].get(way), t["distant_fact"].get(way + "_exact")
        row += [_cell(fact) if fact else "", _cell(exact) if exact else ""]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if bench.get("paired"):
        lines += _paired_lines(bench["paired"], "vist")
    return lines


def _paired_lines(differences: dict, name: str) -> list[str]:
    """Paired differences on the same windows: mean [95% interval], the share where the first is lower."""
    lines = [f"Paired differences on the same windows ({name} minus the other; for NLL negative is better, for exact "
             "answers positive), mean [95% interval], share of windows where the first is lower:", "",
             "| difference | mean [95%] | first lower | clear of 0 |", "|---|---|---|---|"]  # fmt: skip
    for key, d in differences.items():
        lines.append(f"| {key} | {_cell(d)} | {d['a_lower']:.2f} | {'yes' if d['clear_of_zero'] else 'no'} |")
    return lines + [""]


def mb(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"
