"""Reports from a results directory: a Markdown table and PNG plots of accuracy against tokens kept.

Reads only the metrics.json files that the runner wrote, so a report can be remade at any time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

COLUMNS = [
    ("accuracy", "score", "{:.2f}"),
    ("agreement", "agree", "{:.2f}"),
    ("survival", "answer kept", "{:.2f}"),
    ("keep_ratio", "kept", "{:.2f}"),
    ("compress_s_per_1k", "compress s/1k", "{:.3f}"),
    ("prefill_s_median", "prefill s", "{:.3f}"),
    ("peak_rss_mb", "peak MB", "{:.0f}"),
]


def collect(out: Path) -> dict[tuple[str, str], list[dict]]:
    """{(task, reader): [metrics of each cell]} from <out>/<task>/<reader>/<method>/keep=<k>/metrics.json."""
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


def plot(cells: dict[tuple[str, str], list[dict]], path: Path) -> Path:
    """One panel per task: accuracy against the achieved fraction of tokens kept, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(cells)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, key in zip(axes[0], keys):
        rows = cells[key]
        full = next((m for m in rows if m["method"] == "none"), None)
        for method in sorted({m["method"] for m in rows} - {"none"}):
            pts = sorted((m["keep_ratio"], m["accuracy"]) for m in rows if m["method"] == method)
            if full:
                pts.append((1.0, full["accuracy"]))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        if full:
            ax.axhline(full["accuracy"], color="grey", linestyle=":", label="uncompressed")
        metric = rows[0].get("metric", "accuracy")
        ax.set(title=f"{key[0]}", xlabel="fraction of tokens kept", ylabel=metric)
        if metric == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
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
    md.write_text(markdown(cells))
    return md, plot(cells, out / "accuracy.png")
