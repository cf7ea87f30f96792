"""Throughput of `gistify compress-batch`: records per second for the local engine at 1 and 2 workers and for
Ray Data at 1 and 2 actors, and how many scorer forward passes a record costs.

    python -m gistify_bench.benches.batch --out docs/results/batch [--records 24] [--method reinforce]

Records are the openings (about 1,600 characters, one scorer window) of Wikipedia articles of the eval split
(gistify_bench.data), compressed to keep=0.3 without a question, as in offline corpus preparation. Each
configuration runs the whole job from a fresh output file, the way a user starts it: its total time includes
starting the workers or Ray and loading the scorer once per worker or actor; the steady rate counts the
second half of the records, so it is the engine's speed once started. On a small shared machine both move
with what else runs: the JSON records the load average before and after.

Forward passes are counted with a hook on the scorer model's forward, in the local engine with one worker
(in this process): the Ray actors and pool workers run the same Worker code, so they make the same calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import gistify
from gistify.batch import compress_batch

QUESTION = "What is it, and where does the name come from?"


def corpus(path: Path, n: int) -> int:
    """Write `n` records to `path` (JSONL); returns their number."""
    from gistify_bench.data import wikipedia

    articles = wikipedia("eval")
    with open(path, "w", encoding="utf-8") as f:
        for i, title in enumerate(sorted(articles)[:n]):
            text = articles[title]
            cut = text.find(" ", 1600)
            f.write(json.dumps({"id": i, "title": title, "text": text[: cut if cut > 0 else None]}) + "\n")
    return min(n, len(articles))


def count_forwards(scorer) -> list[int]:
    """A counter of the scorer model's forward calls (one per window read, for the text or the question)."""
    calls = [0]
    scorer.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def run(src: Path, work: Path, name: str, **job) -> dict:
    out = work / f"{name}.jsonl"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    s = compress_batch(src, out, **job)
    total = time.perf_counter() - t0  # includes the scorer load when it happens inside the job
    return dict(
        config=name,
        records=s.done,
        errors=s.errors,
        seconds=round(total, 2),
        seconds_to_first=round(s.seconds_to_first + (total - s.seconds), 2),
        records_per_s=round(s.done / total, 3),
        steady_records_per_s=round(s.steady_rate, 3),
        tokens_in=s.tokens_in,
        tokens_out=s.tokens_out,
        output_sha=__import__("hashlib").sha256(out.read_bytes()).hexdigest()[:16],
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gistify_bench.benches.batch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for batch.json and batch.md")
    ap.add_argument("--records", type=int, default=24)
    ap.add_argument("--method", default="reinforce")
    ap.add_argument("--skip-ray", action="store_true", help="only the local engine (Ray not installed)")
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = dict(keep=0.3, method=args.method)
    load_before = os.getloadavg()
    rows, passes = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "in.jsonl"
        n = corpus(src, args.records)
        print(f"batch bench: {n} records, {job}, {os.cpu_count()} CPUs", file=sys.stderr)

        # local, 1 worker, in this process: the scorer load is timed with the job, and forwards counted
        t0 = time.perf_counter()
        scorer = gistify.Scorer.load()
        load_s = time.perf_counter() - t0
        calls = count_forwards(scorer)
        row = run(src, work, "local, 1 worker", scorer=scorer, **job)
        row["seconds"] = round(row["seconds"] + load_s, 2)
        row["seconds_to_first"] = round(row["seconds_to_first"] + load_s, 2)
        row["records_per_s"] = round(row["records"] / row["seconds"], 3)
        rows.append(row)
        passes[f"{args.method}, no question"] = calls[0] / n
        print(rows[-1], file=sys.stderr)

        few = work / "few.jsonl"  # the other counts on four records, with a question
        few.write_text(
            "".join(
                json.dumps({**json.loads(line), "question": QUESTION}) + "\n"
                for line in src.read_text(encoding="utf-8").splitlines()[:4]
            ),
            encoding="utf-8",
        )
        for method in ("reinforce", "selfinfo"):
            calls[0] = 0
            compress_batch(few, work / f"few-{method}.jsonl", scorer=scorer, keep=0.3, method=method)
            passes[f"{method}, with a question"] = calls[0] / 4
        del scorer

        rows.append(run(src, work, "local, 2 workers", workers=2, **job))
        print(rows[-1], file=sys.stderr)
        if not args.skip_ray:
            for actors in (1, 2):
                name = f"ray, {actors} actor{'s' if actors > 1 else ''}"
                rows.append(run(src, work, name, engine="ray", workers=actors, **job))
                print(rows[-1], file=sys.stderr)
    result = dict(
        records=n,
        job=job,
        machine=dict(cpus=os.cpu_count(), python=platform.python_version(), load=[load_before, os.getloadavg()]),
        configs=rows,
        scorer_forward_passes_per_record=passes,
        same_output_everywhere=len({r["output_sha"] for r in rows}) == 1,
    )
    (out_dir / "batch.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out_dir / "batch.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    lines = [
        f"# compress-batch throughput: {r['records']} records, {r['job']['method']}, keep={r['job']['keep']}",
        "",
        f"Machine: {r['machine']['cpus']} CPUs, shared (load average {r['machine']['load'][0][0]:.1f} before, "
        f"{r['machine']['load'][1][0]:.1f} after). Total includes starting workers/Ray and loading the scorer.",
        "",
        "| engine | records/s (total) | records/s (second half) | seconds | to first record (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for c in r["configs"]:
        lines.append(
            f"| {c['config']} | {c['records_per_s']:.2f} | {c['steady_records_per_s']:.2f} | {c['seconds']:.1f} "
            f"| {c['seconds_to_first']:.1f} |"
        )
    lines += ["", "Scorer forward passes per record (texts of one window):", ""]
    lines += [f"- {k}: {v:g}" for k, v in r["scorer_forward_passes_per_record"].items()]
    lines += ["", f"Output bytes identical across engines and worker counts: {r['same_output_everywhere']}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
