"""How much of a multi-value needle can the reader list from a 10% context, when compression is perfect?

A control for issue 14's bar on needle-multivalue (90% of the uncompressed score at keep 0.1). It runs the
benchmark's reader and prompt on the benchmark's own examples (`needle-multivalue-1k`, seed 0, the eval split:
nothing here is tuned; it measures the reader, not a method) with contexts built from the example's ground
truth:

- `uncompressed`: the whole context (the bench's `none` cell, as a check);
- `needles only`: the four needle sentences, whole, in their order (about 5% of the tokens);
- `needles + head`: the four needle sentences whole and in place, the rest of the budget filled with the
  context's first paragraphs (truncation's head, cut at the budget), so the reader sees prose around them;
- `reinforce-fast`: the method's output at the same keep (the bench's cell, as a check);
- `reinforce-fast + whole needles`: that output with each surviving value replaced by its whole needle sentence
  (an oracle repair of fragmentation, over budget by the restored words; the fragment of the key phrase that
  was kept before the value stays);
- `reinforce-fast value lines`: that output without its lines that hold no surviving value (an oracle
  removal of the other fragments, under budget by them).

    python experiments/needle_reader_ceiling.py [--n 30] [--keep 0.1] [--length 1024] [--ways A,B]

Prints the mean score (the fraction of the four values the reader lists) per way and the values' survival.
About 3 s per (example, way) on one thread: 30 examples x 5 ways ~ 8 min.
"""

from __future__ import annotations

import argparse
import statistics

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--keep", type=float, default=0.1)
    p.add_argument("--length", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ways", default=None, help="comma-separated ways to run (default: all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from gistify.text.scorer import Scorer
    from gistify_bench.eval.reader import Reader
    from gistify_bench.eval.runner import gistify_compressor
    from gistify_bench.eval.tasks.needle import Needle

    reader = Reader.load()
    scorer = Scorer(reader.model, reader.tokenizer)
    task = Needle(kind="multivalue", length=args.length)
    compress = gistify_compressor("reinforce-fast", reader, scorer)

    def count(text: str) -> int:
        return len(reader.tokenizer(text, add_special_tokens=False).input_ids)

    def ways(ex) -> dict[str, str]:
        paras = ex.context.split("\n")
        needles = [q for q in paras if q.startswith("One of the special magic numbers for ")]
        budget = round(args.keep * count(ex.context))
        # needles + head: the needle paragraphs whole, in place, and the head of the other paragraphs to fill
        room = budget - sum(count(q) + 1 for q in needles)
        kept = []
        for q in paras:
            if q in needles:
                kept.append(q)
            elif room > 0:
                ids = reader.tokenizer(q, add_special_tokens=False).input_ids[:room]
                kept.append(reader.tokenizer.decode(ids))
                room -= len(ids) + 1
        out = compress(ex.context, ex.question, args.keep).text
        repaired = out
        for q in needles:
            value = q.rsplit(" ", 1)[-1].rstrip(".")
            if value in repaired and q not in repaired:
                repaired = repaired.replace(value, q, 1)
        lines = [line for line in out.split("\n") if any(v in line for v in ex.answers)]
        return {
            "uncompressed": ex.context,
            "needles only": "\n".join(needles),
            "needles + head": "\n".join(kept),
            "reinforce-fast": out,
            "reinforce-fast + whole needles": repaired,
            "reinforce-fast value lines": "\n".join(lines),
        }

    scores: dict[str, list[float]] = {}
    survival: dict[str, list[float]] = {}
    tokens: dict[str, list[int]] = {}
    for i, ex in enumerate(task.examples(args.n, seed=0)):
        for way, text in ways(ex).items():
            if args.ways and way not in args.ways.split(","):
                continue
            scores.setdefault(way, []).append(task.evaluate(reader, ex, text)["score"])
            survival.setdefault(way, []).append(task.survival(ex, text))
            tokens.setdefault(way, []).append(count(text))
        print(f"{i + 1}/{args.n}: " + ", ".join(f"{w} {statistics.mean(s):.3f}" for w, s in scores.items()), flush=True)
    print(f"\nneedle-multivalue-{args.length // 1024}k, n = {args.n}, keep {args.keep:g}: the reader's score")
    for way in scores:
        print(
            f"{way:<32} score {statistics.mean(scores[way]):.3f}  survival {statistics.mean(survival[way]):.3f}  "
            f"tokens {statistics.median(tokens[way]):.0f}"
        )


if __name__ == "__main__":
    main()
