"""Long inputs (issue 14, item 8): time and peak memory of `reinforce` from 1k to 100k tokens of real prose.

Each length runs in a fresh process (so its peak RSS is its own): the scorer's forward pass (Scorer.stats, the
part no graph change touches), the affinity graph (banded, and all pairs up to 16k tokens for comparison), the
propagation, and the whole compress at keep 0.2 (its forward pass served from the scorer's cache, so
"compress, rest" is everything but the forward pass). Text: the cached Wikipedia articles
($GISTIFY_HOME/data/wikipedia, sorted by name) joined until the length is reached.

    python experiments/long_inputs.py                 # all lengths, markdown table on stdout
    python experiments/long_inputs.py --one 4000      # one length, one JSON line (what the driver runs)

`--threads` (default 1) sets torch's threads: on the shared 2-core machine two threads ran the forward pass
3.5x slower than one (OpenMP waits under load).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

LENGTHS = (1000, 4000, 16000, 100000)
ALL_PAIRS_UP_TO = 16000


def corpus(n_tokens: int, tokenizer) -> str:
    home = Path(os.environ.get("GISTIFY_HOME", Path.home() / ".cache" / "gistify"))
    pieces, total = [], 0
    for p in sorted((home / "data" / "wikipedia").glob("*.txt")):
        t = p.read_text(encoding="utf-8")
        pieces.append(t)
        total += len(tokenizer(t, add_special_tokens=False).input_ids)
        if total >= n_tokens:
            break
    text = "\n\n".join(pieces)
    ids = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if len(ids.input_ids) > n_tokens:
        text = text[: ids.offset_mapping[n_tokens][0]]
    return text


def one(n_tokens: int, threads: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)

    import gistify
    from gistify.graph import affinity_graph, personalized_pagerank
    from gistify.text.pipeline import _shared_scorer

    scorer = _shared_scorer(None)
    text = corpus(n_tokens, scorer.tokenizer)
    m = gistify.get_method("reinforce")
    row = {"tokens": len(scorer.tokenizer(text, add_special_tokens=False).input_ids), "chars": len(text)}
    t = time.perf_counter()
    stats = scorer.stats(text, layer=m.layer)
    row["forward_s"] = time.perf_counter() - t
    z = F.normalize(stats.hidden - stats.hidden.mean(0), dim=-1)
    t = time.perf_counter()
    graph = affinity_graph(z, m.k, m.sigma)
    row["graph_s"] = time.perf_counter() - t
    prior = torch.full((len(z),), 1.0 / len(z))
    t = time.perf_counter()
    personalized_pagerank(graph, prior, m.alpha, m.iterations)
    row["propagation_s"] = time.perf_counter() - t
    if row["tokens"] <= ALL_PAIRS_UP_TO:
        t = time.perf_counter()
        dense = affinity_graph(z, m.k, m.sigma, banded=False)
        row["graph_all_pairs_s"] = time.perf_counter() - t
        row["same_graph"] = bool(
            torch.equal(dense.indices(), graph.indices()) and torch.allclose(dense.values(), graph.values())
        )
    t = time.perf_counter()
    r = gistify.compress(text, "What is it about?", keep=0.2, method=m, scorer=scorer)
    row["compress_rest_s"] = time.perf_counter() - t
    row["tokens_out"] = r.tokens_out
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", type=int)
    ap.add_argument("--lengths", type=int, nargs="*", default=list(LENGTHS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.threads)), flush=True)
        return
    rows = []
    for n in args.lengths:
        cmd = [sys.executable, __file__, "--one", str(n), "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| tokens | forward s | graph s (banded) | graph s (all pairs) | same graph | propagation s "
          "| compress s (rest) | total ms / 1k tokens | graph+prop ms / 1k | peak RSS MB |")  # fmt: skip
    print("|---:|---:|---:|---:|:---:|---:|---:|---:|---:|---:|")
    for r in rows:
        k = r["tokens"] / 1000
        total = r["forward_s"] + r["compress_rest_s"]
        per_k = 1000 * (r["graph_s"] + r["propagation_s"]) / k
        print(
            f"| {r['tokens']} | {r['forward_s']:.1f} | {r['graph_s']:.2f} | {r.get('graph_all_pairs_s', math.nan):.2f} "
            f"| {r.get('same_graph', '-')} | {r['propagation_s']:.2f} | {r['compress_rest_s']:.2f} "
            f"| {1000 * total / k:.0f} | {per_k:.1f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
