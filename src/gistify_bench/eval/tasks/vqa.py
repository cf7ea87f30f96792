"""Visual question answering with the small VLM (gistify_bench.vlm): visual-token reducers at a budget.

"easyvqa" (one shape per image) and "easyvqa-4" (four shapes, the question about one of them): held-out easy-vqa
test questions (gistify_bench.vlm.vqa), on the shipped gistvlm weights; "scenes" and "labels": generated images
with several objects or printed words, the question naming one (gistify_bench.vlm.scenes), on the gistvlm-scenes
weights. Every vision method of gistify (gistify.methods("vision")) at each keep
fraction, and recover at its own dynamic budget (keep=own), inside the trained VLM through `gistify.reduce`.
Greedy answers; right when the first word is the answer. Per question: the prediction, whether it is right, the
visual tokens kept and, on composites, the share of the kept tokens that show the asked object (`on_target`):
what question guidance is for, measured apart from whether the model can use it. On the question-dependent
tasks a ground-truth control runs beside the methods (method "oracle"): exactly the asked object's tokens kept
(its quadrant on easyvqa-4, the cells its box covers on scenes/labels), so a method's loss can be split into
choosing the wrong tokens and the model failing on the right ones. "recover-code" is recover in the released
code's mode (the registered recover runs in the paper's).

Cells are run by gistify_bench.eval.cells.run_grid (the text tasks' layout: <out>/vision/<task>/<model>/<method>/
keep=<k>/records.jsonl + metrics.json), and <out>/vision/accuracy.json gathers every cell for the vision report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gistify_bench.eval.task import CellTask, register
from gistify_bench.options import with_params

KEEPS = (0.5, 0.25, 0.1, 0.05)  # the accuracy table's budgets (keep 1 is the "none" cell)
MODEL = "gistvlm"  # the cells' model folder
SCENES_MODEL = "gistvlm-scenes"  # the generated tasks' model (weights gistify_bench/vlm/gistvlm-scenes.*)
BATCH = 25
CONTROL = "oracle"  # the ground-truth control's cell: exactly the asked object's tokens
VARIANTS = {"recover-code": ("recover", {"mode": "code"})}  # cells of a registered method with other options
# (any method also takes parameters in its name: `recover[text_share=0.5]`, gistify_bench.options.with_params)


def vision_methods() -> list[str]:
    """Every registered visual-token reducer."""
    import gistify

    return list(gistify.methods("vision"))


SCENES_WEIGHTS: Path | None = None  # other weights for the generated tasks (the vision CLI's --weights)
DEVICE = "cpu"  # where the VLM runs (the vision CLI's --device)


def load_vlm(kind: str = "easyvqa"):
    """The VLM a task runs on: the shipped gistvlm, or gistvlm-scenes for the generated tasks."""
    from gistify_bench.vlm.model import WEIGHTS, GistVLM

    path = (SCENES_WEIGHTS or WEIGHTS.with_name(f"{SCENES_MODEL}.safetensors")) if kind in SCENE_TASKS else None
    # bfloat16: the dtype the projector was trained against (and the CPU's fast path)
    return GistVLM.from_pretrained(path, dtype=torch.bfloat16).to(DEVICE)


def target_cells(example) -> torch.Tensor | None:
    """(196,) bool: the cells that show the asked object (None for single images)."""
    from gistify_bench.vlm.model import quadrant_cells

    if example.target is None:
        return None
    return quadrant_cells() == example.target if isinstance(example.target, int) else example.target


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


def on_target(reduction, inside: torch.Tensor) -> float:
    """The share of an image's reduced tokens that show the asked object: each output token counts by the
    fraction of the cells it stands for (its sources) that lie on it (`inside`: (196,) bool). All 196 tokens:
    the object's share of the image (0.25 for a composite's quadrant)."""
    return sum(inside[s].float().mean().item() for s in reduction.sources) / len(reduction.sources)


@dataclass
class VQA(CellTask):
    kind: str = "easyvqa"  # gistify_bench.vlm.vqa.examples's task: "easyvqa" or "easyvqa-4"
    family = "vision"
    name = "vqa"

    def examples(self, n: int, seed: int = 1) -> list[Question]:
        from gistify_bench.vlm import scenes, vqa

        source = scenes if self.kind in SCENE_TASKS else vqa
        return [Question(f"{seed}-{i}", e) for i, e in enumerate(source.examples(self.kind, "test", n, seed=seed))]

    def cells(self, methods: list[str], keeps: list[float]) -> list[tuple[str, float | None]]:
        """The full-token baseline, the ground-truth control (question-dependent tasks), every method at every
        keep, and recover's own budget (when recover runs)."""
        control = [(CONTROL, None)] if self.kind != "easyvqa" and CONTROL in methods else []
        grid = [(m, k) for m in methods if m not in ("none", CONTROL) for k in keeps if k < 1]
        return [("none", 1.0)] + control + grid + ([("recover", None)] if "recover" in methods else [])

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
            inside = [target_cells(e) for e in examples]
            start = time.perf_counter()
            if method == "none":
                preds = answers(vlm, x)
                kept = [x.features.shape[1]] * len(part)
                target = [c.float().mean().item() if c is not None else None for c in inside]
            elif method == CONTROL:
                vlm.token_reducer = lambda feats, _x, cells=inside: [f[c] for f, c in zip(feats, cells)]
                try:
                    preds = answers(vlm, x)
                finally:
                    vlm.token_reducer = None
                kept = [int(c.sum()) for c in inside]
                target = [1.0] * len(part)
            else:
                name, options = VARIANTS.get(method) or with_params(method)
                with gistify.reduce(vlm, name, keep=keep, **options) as session:
                    preds = answers(vlm, x)
                kept = list(session.tokens_out)
                target = [on_target(r[0], c) if c is not None else None for r, c in zip(session.reductions, inside)]
            # the batch's wall time (reducer, prefill and two decoding steps) shared out per question
            seconds = (time.perf_counter() - start) / len(part)
            for q, e, p, k, t in zip(part, examples, preds, kept, target):
                if q.id in wanted:
                    records.append({
                        "id": q.id, "question": e.question, "answer": e.answer, "prediction": p,
                        "correct": vqa.correct(p, e.answer), "tokens": int(k),
                        "on_target": t if self.kind != "easyvqa" else None, "seconds": seconds,
                    })  # fmt: skip
        return records

    def summarize(self, records: list[dict]) -> dict:
        right = [r["correct"] for r in records]
        target = [r["on_target"] for r in records if r.get("on_target") is not None]
        seconds = [r["seconds"] for r in records if "seconds" in r]
        return {
            "accuracy": sum(right) / len(right),
            "tokens": sum(r["tokens"] for r in records) / len(records),
            "on_target": sum(target) / len(target) if target else None,
            "seconds": sum(seconds) / len(seconds) if seconds else None,
        }

    def run(self, task_name: str, methods, keeps, n: int, out: Path, seed: int = 1, show_progress: bool = True):
        """Every cell on `n` questions (runner.run sends vision tasks here), then accuracy.json refreshed."""
        from gistify.progress import progress_bar
        from gistify_bench.eval.cells import run_grid

        vlm = load_vlm(self.kind)
        questions = self.examples(n, seed)
        default = vision_methods() + ([CONTROL, *VARIANTS] if self.kind in SCENE_TASKS else [])
        cells = self.cells(list(methods or default), list(keeps or KEEPS))
        # the encoded batches, each with its questions (ids): every cell reuses them
        encoded = [(questions[j * BATCH : (j + 1) * BATCH], x) for j, (_, x) in
                   enumerate(batches(vlm, [q.example for q in questions]))]  # fmt: skip
        with torch.no_grad(), progress_bar(len(cells), task_name, show_progress) as advance:

            def evaluate(method, keep, todo):
                return self.evaluate(vlm, encoded, method, keep, todo)

            model = SCENES_MODEL if self.kind in SCENE_TASKS else MODEL
            results = run_grid(self, task_name, cells, questions, model, out, evaluate, advance)
        for r in results:
            print(f"{task_name} {r['method']} keep={r['keep']}: {r['accuracy']:.3f}, {r['tokens']:.1f} tokens, "
                  f"{r['on_target']}")  # fmt: skip
        if self.kind in SCENE_TASKS:
            write_comparison(Path(out) / self.family, n, seed)
        else:
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


@torch.no_grad()
def selection(vlm, task: str, methods: list[str], keeps: list[float], n: int, seed: int = 1,
              split: str = "test") -> list[dict]:  # fmt: skip
    """Which tokens each method keeps, without answering (the reducers alone: cheap): per (method, keep) the mean
    share of the kept tokens on the asked object (on_target, precision) and the share of the object's cells kept
    as tokens of their own (recall; merged tokens are not counted), on the first n questions of `task`'s `split`
    ("dev" to choose a method's settings, "test" to report)."""
    import gistify
    from gistify_bench.vlm import scenes

    examples = scenes.examples(task, split, n, seed=seed)
    rows = []
    for method in methods:
        name, options = VARIANTS.get(method) or with_params(method)
        for keep in keeps:
            precision, recall, tokens, split = [], [], [], []
            for part, x in batches(vlm, examples):
                inside = [target_cells(e) for e in part]
                with gistify.reduce(vlm, name, keep=keep, **options) as session:
                    vlm.token_reducer(x.features, x)
                for r, c in zip(session.reductions, inside):
                    kept = torch.zeros_like(c)
                    kept[r[0].kept] = True  # tokens kept as they were (a merged token keeps no cell whole)
                    precision.append(on_target(r[0], c))
                    recall.append((kept & c).sum().item() / c.sum().item())
                    tokens.append(r[0].n_out)
                    if "k_t" in r[0].info:  # recover: its budget's split between visual, text and merged tokens
                        split.append([r[0].info["k_v"], r[0].info["k_t"], r[0].info["m"] + r[0].info["extra"]])
            rows.append({"task": task, "method": method, "keep": keep, "n": n, "tokens": sum(tokens) / n,
                         "on_target": sum(precision) / n, "recall": sum(recall) / n})  # fmt: skip
            if split:
                rows[-1]["visual_text_merged"] = [round(sum(c) / len(c), 2) for c in zip(*split)]
            print(f"{task} {method} keep={keep}: on target {rows[-1]['on_target']:.3f}, "
                  f"object cells kept {rows[-1]['recall']:.3f}", flush=True)  # fmt: skip
    return rows


def write_comparison(folder: Path, n: int | None = None, seed: int = 1) -> Path:
    """<folder>/scenes.json from every cell of the generated tasks under `folder`: per (task, method, keep) the
    accuracy with its 95% interval, the paired difference against `random` at the same keep (and against all
    tokens) on the same questions, tokens kept, the KV cache they take, on_target and seconds per question."""
    import json

    from gistify_bench.eval.cells import read_records, write_json
    from gistify_bench.machine import machine
    from gistify_bench.stats import interval95, paired

    rows = []
    for task in SCENE_TASKS:
        cells = {}
        for p in sorted(folder.glob(f"{task}/{SCENES_MODEL}/*/keep=*/metrics.json")):
            m = json.loads(p.read_text())
            done = read_records(p.with_name("records.jsonl"))
            m["by_id"] = {i: float(r["correct"]) for i, r in done.items()}
            cells[(m["method"], m["keep"])] = m
        full = cells.get(("none", 1.0))
        for (_, keep), m in cells.items():
            right = m["by_id"]
            row = {k: m.get(k) for k in ("task", "method", "keep", "n", "accuracy", "tokens", "on_target", "seconds")}
            row["ci95"] = interval95(list(right.values()))
            row["kv_bytes"] = kv_bytes(m["tokens"])
            for base, ref in (("random", cells.get(("random", keep))), ("all_tokens", full)):
                if ref is not None and ref is not m:
                    ids = sorted(set(right) & set(ref["by_id"]))
                    row[f"vs_{base}"] = paired([right[i] for i in ids], [ref["by_id"][i] for i in ids])
            rows.append(row)
    rows.sort(key=lambda r: (SCENE_TASKS.index(r["task"]), r["method"] != "none", r["method"] != CONTROL,
                             r["method"], -(r["keep"] or 0)))  # fmt: skip
    return write_json(
        folder / "scenes.json", {"machine": machine(), "n": n, "seed": seed, "split": "test", "cells": rows}, 1
    )


def kv_bytes(visual_tokens: float, prompt_tokens: int = 16) -> float:
    """The KV cache of SmolLM2-135M (30 layers, 3 KV heads of 64, bfloat16) over the visual tokens and a typical
    prompt: 2 * 30 * 3 * 64 * 2 bytes per token."""
    return (visual_tokens + prompt_tokens) * 2 * 30 * 3 * 64 * 2


TASK_NAMES = ("easyvqa", "easyvqa-4")
SCENE_TASKS = ("scenes", "labels")  # generated, question-dependent (gistify_bench.vlm.scenes)
for _name in (*TASK_NAMES, *SCENE_TASKS):
    register(_name, VQA(_name))
