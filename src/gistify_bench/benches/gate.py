"""Does `gistify serve` compress on this machine? The proxy's break-even gate, per text method, as it starts.

    python -m gistify_bench.benches.gate [--methods reinforce-shallow,reinforce-fast] [--tokens 2000] [--keep 0.5]
                                         [--threads 1] [--out ROOT]

For each method, in a fresh process with the proxy's defaults (`gistify.serve.settings.Settings`: its prices,
its prefill speed, one torch thread, its protections and risk guard), this builds the proxy's compressor on the
embedded scorer and

1. times it as `gistify serve` does at start (`Compressor.measure(256)`: a made-up text of 256 tokens, after
   one warm-up), and again on a text of `--tokens` tokens (what the gate's running average moves towards as
   long contents arrive);
2. asks the gate (`gistify.serve.gate.Gate`) whether a tool result of `--tokens` tokens at `--keep` is worth
   compressing, with each of the two costs.

Results go to ROOT/serve/gate.json (ROOT: --out, default ./results) and a Markdown table on stdout, with the
load average: the figures are this machine's, at its load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from gistify_bench.machine import machine
from gistify_bench.options import resolve_out, with_params


def measure_one(method: str, tokens: int, keep: float, threads: int) -> dict:
    """Runs in the child process: the proxy's compressor for `method`, its measured costs and the gate's verdicts."""
    import torch

    torch.set_num_threads(threads)
    import gistify
    from gistify.serve.gate import Cost, Gate, Speeds
    from gistify.serve.policy import Compressor
    from gistify.serve.settings import Settings

    name, params = with_params(method)  # `reinforce-fast[precision=bfloat16]`: a method with parameters
    settings = Settings(method=name, params=params, keep=keep, torch_threads=threads)
    compressor = Compressor(settings, gistify.Scorer.load(settings.model))
    start = compressor.measure(256)  # what `gistify serve` measures at start
    long = compressor.measure(tokens)
    target = round(tokens * settings.keep)
    verdicts = {}
    for name, ms in (("start", start), ("long", long)):
        gate = Gate(settings.price_per_mtok, Speeds(settings.prefill_tps), settings.latency_price, Cost(ms, False))
        d = gate.decide(tokens, target)
        verdicts[name] = {"ms_per_1k": round(ms, 1), "compress": d.compress, "reason": d.reason}
    break_even = gate.break_even_ms_per_1k(tokens, target)
    return {"method": method, "threads": threads, "tokens": tokens, "keep": keep, "break_even_ms_per_1k":
            round(break_even, 1), **verdicts}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.benches.gate", description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="reinforce-shallow,reinforce-fast", help="comma-separated text methods")
    p.add_argument("--tokens", type=int, default=2000, help="the tool result's length in scorer tokens")
    p.add_argument("--keep", type=float, default=0.5, help="the proxy's budget (its default: 0.5)")
    p.add_argument("--threads", type=int, default=1, help="the scorer's torch threads (the proxy's default: 1)")
    p.add_argument("--out", help="results root (default ./results)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tokens < 256 or not 0 < args.keep < 1 or args.threads < 1:
        p.error("--tokens must be >= 256, --keep in (0, 1), --threads >= 1")
    if args.child:
        print(json.dumps(measure_one(args.child, args.tokens, args.keep, args.threads)))
        return 0
    methods = [m for m in args.methods.split(",") if m]
    from gistify.text.options import TextOptions

    for m in methods:  # a wrong name or parameter fails here, before any model loads
        name, params = with_params(m)
        TextOptions(method=name, params=params).check_method()
    out = resolve_out(args.out) / "serve" / "gate.json"
    rows = []
    for m in methods:
        cmd = [sys.executable, "-m", "gistify_bench.benches.gate", "--child", m, "--tokens", str(args.tokens),
               "--keep", str(args.keep), "--threads", str(args.threads)]  # fmt: skip
        print(f"measuring {m} ...", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if done.returncode:
            raise SystemExit(f"{m}: the measurement failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]) | {"load_avg": os.getloadavg()[0]})
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1) + "\n")
    head = ["method", "start-up cost (256 tokens), ms/1k", "gate", f"{args.tokens}-token cost, ms/1k", "gate",
            "break-even, ms/1k", "load"]  # fmt: skip
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    verdict = {True: "compress", False: "send as is"}
    for r in rows:
        s, g = r["start"], r["long"]
        cells = [r["method"], f"{s['ms_per_1k']:.0f}", verdict[s["compress"]], f"{g['ms_per_1k']:.0f}",
                 verdict[g["compress"]], f"{r['break_even_ms_per_1k']:.0f}", f"{r['load_avg']:.1f}"]  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
