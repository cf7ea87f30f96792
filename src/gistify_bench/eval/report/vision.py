"""The visual-token report: <out>/vision/report.md and accuracy.png from accuracy.json and speed.json
(written by `gistify bench vision accuracy|speed`), with the issue's checks computed from them."""

from __future__ import annotations

import json
from pathlib import Path

from gistify_bench.benches.flops import llava_table

BASELINES = ("random", "pool", "fastv")  # the ones the issue names; recover must beat each at keep 0.1


def accuracy_tables(records: list[dict]) -> list[str]:
    lines = []
    for task in dict.fromkeys(r["task"] for r in records):
        rows = [r for r in records if r["task"] == task]
        full = next(r for r in rows if r["method"] == "none")
        keeps = sorted({r["keep"] for r in rows if r["keep"] is not None and r["method"] != "none"}, reverse=True)
        lines += [f"### {task} (n = {full['n']}; all {full['tokens']:.0f} tokens: {full['accuracy']:.3f})", ""]
        lines += ["| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " | own budget (tokens) |"]
        lines += ["|---" * (len(keeps) + 2) + "|"]
        for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "none"):
            cells = []
            for k in keeps:
                r = next((r for r in rows if r["method"] == method and r["keep"] == k), None)
                cells.append("" if r is None else f"{r['accuracy']:.3f}")
            own = next((r for r in rows if r["method"] == method and r["keep"] is None), None)
            cells.append("" if own is None else f"{own['accuracy']:.3f} ({own['tokens']:.1f})")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def on_target_table(records: list[dict]) -> list[str]:
    """Composites: the share of the reduced tokens that show the asked object (0.25 = blind to the question)."""
    rows = [r for r in records if r.get("on_target") is not None and r["method"] != "none"]
    if not rows:
        return []
    keeps = sorted({r["keep"] for r in rows if r["keep"] is not None}, reverse=True)
    lines = ["| method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |", "|---" * (len(keeps) + 1) + "|"]
    for method in dict.fromkeys(r["method"] for r in rows):
        get = {r["keep"]: r["on_target"] for r in rows if r["method"] == method}
        lines.append(f"| {method} | " + " | ".join(f"{get[k]:.2f}" if k in get else "" for k in keeps) + " |")
    return lines


def checks(records: list[dict], speed: dict | None) -> list[str]:
    """The issue's targets, computed: recover at keep 0.1 keeps >= 90% of the full accuracy and beats random,
    pool and fastv; prefill speed-up at keep 0.1 >= 3x."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in records):
        get = {(r["method"], r["keep"]): r["accuracy"] for r in records if r["task"] == task}
        full, rec = get[("none", 1.0)], get.get(("recover", 0.1))
        if rec is None:
            continue
        ratio = rec / full if full else float("nan")
        lines.append(
            f"- {task}: recover at keep 0.1 keeps {ratio:.0%} of the full-token accuracy ({rec:.3f} / {full:.3f}): "
            f"{'PASS' if ratio >= 0.9 else 'FAIL'} (target 90%)"
        )
        for b in BASELINES:
            other = get.get((b, 0.1))
            if other is not None:
                verdict = "PASS" if rec > other else "FAIL"
                lines.append(f"  - vs {b} at keep 0.1: {rec:.3f} vs {other:.3f}: {verdict}")
    if speed:
        rows = speed["vlm"]
        full = next(r for r in rows if r["method"] == "none")
        for r in rows:
            if r["method"] == "recover" and r["keep"] == 0.1:
                llm = full["llm_prefill_s"] / r["llm_prefill_s"]
                both = (full["reduce_s"] + full["llm_prefill_s"]) / (r["reduce_s"] + r["llm_prefill_s"])
                lines.append(
                    f"- prefill speed-up of recover at keep 0.1 on the trained VLM: LLM {llm:.2f}x, reducer + LLM "
                    f"{both:.2f}x: {'PASS' if both >= 3 else 'FAIL'} (target 3x, counting the reducer's own cost)"
                )
    return lines


def speed_tables(speed: dict) -> list[str]:
    rows = speed["vlm"]
    full = next(r for r in rows if r["method"] == "none")
    base = full["reduce_s"] + full["llm_prefill_s"]
    lines = [
        f"### Trained VLM, batch 1 (encoder {full['encode_s'] * 1e3:.0f} ms per image, the same for every row)",
        "",
        "| method | keep | visual tokens | sequence | reducer ms | LLM prefill ms | LLM speed-up "
        "| reducer + LLM speed-up | KV cache MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        total = r["reduce_s"] + r["llm_prefill_s"]
        lines.append(
            f"| {r['method']} | {r['keep']:g} | {r['tokens']} | {r['sequence']} | {r['reduce_s'] * 1e3:.1f} | "
            f"{r['llm_prefill_s'] * 1e3:.1f} | {full['llm_prefill_s'] / r['llm_prefill_s']:.2f}x | "
            f"{base / total:.2f}x | {r['kv_cache_mb']:.2f} |"
        )
    tiny = speed["llava_tiny"]
    ref = next(r for r in tiny if r["method"] == "none")
    lines += [
        "",
        f"### {ref['model']}: the whole prefill call (vision tower, reducer, LLM)",
        "",
        "| method | keep | visual tokens | prefill ms | speed-up | KV cache MB | peak RSS increase MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in tiny:
        peak = "" if r["peak_rss_delta_mb"] is None else f"{r['peak_rss_delta_mb']:.0f}"
        lines.append(
            f"| {r['method']} | {r['keep']:g} | {r['tokens']} | {r['prefill_s'] * 1e3:.1f} | "
            f"{ref['prefill_s'] / r['prefill_s']:.2f}x | {r['kv_cache_mb']:.2f} | {peak} |"
        )
    return lines


def flops_table() -> list[str]:
    lines = [
        "| text tokens | visual tokens | full TFLOPs | at keep 0.1 TFLOPs |",
        "|---|---|---|---|",
    ]
    for r in llava_table():
        lines.append(
            f"| {r['text_tokens']} | 576 -> {r['visual_tokens']} | {r['full_tflops']:.2f} | {r['reduced_tflops']:.2f} |"
        )
    return lines


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in records))
    methods = [m for m in dict.fromkeys(r["method"] for r in records) if m != "none"]
    colours = dict(zip(methods, plt.get_cmap("tab10").colors))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        rows = [r for r in records if r["task"] == task]
        full = next(r for r in rows if r["method"] == "none")
        keeps = []
        for m in methods:
            pts = sorted((r["keep"], r["accuracy"]) for r in rows if r["method"] == m and r["keep"] is not None)
            ax.plot([k for k, _ in pts], [a for _, a in pts], "o-", label=m, color=colours[m])
            keeps += [k for k, _ in pts]
        ax.axhline(full["accuracy"], color="gray", ls="--", label="all tokens")
        if keeps:  # a run of whole-image cells only (all tokens, the control) has no keep axis
            ax.set_xscale("log")
        ax.set_xlabel("keep (fraction of the 196 visual tokens)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{task} (n = {full['n']})")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_report(out: Path) -> str:
    """<out>/report.md and accuracy.png (`out`: the vision family's folder); the report's text."""
    acc = json.loads((out / "accuracy.json").read_text())
    speed = json.loads((out / "speed.json").read_text()) if (out / "speed.json").exists() else None
    records = acc["records"]
    lines = [
        "# Visual-token reduction: results",
        "",
        f"Machine: {acc['machine']}. Regenerate: `gistify bench vision accuracy --n {acc['n']}`, "
        "`gistify bench vision speed`, `gistify bench vision report` (each with --out ROOT).",
        "",
        "## Checks (issue 4)",
        "",
        *checks(records, speed),
        "",
        "## Accuracy of the trained VLM, held-out easy-vqa questions",
        "",
        *accuracy_tables(records),
        "![accuracy](accuracy.png)",
        "",
        "## Which tokens survive on composites: the share showing the asked object",
        "",
        "Each reduced token counts by the fraction of the cells it stands for that lie in the asked quadrant; "
        "keeping all 196 tokens, or choosing blind to the question, gives 0.25.",
        "",
        *on_target_table(records),
        "",
    ]
    if speed:
        lines += ["## Prefill time, tokens and memory", "", f"Machine: {speed['machine']}; medians of "
                  f"{speed['repeats']} repeats.", "", *speed_tables(speed), ""]  # fmt: skip
    lines += [
        "## FLOPs of LLaVA-1.5-7B's prefill (gistify_bench.benches.flops)",
        "",
        "The paper reports 8.5 -> 1.5 TFLOPs (A100, FP16, about 10% of the visual tokens; prompt length unstated).",
        "",
        *flops_table(),
        "",
    ]
    plot(records, out / "accuracy.png")
    text = "\n".join(lines)
    (out / "report.md").write_text(text)
    return text


def _diff(d: dict | None) -> str:
    if not d:
        return ""
    lo, hi = d["ci95"] or (float("nan"), float("nan"))
    return f"{d['mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def scenes_checks(cells: list[dict]) -> list[str]:
    """Issue 29's checks on each generated task, from scenes.json's cells."""
    lines = []
    for task in dict.fromkeys(c["task"] for c in cells):
        rows = {(c["method"], c["keep"]): c for c in cells if c["task"] == task}
        full = rows.get(("none", 1.0))
        if full is None:
            continue
        lines.append(f"- {task}: all tokens {full['accuracy']:.3f} (target >= 0.75): "
                     f"{'PASS' if full['accuracy'] >= 0.75 else 'FAIL'}")  # fmt: skip
        if (c := rows.get(("oracle", None))) is not None:
            lines.append(f"  - ground-truth control (the asked object's {c['tokens']:.1f} tokens): {c['accuracy']:.3f}")
        for keep in (0.1, 0.05):
            r = rows.get(("recover", keep))
            if r is None or "vs_random" not in r:
                continue
            d = r["vs_random"]
            share = r["accuracy"] / full["accuracy"] if full["accuracy"] else 0.0
            ok = share >= 0.95 and d["mean"] >= 0.05 and d["ci95"] and d["ci95"][0] > 0
            verdict = "PASS" if ok else "FAIL"
            lines.append(f"  - recover at keep {keep}: {r['accuracy']:.3f} ({share:.0%} of all tokens), vs random "
                         f"{_diff(d)}: {verdict} (target >= 95% and >= +0.05, interval above 0)")  # fmt: skip
            if keep == 0.1 and r.get("seconds") and full.get("seconds"):
                speed = full["seconds"] / r["seconds"]
                lines.append(f"  - time per question at keep 0.1, recover's own cost included: {speed:.2f}x faster "
                             f"than all tokens: {'PASS' if speed >= 3 else 'FAIL'} (target 3x)")  # fmt: skip
    return lines


def write_scenes_report(out: Path) -> str:
    """<out>/scenes.md from scenes.json (`out`: the vision family's folder); the report's text."""
    data = json.loads((out / "scenes.json").read_text())
    cells = data["cells"]
    lines = [
        "# Visual-token reduction on question-dependent tasks (issue 29)",
        "",
        f"Machine: {data['machine']}; n = {data['n']} held-out questions per cell (test split, seed {data['seed']}). "
        "Regenerate: `python -m gistify_bench.eval.vision scenes --n N` (--out ROOT).",
        "",
        "## Checks",
        "",
        *scenes_checks(cells),
        "",
    ]
    for task in dict.fromkeys(c["task"] for c in cells):
        lines += [
            f"## {task}",
            "",
            "Accuracy with its 95% interval; the paired difference against `random` at the same keep (same "
            "questions, bootstrap 95% interval); mean visual tokens kept; share of the kept tokens on the asked "
            "object; seconds per question (reducer, prefill, two decoding steps; batches of 25); KV cache (MB, "
            "bfloat16, visual tokens and a 16-token prompt).",
            "",
            "| method | keep | accuracy | 95% | vs random | vs all tokens | tokens | on target | s/question | KV MB |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in cells:
            if c["task"] != task:
                continue
            ci = c.get("ci95") or (float("nan"), float("nan"))
            keep = "own" if c["keep"] is None else c["keep"]
            on = "" if c.get("on_target") is None else f"{c['on_target']:.2f}"
            sec = "" if c.get("seconds") is None else f"{c['seconds']:.3f}"
            lines.append(
                f"| {c['method']} | {keep} | {c['accuracy']:.3f} | [{ci[0]:.3f}, {ci[1]:.3f}] | "
                f"{_diff(c.get('vs_random'))} | {_diff(c.get('vs_all_tokens'))} | {c['tokens']:.1f} | {on} | {sec} | "
                f"{c['kv_bytes'] / 2**20:.2f} |"
            )
        lines.append("")
    text = "\n".join(lines)
    (out / "scenes.md").write_text(text)
    return text
