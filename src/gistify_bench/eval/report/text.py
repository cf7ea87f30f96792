"""The text tasks' report: a Markdown table and PNG plots of accuracy against tokens kept, in <out>/text/.

Reads only the metrics.json files that the runner wrote, so a report can be remade at any time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

COLUMNS = [
    ("accuracy", "score", "{:.2f}"),
    ("accuracy_ci95", "95% interval", "[{0[0]:.2f}, {0[1]:.2f}]"),
    ("agreement", "agree", "{:.2f}"),
    ("survival", "answer kept", "{:.2f}"),
    ("keep_ratio", "kept", "{:.2f}"),
    ("compress_s_per_1k", "compress s/1k", "{:.3f}"),
    ("prefill_s_median", "prefill s", "{:.3f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
    ("worker_peak_rss_mb", "peer worker peak MB", "{:.0f}"),
]


def collect(out: Path) -> dict[tuple[str, str], list[dict]]:
    """{(task, reader): [metrics of each cell]} from <out>/<task>/<reader>/<method>/keep=<k>/metrics.json (`out`: the
    text family's folder)."""
    cells = defaultdict(list)
    for p in sorted(out.glob("*/*/*/keep=*/metrics.json")):
        m = json.loads(p.read_text())
        cells[(m["task"], m["reader"])].append(m)
    return dict(cells)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def markdown(cells: dict[tuple[str, str], list[dict]]) -> str:
    parts = []
    for (task, reader), rows in sorted(cells.items()):
        rows = sorted(rows, key=lambda m: (m["method"] != "none", m["method"], -m["keep"]))
        metric = rows[0].get("metric", "accuracy")
        parts.append(f"### {task} (reader {reader}, n={rows[0]['n']}; score = {metric})\n")
        parts.append("| method | keep | " + " | ".join(c[1] for c in COLUMNS) + " |")
        parts.append("|---|---|" + "---|" * len(COLUMNS))
        for m in rows:
            cols = " | ".join(_fmt(m.get(k), spec) for k, _, spec in COLUMNS)
            parts.append(f"| {m['method']} | {m['keep']:g} | {cols} |")
        parts.append("")
    return "\n".join(parts)


PEERS = ("llmlingua", "longllmlingua")


def _score(m: dict) -> str:
    """A cell's score with its 95% interval where the cell has one."""
    ci = m.get("accuracy_ci95")
    return _fmt(m["accuracy"], "{:.2f}") + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def summary(cells: dict[tuple[str, str], list[dict]]) -> str:
    """One line per (task, method): the score at each keep with its 95% interval, the uncompressed score
    first."""
    keeps = sorted({m["keep"] for rows in cells.values() for m in rows if m["method"] != "none"}, reverse=True)
    lines = ["| task (reader, n) | method | " + " | ".join(f"keep {k:g}" for k in keeps) + " |"]
    lines.append("|---|---|" + "---|" * len(keeps))
    for (task, reader), rows in sorted(cells.items()):
        full = next((m for m in rows if m["method"] == "none"), None)
        n = max(m["n"] for m in rows)
        label = f"{task} ({reader}, n={n})"
        if full:
            lines.append(f"| {label} | uncompressed | " + " | ".join(_score(full) for _ in keeps) + " |")
        for method in sorted({m["method"] for m in rows} - {"none"}):
            by_keep = {m["keep"]: m for m in rows if m["method"] == method}
            scores = [_score(by_keep[k]) if k in by_keep else "" for k in keeps]
            fewer = sorted({m["n"] for m in by_keep.values() if m["n"] != n})  # cells on fewer examples say so
            name = method + (f" (n={', '.join(map(str, fewer))})" if fewer else "")
            lines.append(f"| {label} | {name} | " + " | ".join(scores) + " |")
    return "\n".join(lines) + "\n"


SHARE_KEEPS = (0.33, 0.1)  # the budgets at which a method must keep 90% of the uncompressed score


def goal_check(cells: dict[tuple[str, str], list[dict]], method: str = "reinforce") -> list[str]:
    """The bars, checked from the results: `method` beats both LLMLingua variants at every budget on the
    needle and QA tasks, keeps >= 90% of the uncompressed score at keep 0.33 (issue 3) and at keep 0.1 (10x,
    issue 14), and compresses no slower than LongLLMLingua. One line per check, each saying pass or FAIL with the
    numbers."""
    out = []
    for (task, reader), rows in sorted(cells.items()):
        if not task.startswith(("needle", "qa")):
            continue
        label = f"{task} ({reader})"
        by = {(m["method"], m["keep"]): m for m in rows}
        full = by.get(("none", 1.0))
        for keep in sorted({k for (name, k) in by if name == method}, reverse=True):
            ours = by[(method, keep)]
            for peer in PEERS:
                if (peer, keep) in by:
                    a, b = ours["accuracy"], by[(peer, keep)]["accuracy"]
                    verdict = "pass" if a > b else "FAIL"
                    out.append(f"{verdict}: {label} keep {keep:g}: {method} {a:.2f} vs {peer} {b:.2f}")
            if keep in SHARE_KEEPS and full and full["accuracy"]:
                share = ours["accuracy"] / full["accuracy"]
                verdict = "pass" if share >= 0.9 else "FAIL"
                out.append(f"{verdict}: {label} keep {keep:g}: {method} keeps {share:.0%} of the uncompressed score")
        peer_rows = [m for m in rows if m["method"] == "longllmlingua"]
        ours_rows = [m for m in rows if m["method"] == method]
        if peer_rows and ours_rows:
            a = sum(m["compress_s_per_1k"] for m in ours_rows) / len(ours_rows)
            b = sum(m["compress_s_per_1k"] for m in peer_rows) / len(peer_rows)
            verdict = "pass" if a <= b else "FAIL"
            out.append(f"{verdict}: {label}: {method} {a:.2f} s/1k tokens vs longllmlingua {b:.2f} (same run)")
    return out


def plot(cells: dict[tuple[str, str], list[dict]], path: Path) -> Path:
    """One panel per task: accuracy against the achieved fraction of tokens kept, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(cells)
    # One colour per method across panels (a task without some method must not shift the others' colours).
    every = sorted({m["method"] for rows in cells.values() for m in rows} - {"none"})
    colour = {name: plt.get_cmap("tab20" if len(every) > 10 else "tab10")(i) for i, name in enumerate(every)}
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = cells[key]
        full = next((m for m in rows if m["method"] == "none"), None)
        for method in sorted({m["method"] for m in rows} - {"none"}):
            pts = sorted((m["keep_ratio"], m["accuracy"]) for m in rows if m["method"] == method)
            if full:
                pts.append((1.0, full["accuracy"]))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method, color=colour[method])
        if full:
            ax.axhline(full["accuracy"], color="grey", linestyle=":", label="uncompressed")
        metric = rows[0].get("metric", "accuracy")
        ax.set(title=f"{key[0]}", xlabel="fraction of tokens kept", ylabel=metric)
        if metric == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colour[name], marker="o", label=name) for name in every]
    handles.append(plt.Line2D([], [], color="grey", linestyle=":", label="uncompressed"))
    axes[0][-1].legend(handles=handles, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(out: Path) -> tuple[Path, Path]:
    cells = collect(out)
    if not cells:
        raise ValueError(f"no results under {out}; run `gistify bench TASK` first")
    md = out / "report.md"
    machines = sorted({m.get("machine", "not recorded") for rows in cells.values() for m in rows})
    checks = "".join(
        f"\n## Goal check ({method})\n\n" + "".join(f"- {c}\n" for c in lines)
        for method in ("reinforce", "reinforce-fast")
        if (lines := goal_check(cells, method))
    )
    md.write_text(
        "## Summary\n\n"
        + summary(cells)
        + checks
        + "\n## Every cell\n\n"
        + markdown(cells)
        + f"\nMachine: {'; '.join(machines)}\n"
    )
    return md, plot(cells, out / "accuracy.png")
