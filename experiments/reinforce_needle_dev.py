"""Dev check of `reinforce` on RULER-style needles built from the "train" articles (never the "eval" ones, which the
benchmark's needle tasks draw from): how many of the asked values survive compression.

    python experiments/reinforce_needle_dev.py [CONFIGS] [--kinds multivalue,multikey,single] [--n 16]
        [--keep 0.1] [--length 1024]

CONFIGS is a JSON list of method parameters ("method" defaults to reinforce-fast; "name" labels the row); without
it, the list in DEFAULT. The needles are the benchmark's (gistify_bench.eval.tasks.needle.Needle with
split="train"), budgets in the reader's tokens as the benchmark counts them. The score is the survival of the
asked values in the compressed text (the fraction of a multi-value needle's four values; 0 or 1 otherwise), which
bounds what a reader can answer: about 1 s per (example, config) on one thread. With `--reader`, also the
benchmark's reader's score on the compressed text (its prompt and scoring; about 3 s more per answer).

Used to choose alpha=0.95 (docs/methods.md §1.2, "Propagation"):

    python experiments/reinforce_needle_dev.py '[{"name": "alpha .85", "alpha": 0.85},
        {"name": "alpha .9", "alpha": 0.9}, {"name": "alpha .95", "alpha": 0.95},
        {"name": "alpha .98", "alpha": 0.98}]' --keep 0.1,0.2
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

DEFAULT = [
    {"name": "reinforce-fast (default)"},
    {"name": "reinforce (full)", "method": "reinforce"},
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="?", default=None, help="JSON list of configs (default: DEFAULT)")
    p.add_argument("--kinds", default="multivalue,multikey,single")
    p.add_argument("--n", type=int, default=16, help="examples per kind")
    p.add_argument("--keep", default="0.1", help="comma-separated keeps")
    p.add_argument("--length", type=int, default=1024, help="haystack length in reader tokens")
    p.add_argument("--reader", action="store_true", help="also score the reader's answers (about 3 s per answer)")
    args = p.parse_args()
    torch.set_num_threads(1)
    configs = json.loads(args.configs) if args.configs else DEFAULT
    keeps = [float(k) for k in args.keep.split(",")]

    from gistify.text.scorer import Scorer
    from gistify_bench.eval.reader import Reader
    from gistify_bench.eval.runner import gistify_compressor
    from gistify_bench.eval.tasks.needle import Needle

    reader = Reader.load()
    scorer = Scorer(reader.model, reader.tokenizer)
    rows, answered = {}, {}
    for kind in args.kinds.split(","):
        task = Needle(kind=kind, length=args.length, split="train")
        examples = task.examples(args.n, seed=0)
        for cfg in configs:
            params = {k: v for k, v in cfg.items() if k != "name"}
            name = cfg.get("name", json.dumps(params, sort_keys=True))
            compress = gistify_compressor(params.pop("method", "reinforce-fast"), reader, scorer, **params)
            for keep in keeps:
                texts = [compress(ex.context, ex.question, keep).text for ex in examples]
                found = [task.survival(ex, t) for ex, t in zip(examples, texts)]
                rows[kind, name, keep] = statistics.mean(found)
                line = f"{kind:<11} {name:<40} keep {keep:g}: survival {rows[kind, name, keep]:.3f}"
                if args.reader:
                    answered[kind, name, keep] = statistics.mean(
                        task.evaluate(reader, ex, t)["score"] for ex, t in zip(examples, texts)
                    )
                    line += f", reader {answered[kind, name, keep]:.3f}"
                print(line, flush=True)
    print(f"\nsurvival of the asked values, {args.n} examples per kind, {args.length}-token haystacks (train articles)")
    for (kind, name, keep), v in rows.items():
        reader_score = f", reader {answered[kind, name, keep]:.3f}" if args.reader else ""
        print(f"{kind:<11} {name:<40} keep {keep:g}: {v:.3f}{reader_score}")


if __name__ == "__main__":
    main()
