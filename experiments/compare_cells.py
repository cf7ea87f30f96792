"""Paired comparison of bench cells with a reference method's, on the examples both recorded (a cell stopped early
compares on its first examples).

    python experiments/compare_cells.py ROOT [REFERENCE [REF_ROOT]]   # default reinforce-fast, REF_ROOT = ROOT
    python experiments/compare_cells.py docs/results/issue28 reinforce-fast docs/results/issue14

For every cell ROOT/text/TASK/smollm2-135m-instruct/METHOD/keep=K other than REFERENCE's and "none", prints n, the
mean score of METHOD and of REFERENCE on the same example ids, and the answers' survival of each.
"""

import glob
import json
import os
import statistics
import sys


def mean(rs: dict, ids: list, key: str) -> float:
    return statistics.mean(float(rs[i].get(key) or 0) for i in ids)


def records(path: str) -> dict:
    with open(path) as f:
        return {r["id"]: r for r in map(json.loads, f)}


root, ref = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "reinforce-fast"
ref_root = sys.argv[3] if len(sys.argv) > 3 else root
for cell in sorted(glob.glob(f"{root}/text/*/smollm2-135m-instruct/*/keep=*")):
    method, keep = cell.split("/")[-2], cell.split("keep=")[1]
    task = cell.split("/text/")[1].split("/")[0]
    other = f"{ref_root}/text/{task}/smollm2-135m-instruct/{ref}/keep={keep}/records.jsonl"
    if method in (ref, "none") or not os.path.exists(other):
        continue
    new, old = records(f"{cell}/records.jsonl"), records(other)
    ids = [i for i in new if i in old]
    if not ids:
        continue

    print(
        f"{task:22} {method:32} keep {keep}: n={len(ids)} score {mean(new, ids, 'score'):.3f} vs {ref} "
        f"{mean(old, ids, 'score'):.3f} (survival {mean(new, ids, 'survival'):.2f} vs {mean(old, ids, 'survival'):.2f})"
    )
