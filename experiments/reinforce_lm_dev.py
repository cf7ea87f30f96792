"""Dev check of `reinforce`'s no-question prior on the lm task's construction, over the "dev" and "train" articles
(never the "eval" ones, which the benchmark's lm-1k draws from).

    python experiments/reinforce_lm_dev.py [CONFIGS] [--dev 4] [--train 8] [--keep 0.5,0.33,0.2,0.1] [--cache F]

CONFIGS is a JSON list of method parameters ("method" defaults to reinforce; "name" labels the row); without it,
the list in DEFAULT. The windows are ContinuationLM's (1024 context tokens, then a 128-token continuation the
compressor never sees), `--dev` of them from the dev articles and `--train` from the train articles, and each
compressed context is scored as lm-1k scores it: ContinuationLM.evaluate with the benchmark's reader (the
continuation's perplexity), the compressors built by the runner's gistify_compressor (budgets in the reader's
tokens). The table gives the median and mean perplexity per config and keep, and on how many windows each config
beats truncation's head (the benchmark's `truncate`) and its tail. `--cache` (JSON lines, keyed by the parameters
as given, so valid only for the code that wrote it) keeps every measured perplexity, so configs can be added run
by run. About 7 s a (window, config, keep) on one thread.

Used to choose `recency=128` (docs/methods.md §1.2, "The no-question prior"):

    python experiments/reinforce_lm_dev.py --cache /tmp/lm_dev.jsonl     # DEFAULT on 12 windows
    python experiments/reinforce_lm_dev.py '[{"name": "truncate head", "method": "truncate"},
        {"name": "truncate tail", "method": "truncate", "side": "tail"}, {"name": "uniform", "recency": 0},
        {"name": "recency 128", "recency": 128}, {"name": "recency 256", "recency": 256}]' --train 16 --cache ...
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

DEFAULT = [
    {"name": "truncate head", "method": "truncate"},
    {"name": "truncate tail", "method": "truncate", "side": "tail"},
    {"name": "uniform (old default)", "recency": 0},
    {"name": "tail 32", "tail_tokens": 32, "recency": 0},
    {"name": "tail 64", "tail_tokens": 64, "recency": 0},
    {"name": "tail 128", "tail_tokens": 128, "recency": 0},
    {"name": "recency 32", "recency": 32},
    {"name": "recency 64", "recency": 64},
    {"name": "recency 128 (default)", "recency": 128},
    {"name": "recency 256", "recency": 256},
    {"name": "recency 512", "recency": 512},
    {"name": "recency 1024", "recency": 1024},
    {"name": "tail 64 x recency 512", "tail_tokens": 64, "recency": 512},
]


def windows(n_dev: int, n_train: int) -> list:
    from gistify_bench.eval.tasks.wiki import ContinuationLM

    out = []
    for split, n in (("dev", n_dev), ("train", n_train)):
        for ex in ContinuationLM(length=1024, continuation=128, split=split).examples(n, seed=0) if n else []:
            ex.id = f"{split}-{ex.id}"
            out.append(ex)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("configs", nargs="?", default=None, help="JSON list of configs (default: DEFAULT)")
    p.add_argument("--dev", type=int, default=4, help="windows from the dev articles")
    p.add_argument("--train", type=int, default=8, help="windows from the train articles")
    p.add_argument("--keep", default="0.5,0.33,0.2,0.1")
    p.add_argument("--cache", type=Path, default=None, help="JSON lines of measured perplexities, reused and extended")
    p.add_argument("--only-cached", action="store_true", help="print the table from the cache; measure nothing")
    args = p.parse_args()
    torch.set_num_threads(1)
    configs = json.loads(args.configs) if args.configs else DEFAULT
    keeps = [float(k) for k in args.keep.split(",")]

    from gistify.text.scorer import Scorer
    from gistify_bench.eval.reader import Reader
    from gistify_bench.eval.runner import gistify_compressor
    from gistify_bench.eval.tasks.wiki import ContinuationLM

    task = ContinuationLM()
    examples = windows(args.dev, args.train)
    done: dict[tuple, float] = {}
    if args.cache and args.cache.is_file():
        for line in args.cache.read_text().splitlines():
            r = json.loads(line)
            done[(r["id"], r["config"], r["keep"])] = r["ppl"]
    label = {}
    for cfg in configs:
        params = {k: v for k, v in cfg.items() if k != "name"}
        key = json.dumps(params, sort_keys=True)
        label[key] = cfg.get("name", key)
    todo = [
        (ex, key, keep) for ex in examples for key in ["none", *label] for keep in ([1.0] if key == "none" else keeps)
    ]
    todo = [t for t in todo if (t[0].id, t[1], t[2]) not in done]
    if todo and not args.only_cached:
        reader = Reader.load()
        scorer = Scorer(reader.model, reader.tokenizer)  # the embedded SmolLM2, as the benchmark's default scorer
        f = args.cache.open("a") if args.cache else None
        for i, (ex, key, keep) in enumerate(todo):  # window by window: the scorer's forward pass is shared
            if key == "none":
                text = ex.context
            else:
                params = json.loads(key)
                compress = gistify_compressor(params.pop("method", "reinforce"), reader, scorer, **params)
                text = compress(ex.context, ex.question, keep).text
            ppl = task.evaluate(reader, ex, text)["score"]
            done[(ex.id, key, keep)] = ppl
            if f:
                f.write(json.dumps({"id": ex.id, "config": key, "keep": keep, "ppl": ppl}) + "\n")
                f.flush()
            print(f"[{i + 1}/{len(todo)}] {ex.id} {label.get(key, key)} keep={keep}: {ppl:.2f}", flush=True)

    ids = [ex.id for ex in examples]
    full = [done.get((i, "none", 1.0)) for i in ids]
    if None not in full:
        print(f"\n{len(ids)} windows ({args.dev} dev, {args.train} train); uncompressed: median "
              f"{statistics.median(full):.2f}, mean {statistics.mean(full):.2f}")  # fmt: skip
    head = json.dumps({"method": "truncate"}, sort_keys=True)
    tail = json.dumps({"method": "truncate", "side": "tail"}, sort_keys=True)

    def wins(vals, ref, k):
        base = [done.get((i, ref, k)) for i in ids]
        return "-" if None in base else str(sum(v < b for v, b in zip(vals, base)))

    print(f"\n{'config':<26}" + "".join(f"{f'keep {k:g}: median / mean / <head <tail':>40}" for k in keeps))
    for key, name in label.items():
        row = f"{name:<26}"
        for k in keeps:
            vals = [done.get((i, key, k)) for i in ids]
            if None in vals:
                row += f"{'(not measured)':>40}"
                continue
            beats = f"{wins(vals, head, k)} {wins(vals, tail, k)}"
            cell = f"{statistics.median(vals):.2f} / {statistics.mean(vals):.2f} / {beats}"
            row += f"{cell:>40}"
        print(row)
    print(f"(<head, <tail: of the {len(ids)} windows, how many have a lower perplexity than truncate head, tail)")


if __name__ == "__main__":
    main()
