"""Dev check of `reinforce`'s query on cloze questions over the "train" articles (never the "eval" ones).

    python experiments/reinforce_qa_dev.py N '[{"query": "max"}, {"query": "vote"}]'

For each config, the fraction of N train-split cloze questions (the qa task's construction, 1k tokens)
whose answer survives compression at keep 0.5, 0.33, 0.2 and 0.1. Used to choose query="vote" (then with the
first three keeps) and alpha=0.95.
"""

import json
import sys

import gistify
from gistify_bench.eval.task import found
from gistify_bench.eval.tasks.wiki import ClozeQA

n, configs = int(sys.argv[1]), json.loads(sys.argv[2])
examples = ClozeQA(length=1024, split="train").examples(n, seed=0)
for config in configs:
    params = dict(config)
    method = params.pop("method", "reinforce")
    row = []
    for keep in (0.5, 0.33, 0.2, 0.1):
        kept = [
            found(ex.answers, gistify.compress(ex.context, ex.question, keep=keep, method=method, **params).text, False)
            for ex in examples
        ]
        row.append(f"keep {keep}: {sum(kept):.0f}/{n}")
    print(config, " | ".join(row), flush=True)
