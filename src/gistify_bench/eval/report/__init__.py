"""Reports from a results root, one section per family, each remade at any time from what the runner wrote:

- text (report.text): <out>/text/report.md and accuracy.png from the cells' metrics.json files;
- vision (report.vision): <out>/vision/report.md and accuracy.png from accuracy.json (gathered from the VQA cells)
  and speed.json;
- vist (report.vist): <out>/vist/report.md from the vist tasks' JSON results and the oracle probe's.

`write(out)` writes the section of every family that has results.
"""

from __future__ import annotations

from pathlib import Path

from gistify_bench.eval.report import text, vision, vist

__all__ = ["text", "vision", "vist", "write"]


def write(out: Path) -> dict[str, list[Path]]:
    """Every family's report under the root `out`: {family: [the files written]}; a ValueError if there is none."""
    out = Path(out)
    written: dict[str, list[Path]] = {}
    if text.collect(out / "text"):
        written["text"] = list(text.write(out / "text"))
    if (out / "vision" / "accuracy.json").is_file():
        vision.write_report(out / "vision")
        written["vision"] = [out / "vision" / "report.md", out / "vision" / "accuracy.png"]
    if any((out / "vist").glob("*.json")):
        vist.report(out / "vist")
        written["vist"] = [out / "vist" / "report.md"]
    if not written:
        raise ValueError(f"no results under {out}; run `gistify bench TASK --out {out}` first")
    return written
