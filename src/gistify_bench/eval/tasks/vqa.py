"""Visual question answering with the small VLM (gistify_bench.vlm): visual-token reducers at a budget.

"easyvqa" (one shape per image) and "easyvqa-4" (four shapes, the question about one of them): held-out easy-vqa
test questions (gistify_bench.vlm.vqa); every vision method of gistify (gistify.methods("vision")) at each keep
fraction, and recover at its own dynamic budget (keep=own), inside the trained VLM through `gistify.reduce`.
Greedy answers; right when the first word is the answer. Per question: the prediction, whether it is right, the
visual tokens kept and, on composites, the share of the kept tokens that show the asked object (`on_target`):
what question guidance is for, measured apart from whether the model can use it.

Cells are run by gistify_bench.eval.cells.run_grid (the text tasks' layout: <out>/vision/<task>/<model>/<method>/
keep=<k>/records.jsonl + metrics.json), and <out>/vision/accuracy.json gathers every cell for the vision report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gistify_bench.eval.task import CellTask, register

KEEPS = (0.5, 0.25, 0.1, 0.05)  # the accuracy table's budgets (keep 1 is the "none" cell)
MODEL = "gistvlm"  # the cells' model folder
BATCH = 25


def vision_methods() -> list[str]:
    """Every registered visual-token reducer."""
    import gistify

    return list(gistify.methods("vision"))


def load_vlm():
    from gistify_bench.vlm.model import GistVLM

    # bfloat16: the dtype the projector was trained against (and the CPU's fast path)
    return GistVLM.from_pretrained(dtype=torch.bfloat16)


@dataclass(frozen=True)
class Question:
    """One held-out question (gistify_bench.vlm.vqa.Example) with the id its records carry."""

    id: str
    example: Any


def batches(vlm, examples: list, size: int = BATCH) -> list:
    """The examples' model inputs in batches, with the images encoded once (every configuration reuses them)."""
    out = []
    for j in range(0, len(examples), size):
        part = examples[j : j + size]
        x = vlm.inputs([e.image for e in part], [e.question for e in part])
        x.features = vlm.encode(x.pixel_values)
        out.append((part, x))
    return out


def answers(vlm, x) -> list[str]:
    ids = vlm.generate(x.pixel_values, x.input_ids, x.attention_mask, features=x.features, max_new_tokens=3)
    return [t.strip().split("\n")[0].strip().lower() for t in vlm.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def on_target(reduction, target: int) -> float:
    """The share of a composite's reduced tokens that show the asked object: each output token counts by the
    fraction of the cells it stands for (its sources) that lie in the asked quadrant. All 196 tokens: 0.25."""
    from gistify_bench.vlm.model import quadrant_cells

    inside = quadrant_cells() == target
    return sum(inside[s].float().mean().item() for s in reduction.sources) / len(reduction.sources)


@dataclass
class VQA(CellTask):
    kind: str = "easyvqa"  # gistify_bench.vlm.vqa.examples's task: "easyvqa" or "easyvqa-4"
    family = "vision"
    name = "vqa"

    def examples(self, n: int, seed: int = 1) -> list[Question]:
        from gistify_bench.vlm import vqa

        return [Question(f"{seed}-{i}", e) for i, e in enumerate(vqa.examples(self.kind, "test", n, seed=seed))]

    def cells(self, methods: list[str], keeps: list[float]) -> list[tuple[str, float | None]]:
        """The full-token baseline, every method at every keep, and recover's own budget (when recover runs)."""
        cells = [("none", 1.0)] + [(m, k) for m in methods if m != "none" for k in keeps if k < 1]
        return cells + ([("recover", None)] if "recover" in methods else [])

    def evaluate(self, vlm, encoded: list, method: str, keep: float | None, todo: list[Question]) -> list[dict]:
        """The records of the questions `todo` (a subset of the encoded batches') with `method` at `keep`."""
        import gistify
        from gistify_bench.vlm import vqa

        wanted = {q.id for q in todo}
        records = []
        for part, x in encoded:
            if not wanted & {q.id for q in part}:
                continue
            examples = [q.example for q in part]
            if method == "none":
                preds = answers(vlm, x)
                kept = [x.features.shape[1]] * len(part)
                target = [0.25] * len(part)
            else:
                with gistify.reduce(vlm, method, keep=keep) as session:
                    preds = answers(vlm, x)
                kept = list(session.tokens_out)
                target = [on_target(r[0], e.target) for r, e in zip(session.reductions, examples)]
            for q, e, p, k, t in zip(part, examples, preds, kept, target):
                if q.id in wanted:
                    records.append({
                        "id": q.id, "question": e.question, "answer": e.answer, "prediction": p,
                        "correct": vqa.correct(p, e.answer), "tokens": int(k),
                        "on_target": t if self.kind == "easyvqa-4" else None,
                    })  # fmt: skip
        return records

    def summarize(self, records: list[dict]) -> dict:
        right = [r["correct"] for r in records]
        target = [r["on_target"] for r in records if r.get("on_target") is not None]
        return {
            "accuracy": sum(right) / len(right),
            "tokens": sum(r["tokens"] for r in records) / len(records),
            "on_target": sum(target) / len(target) if target else None,
        }

    def run(self, task_name: str, methods, keeps, n: int, out: Path, seed: int = 1, show_progress: bool = True):
        """Every cell on `n` questions (runner.run sends vision tasks here), then accuracy.json refreshed."""
        from gistify.progress import progress_bar
        from gistify_bench.eval.cells import run_grid

        vlm = load_vlm()
        questions = self.examples(n, seed)
        cells = self.cells(list(methods or vision_methods()), list(keeps or KEEPS))
        # the encoded batches, each with its questions (ids): every cell reuses them
        encoded = [(questions[j * BATCH : (j + 1) * BATCH], x) for j, (_, x) in
                   enumerate(batches(vlm, [q.example for q in questions]))]  # fmt: skip
        with torch.no_grad(), progress_bar(len(cells), task_name, show_progress) as advance:

            def evaluate(method, keep, todo):
                return self.evaluate(vlm, encoded, method, keep, todo)

            results = run_grid(self, task_name, cells, questions, MODEL, out, evaluate, advance)
        for r in results:
            print(f"{task_name} {r['method']} keep={r['keep']}: {r['accuracy']:.3f}, {r['tokens']:.1f} tokens, "
                  f"{r['on_target']}")  # fmt: skip
        write_accuracy(Path(out) / self.family, n, seed)
        return results


def write_accuracy(folder: Path, n: int | None = None, seed: int = 1) -> Path:
    """<folder>/accuracy.json (what the vision report reads) from every VQA cell under `folder`: one record per
    (task, method, keep) with its accuracy, mean tokens kept, on_target and the per-question results."""
    import json

    from gistify_bench.eval.cells import read_records, write_json
    from gistify_bench.machine import machine

    order = {name: i for i, name in enumerate(TASK_NAMES)}
    cells = []
    for p in folder.glob(f"*/{MODEL}/*/keep=*/metrics.json"):
        m = json.loads(p.read_text())
        if m["task"] in order:
            done = read_records(p.with_name("records.jsonl"))
            m["correct"] = [r["correct"] for r in done.values()]
            cells.append(m)
    cells.sort(
        key=lambda m: (order[m["task"]], m["method"] != "none", m["keep"] is None, m["method"], -(m["keep"] or 0))
    )
    records = [
        {k: m[k] for k in ("task", "method", "keep", "n", "accuracy", "tokens", "correct", "on_target")} for m in cells
    ]
    n = n if n is not None else max((m["n"] for m in cells), default=0)
    return write_json(folder / "accuracy.json", {"machine": machine(), "n": n, "split": "test", "records": records}, 1)


TASK_NAMES = ("easyvqa", "easyvqa-4")
for _name in TASK_NAMES:
    register(_name, VQA(_name))
