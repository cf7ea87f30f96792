"""A candidate method against a recorded bench cell, on the same examples, reading only what changed: each example is
compressed by the reference method and by the candidate here; where the two texts are the same, the candidate's
score is the recorded reference score (the same reader, prompt and greedy decoding give the same answer); where
they differ, the benchmark's reader answers from the candidate's text. For changes that touch a few examples (a
bf16 trunk) this gives the n = 30 cell for a fraction of the reader's time.

    python experiments/paired_rereads.py ROOT TASKS KEEPS REFERENCE CANDIDATE_JSON [--n 30] [--out FILE]
    # e.g. docs/results/issue14 needle-multivalue-1k,qa-1k 0.1,0.33 reinforce-fast '{"precision": "bfloat16"}'

ROOT holds the reference cells (ROOT/text/TASK/smollm2-135m-instruct/REFERENCE/keep=K/records.jsonl). Prints
and writes (FILE, JSON) per cell: how many texts changed, the reference and candidate accuracy over all n, and
the scores on the changed examples.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from gistify.text.scorer import Scorer
from gistify_bench.eval.reader import Reader
from gistify_bench.eval.runner import gistify_compressor
from gistify_bench.eval.task import get_task


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("root")
    p.add_argument("tasks")
    p.add_argument("keeps")
    p.add_argument("reference")
    p.add_argument("candidate", help='JSON object: the candidate\'s parameters ("method" defaults to REFERENCE)')
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    torch.set_num_threads(1)
    params = json.loads(args.candidate)
    method = params.pop("method", args.reference)
    reader = Reader.load()
    scorer = Scorer(reader.model, reader.tokenizer)
    ref = gistify_compressor(args.reference, reader, scorer)
    cand = gistify_compressor(method, reader, scorer, **params)
    cells = []
    for name in args.tasks.split(","):
        task = get_task(name)
        for keep in (float(k) for k in args.keeps.split(",")):
            path = Path(args.root) / "text" / name / "smollm2-135m-instruct" / args.reference / f"keep={keep:g}"
            recorded = {r["id"]: r for r in map(json.loads, (path / "records.jsonl").read_text().splitlines())}
            before, after, changed = [], [], []
            for ex in task.examples(args.n, seed=0):
                old = recorded[ex.id]["score"]
                a, b = ref(ex.context, ex.question, keep).text, cand(ex.context, ex.question, keep).text
                new = old if a == b else task.evaluate(reader, ex, b)["score"]
                if a != b:
                    changed.append({"id": ex.id, "reference": old, "candidate": new})
                before.append(old)
                after.append(new)
            cell = {"task": name, "keep": keep, "n": len(before), "changed": len(changed),
                    "reference": statistics.mean(before), "candidate": statistics.mean(after),
                    "changed_examples": changed}  # fmt: skip
            cells.append(cell)
            print(f"{name} keep {keep:g}: {len(changed)}/{len(before)} texts changed; accuracy {cell['reference']:.3f}"
                  f" -> {cell['candidate']:.3f}", flush=True)  # fmt: skip
            if args.out:
                args.out.write_text(json.dumps({"reference": args.reference, "candidate": [method, params],
                                                "cells": cells}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
