"""Compression speed and memory of every text method on the embedded scorer, at several input lengths.

    python -m gistify_bench.benches.speed [--tokens 1000,4000,16000,100000] [--repeats 5,5,3,1]
                                          [--methods reinforce-shallow,reinforce-fast,reinforce,selfinfo,llmlingua]
                                          [--skip longllmlingua@100000] [--threads 1] [--out ROOT]

Each (method, length) runs in a fresh process: the scorer is loaded and one warm-up run is made on the first
1,000 tokens (not timed: lazy imports, the allocator, a peer's worker start), the peak-RSS mark is reset, then
`repeats` timed runs compress the same real document at keep 0.2 with a question. The document: the "eval"
Wikipedia articles of gistify_bench.data joined, cut at the length in scorer tokens (or --file). Reported per
cell: the median seconds per 1k input tokens, and peak RSS (whole process, and above the RSS after loading).
The peers LLMLingua and LongLLMLingua are timed the same way around their worker process (same SmolLM2 scorer,
inter-process transfer included; its cost is a JSON line), and their memory is the worker's. Results go to
ROOT/text/speed/<model>[-t<threads>].json (ROOT: --out, default ./results; rewritten after every cell, so an interrupted
run keeps what it measured) and a Markdown table on stdout, with each method's per-token cost at its longest
length over its shortest. `--threads N` runs every child with N torch threads (the proxy and the batch
workers score on one thread each); the record keeps it and the load average. Times are for this machine only:
compare methods within one run (`reinforce`, the full pass, is the yardstick that travels between machines).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from gistify_bench.machine import machine, reset_peak_rss, rss_mb
from gistify_bench.options import resolve_out, with_params

QUESTION = "What is the albedo of fresh snow?"


def document(file: Path | None) -> str:
    """The text the lengths are cut from: `file`, or the "eval" articles joined."""
    if file is not None:
        return file.read_text(encoding="utf-8")
    from gistify_bench.data import wikipedia

    return "\n\n".join(wikipedia("eval").values())


def measure_one(
    method: str, file: Path | None, tokens: int, repeats: int, model: str | None, threads: int | None = None
) -> dict:
    """Runs in the child process: time `repeats` compressions of one method."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from gistify.text.pipeline import shared_scorer
    from gistify_bench.eval.peers import lingua
    from gistify_bench.eval.reader import Reader
    from gistify_bench.eval.runner import gistify_compressor

    scorer = shared_scorer(model)
    ids, _ = scorer.encode(document(file))
    if len(ids) < tokens:
        raise ValueError(f"the document has {len(ids)} tokens, fewer than the {tokens} asked for")
    text, warm_text = scorer.tokenizer.decode(ids[:tokens]), scorer.tokenizer.decode(ids[:1000])
    if method in lingua.MODES:  # a peer: time its worker process, and read that process's memory
        run, pid = lingua.compressor(method, Reader(scorer.model, scorer.tokenizer, "scorer")), None
    else:
        name, params = with_params(method)  # `reinforce-fast[precision=bfloat16]`: a method with parameters
        run, pid = gistify_compressor(name, Reader(scorer.model, scorer.tokenizer, "scorer"), scorer, **params), "self"
    run(warm_text, QUESTION, 0.2)  # warm-up: lazy imports, allocator, the peer's worker start
    pid = pid or lingua.LLMLinguaWorker.shared().proc.pid
    base_mb = rss_mb("VmRSS", pid)
    reset_peak_rss(pid)
    times, result = [], None
    for _ in range(repeats):
        scorer.forget()
        t0 = time.perf_counter()
        result = run(text, QUESTION, 0.2)
        times.append(time.perf_counter() - t0)
    peak_mb = rss_mb("VmHWM", pid)
    floor = _floor(method, scorer, text, repeats)
    return {
        "method": method,
        "tokens_in": result.tokens_in,
        "tokens_out": result.tokens_out,
        "repeats": repeats,
        "seconds": times,
        "median_s": statistics.median(times),
        "median_s_per_1k_tokens": statistics.median(times) / result.tokens_in * 1000,
        "peak_rss_mb": peak_mb,
        "peak_above_loaded_mb": peak_mb - base_mb,
        "torch_threads": torch.get_num_threads(),
    } | ({"floor_s_per_1k_tokens": floor / result.tokens_in * 1000} if floor else {})


def _floor(method: str, scorer, text: str, repeats: int) -> float | None:
    """For a method on the scorer's fast path: the median seconds of its forward pass alone (the trunk's layers,
    in the method's precision, and the surprisal head: `Scorer.stats(fast=...)`), the floor that the rest of
    compress adds to."""
    from gistify.method import get_method
    from gistify_bench.eval.peers import lingua

    if method in lingua.MODES:
        return None
    name, params = with_params(method)
    m = get_method(name, "text", **params)
    if not getattr(m, "fast", False):
        return None
    times = []
    for _ in range(repeats):
        scorer.forget()
        t0 = time.perf_counter()
        scorer.stats(text, layer=m.layer, fast=m._fast_mode())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.benches.speed", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--methods",
        default="reinforce-shallow,reinforce-fast,reinforce,selfinfo,random,truncate,llmlingua,longllmlingua",
    )
    p.add_argument("--tokens", default="1000,4000,16000,100000", help="input lengths in scorer tokens, comma-separated")
    p.add_argument("--repeats", default="5,5,3,1", help="timed runs per length (one number, or one per length)")
    p.add_argument("--skip", default="", help="cells not to run, as METHOD@TOKENS, comma-separated")
    p.add_argument("--file", type=Path, help="the document (default: the eval articles joined)")
    p.add_argument("--model", default=None, help="scorer (default: the embedded SmolLM2)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per child (default: torch's own)")
    p.add_argument("--out", help="results root (default ./results); writes ROOT/text/speed/")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    lengths = [int(t) for t in str(args.tokens).split(",")]
    repeats = [int(r) for r in str(args.repeats).split(",")]
    if len(repeats) == 1:
        repeats *= len(lengths)
    if len(repeats) != len(lengths) or min(lengths) < 1 or min(repeats) < 1:
        p.error("--repeats needs one positive number, or one per length of --tokens")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.child:
        print(json.dumps(measure_one(args.child, args.file, lengths[0], repeats[0], args.model, args.threads)))
        return 0
    record = {"model": args.model or "smollm2-135m-instruct", "keep": 0.2, "question": QUESTION, "rows": []}
    record["threads"] = args.threads
    out = resolve_out(args.out) / "text" / "speed"
    out.mkdir(parents=True, exist_ok=True)
    for method in args.methods.split(","):
        for tokens, reps in zip(lengths, repeats):
            if f"{method}@{tokens}" in args.skip.split(","):
                continue
            cmd = [sys.executable, "-m", "gistify_bench.benches.speed", "--child", method]
            cmd += ["--tokens", str(tokens), "--repeats", str(reps)]
            cmd += (["--file", str(args.file)] if args.file else []) + (["--model", args.model] if args.model else [])
            cmd += ["--threads", str(args.threads)] if args.threads else []
            print(f"measuring {method} at {tokens} tokens ...", file=sys.stderr)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            record["rows"].append(json.loads(done.stdout.strip().splitlines()[-1]) | {"load_avg": os.getloadavg()[0]})
            record["machine"] = machine()
            threads = f"-t{args.threads}" if args.threads else ""  # a 1-thread run does not overwrite the default's
            (out / f"{record['model'].replace('/', '_')}{threads}.json").write_text(json.dumps(record, indent=2))
    print(table(record))
    return 0


def _cell(r: dict) -> str:
    floor = f" (floor {1000 * r['floor_s_per_1k_tokens']:.0f})" if "floor_s_per_1k_tokens" in r else ""
    return f"{1000 * r['median_s_per_1k_tokens']:.0f}{floor}, {r['peak_rss_mb']:.0f}"


def table(record: dict) -> str:
    """The Markdown table of a speed record: one row per method, ms per 1k tokens and peak RSS per length."""
    lengths = sorted({r["tokens_in"] for r in record["rows"]})
    methods = list(dict.fromkeys(r["method"] for r in record["rows"]))
    cell = {(r["method"], r["tokens_in"]): r for r in record["rows"]}
    head = " | ".join(f"{n:,} tokens: ms / 1k, peak MB" for n in lengths)
    lines = [
        f"machine: {record['machine']}; scorer {record['model']}; keep {record['keep']}; "
        f"torch threads {record.get('threads') or 'default'}",
        "",
        f"| method | {head} | longest / shortest per-1k |",
        "|---|" + "---|" * (len(lengths) + 1),
    ]
    for m in methods:
        got = [cell.get((m, n)) for n in lengths]
        cells = [_cell(r) if r else "–" for r in got]
        have = [r for r in got if r]
        ratio = have[-1]["median_s_per_1k_tokens"] / have[0]["median_s_per_1k_tokens"] if len(have) > 1 else None
        lines.append(
            f"| {m} | " + " | ".join(cells) + f" | {ratio:.2f} |"
            if ratio
            else f"| {m} | " + " | ".join(cells) + " | – |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
