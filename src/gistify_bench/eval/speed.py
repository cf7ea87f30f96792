"""Compression speed and memory of every text method on the embedded scorer.

    python -m gistify_bench.eval.speed [--tokens 2000] [--repeats 5] [--methods reinforce,selfinfo,llmlingua]
                                       [--out ROOT]

Each method runs in a fresh process: the scorer is loaded and one warm-up run is made (not timed), the
peak-RSS mark is reset, then `repeats` timed runs compress the same real document (the first `--tokens`
scorer tokens of examples/albedo.txt, or --file) at keep 0.2. Reported per method: the median seconds per
1k input tokens, and peak RSS (whole process, and above the RSS after loading). The peers LLMLingua and
LongLLMLingua are timed the same way around their worker process (same SmolLM2 scorer, inter-process
transfer included; its cost is a JSON line), and their memory is the worker's. Results go to
ROOT/text/speed/<model>.json (ROOT: --out, default ./results) and a Markdown table on stdout. Times are for
this machine only.
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

from gistify_bench.eval import measure
from gistify_bench.eval.measure import reset_peak_rss, rss_mb
from gistify_bench.options import resolve_out

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "albedo.txt"
QUESTION = "What is the albedo of fresh snow?"


def measure_one(method: str, file: Path, tokens: int, repeats: int, model: str | None) -> dict:
    """Runs in the child process: time `repeats` compressions of one method."""
    import torch

    from gistify.text.pipeline import shared_scorer
    from gistify_bench.eval.peers import lingua
    from gistify_bench.eval.reader import Reader
    from gistify_bench.eval.runner import gistify_compressor

    scorer = shared_scorer(model)
    ids = scorer.tokenizer(file.read_text(encoding="utf-8"), add_special_tokens=False).input_ids[:tokens]
    text = scorer.tokenizer.decode(ids)
    if method in lingua.MODES:  # a peer: time its worker process, and read that process's memory
        run, pid = lingua.compressor(method, Reader(scorer.model, scorer.tokenizer, "scorer")), None
    else:
        run, pid = gistify_compressor(method, Reader(scorer.model, scorer.tokenizer, "scorer"), scorer), "self"
    run(text, QUESTION, 0.2)  # warm-up: lazy imports, allocator, the peer's worker start
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
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.eval.speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="reinforce,selfinfo,random,truncate,llmlingua,longllmlingua")
    p.add_argument("--tokens", type=int, default=2000, help="input length in scorer tokens")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--file", type=Path, default=EXAMPLE)
    p.add_argument("--model", default=None, help="scorer (default: the embedded SmolLM2)")
    p.add_argument("--out", help="results root (default ./results); writes ROOT/text/speed/")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(measure_one(args.child, args.file, args.tokens, args.repeats, args.model)))
        return 0
    rows = []
    for method in args.methods.split(","):
        cmd = [
            sys.executable,
            "-m",
            "gistify_bench.eval.speed",
            "--child",
            method,
            "--tokens",
            str(args.tokens),
            "--repeats",
            str(args.repeats),
            "--file",
            str(args.file),
        ] + (["--model", args.model] if args.model else [])
        print(f"measuring {method} ...", file=sys.stderr)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    machine = measure.machine()
    record = {
        "machine": machine,
        "load_avg": os.getloadavg(),
        "model": args.model or "smollm2-135m-instruct",
        "keep": 0.2,
        "rows": rows,
    }
    out = resolve_out(args.out) / "text" / "speed"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{record['model'].replace('/', '_')}.json").write_text(json.dumps(record, indent=2))
    print(f"machine: {machine}; load average {record['load_avg'][0]:.2f}; scorer {record['model']}; keep 0.2\n")
    print("| method | tokens in | median s / 1k tokens | peak RSS MB | peak above loaded MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        cells = (r["method"], r["tokens_in"], f"{r['median_s_per_1k_tokens']:.3f}", f"{r['peak_rss_mb']:.0f}")
        print("| " + " | ".join(map(str, cells)) + f" | {r['peak_above_loaded_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
