"""A bounded loopback load run of `gistify serve`: does it lose requests, what latency does it add, how
much memory does it hold?

    python -m gistify_bench.benches.serve --out docs/results/serve
    python -m gistify_bench.benches.serve --out docs/results/serve --readme   # the README's request

Two parts, each with its upstream, its own proxy process (`gistify serve`, started as a user would) and the
same requests sent twice, once straight to the upstream and once through the proxy; the added latency is
the proxy's time minus the direct time, per class of request:

1. stub: a tiny Starlette app under uvicorn that answers every chat request at once with a fixed body, so
   that what is measured is the proxy. 1,000 requests at concurrency 32: 90% short chats (never compressed)
   and 10% long tool results (Wikipedia text, about 450 tokens, compressed), drawn from 4 documents: the
   first request with a document pays for its compression ("long, first"); the later ones ("long, repeat")
   hit the content-hash cache, or wait for the compression in progress when sent before it ends, as an agent
   that resends its conversation does.
2. llama: llama.cpp's OpenAI-compatible server (`gistify.serve.upstream`) with SmolLM2-135M; 50 requests at
   concurrency 4, half short and half long (2 documents), 8 answer tokens each. Here the direct time of a
   long request includes reading the whole document, so compression can win time back.

Resident memory (VmRSS) of the proxy process is read after it starts and after its load. Everything runs
on this machine (the load generator too), so the numbers are loopback numbers on a small shared CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SHORT = [{"role": "user", "content": "In one word: what colour is a clear sky at noon?"}]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _wait(url: str, proc: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {seconds} s")


def _start(cmd: list[str], health: str, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
    _wait(health, proc)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


# -- the stub upstream --------------------------------------------------------------------------------------


def stub_app(prefill_tps: float = 0.0):
    """An OpenAI-compatible upstream that answers at once (chat, completions, models, health), or, with
    `prefill_tps`, after reading the prompt at that speed (prompt tokens counted as characters / 4)."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    answer = {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Blue."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }

    async def chat(request):
        n = max(1, len(await request.body()) // 4)
        if prefill_tps:
            await asyncio.sleep(n / prefill_tps)
        return JSONResponse({**answer, "usage": {"prompt_tokens": n, "completion_tokens": 1, "total_tokens": n + 1}})

    async def models(request):
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def health(request):
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/health", health),
        ]
    )


# -- load ---------------------------------------------------------------------------------------------------


def _documents(n: int, chars: int = 2200) -> list[tuple[str, str]]:
    """(text, question) pairs: Wikipedia eval articles when the bench data is there, else made-up logs."""
    try:
        from gistify_bench.data import wikipedia

        arts = sorted(wikipedia("eval").items())[:n]
        docs = [(text[:chars].rsplit(" ", 1)[0], f"What is said about {title}?") for title, text in arts]
        if len(docs) == n:
            return docs
    except Exception:  # the bench data is optional here
        pass
    logs = [" ".join(f"Log line {i}: job {k} wrote {i * k} rows to table t{k}." for i in range(60)) for k in range(n)]
    return [(text, f"What did job {k} do?") for k, text in enumerate(logs)]


def _long(doc: tuple[str, str]) -> list[dict]:
    text, question = doc
    call = {"id": "call_1", "type": "function", "function": {"name": "fetch", "arguments": "{}"}}
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Fetch the page."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": text},
        {"role": "user", "content": question},
    ]


def plan(n: int, long_share: float, docs: int, seed: int = 0) -> list[tuple[str, int | None]]:
    """The request sequence: ("short", None) or ("long", document index), shuffled with a fixed seed."""
    rng = random.Random(seed)
    n_long = round(n * long_share)
    kinds = [("long", i % docs) for i in range(n_long)] + [("short", None)] * (n - n_long)
    rng.shuffle(kinds)
    return kinds


async def _load(base: str, kinds, documents, concurrency: int, max_tokens: int) -> list[dict]:
    """Send the requests with at most `concurrency` in flight; one record per request."""
    sem = asyncio.Semaphore(concurrency)
    seen: set[int] = set()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as client:

        async def one(i: int, kind: str, doc: int | None) -> dict:
            cls = "short" if kind == "short" else ("long, repeat" if doc in seen else "long, first")
            if doc is not None:
                seen.add(doc)
            body = {"model": "m", "max_tokens": max_tokens, "temperature": 0}
            body["messages"] = SHORT if kind == "short" else _long(documents[doc])
            async with sem:
                t0 = time.perf_counter()
                try:
                    r = await client.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and "choices" in r.json()
                    status = r.status_code
                    tokens = (r.headers.get("x-gistify-tokens-in"), r.headers.get("x-gistify-tokens-out"))
                    inside = r.headers.get("x-gistify-added-ms")
                except httpx.HTTPError as e:
                    ok, status, tokens, inside = False, type(e).__name__, (None, None), None
                return {"i": i, "class": cls, "seconds": time.perf_counter() - t0, "ok": ok, "status": status,
                        "tokens": tokens, "inside_ms": float(inside) if inside else None}  # fmt: skip

        return await asyncio.gather(*(one(i, k, d) for i, (k, d) in enumerate(kinds)))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _summary(direct: list[dict], proxied: list[dict]) -> dict:
    out = {}
    for cls in ("short", "long, first", "long, repeat"):
        d = [r["seconds"] for r in direct if r["class"] == cls]
        p = [r["seconds"] for r in proxied if r["class"] == cls]
        if not p:
            continue
        row = {"n": len(p)}
        for q in (50, 95):
            row[f"direct_p{q}_ms"] = round(_pct(d, q) * 1000, 1)
            row[f"proxy_p{q}_ms"] = round(_pct(p, q) * 1000, 1)
            row[f"added_p{q}_ms"] = round((_pct(p, q) - _pct(d, q)) * 1000, 1)
        inside = [r["inside_ms"] for r in proxied if r["class"] == cls and r["inside_ms"] is not None]
        if inside:  # what the proxy itself reports spending before forwarding (X-Gistify-Added-Ms)
            row["inside_p50_ms"] = round(_pct(inside, 50), 1)
            row["inside_p95_ms"] = round(_pct(inside, 95), 1)
        toks = [r["tokens"] for r in proxied if r["class"] == cls and r["tokens"][0]]
        if toks:
            row["tokens_in"] = int(toks[0][0])
            row["tokens_out_median"] = int(statistics.median(int(t[1]) for t in toks))
        out[cls] = row
    return out


def _failures(records: list[dict]) -> list:
    return [(r["i"], r["status"]) for r in records if not r["ok"]]


def run_part(name, upstream_cmd, upstream_url, health, proxy_args, n, long_share, docs, concurrency, max_tokens, out):
    """Start the upstream and the proxy, send the load direct then through the proxy, stop both."""
    documents = _documents(docs)
    kinds = plan(n, long_share, docs)
    up = _start(upstream_cmd, health, out / f"{name}-upstream.log")
    try:
        port = _free_port()
        cmd = [sys.executable, "-m", "gistify.cli", "serve", "--upstream", upstream_url, "--port", str(port)]
        proxy = _start(cmd + proxy_args, f"http://127.0.0.1:{port}/healthz", out / f"{name}-proxy.log")
        try:
            rss_before = _rss_mb(proxy.pid)
            t0 = time.perf_counter()
            direct = asyncio.run(_load(upstream_url, kinds, documents, concurrency, max_tokens))
            t_direct = time.perf_counter() - t0
            t0 = time.perf_counter()
            proxied = asyncio.run(_load(f"http://127.0.0.1:{port}", kinds, documents, concurrency, max_tokens))
            t_proxy = time.perf_counter() - t0
            rss_after = _rss_mb(proxy.pid)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        finally:
            _stop(proxy)
    finally:
        _stop(up)
    keep = ("gistify_requests_total", "gistify_messages_total", "gistify_fallbacks_total", "gistify_errors_total",
            "gistify_cache_total", "gistify_compress_seconds_sum", "gistify_compress_seconds_count",
            "gistify_gate_decisions_total")  # fmt: skip
    return {
        "requests": n,
        "concurrency": concurrency,
        "long_share": long_share,
        "documents": docs,
        "proxy_args": proxy_args,
        "failed_direct": _failures(direct),
        "failed_proxy": _failures(proxied),
        "wall_s": {"direct": round(t_direct, 1), "proxy": round(t_proxy, 1)},
        "latency": _summary(direct, proxied),
        "proxy_rss_mb": {"after_start": round(rss_before, 1), "after_load": round(rss_after, 1)},
        "metrics": [line for line in metrics.splitlines() if line.startswith(keep)],
    }


def markdown(results: dict) -> str:
    lines = ["# gistify serve: loopback load run", "", results["note"], "", f"Command: `{results['command']}`", ""]
    load = results["machine"]["load_avg_at_start"]
    lines += [
        f"Machine load average when the run began: {load[0]:.1f} (1 min) on {results['machine']['cpus']} cores.",
        "",
    ]
    for name, part in results["parts"].items():
        failed = len(part["failed_direct"]) + len(part["failed_proxy"])
        rss = part["proxy_rss_mb"]
        lines += [
            f"## {name}: {part['requests']} requests at concurrency {part['concurrency']}",
            "",
            f"Failed or lost: {failed} (direct {len(part['failed_direct'])}, proxy {len(part['failed_proxy'])}). "
            f"Wall time: direct {part['wall_s']['direct']} s, through the proxy {part['wall_s']['proxy']} s. "
            f"Proxy resident memory: {rss['after_start']} MB after start, {rss['after_load']} MB after the load.",
            "",
            "| requests | n | tokens in -> out | direct p50 / p95 ms | proxy p50 / p95 ms | added p50 / p95 ms "
            "| inside the proxy p50 / p95 ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for cls, r in part["latency"].items():
            toks = f"{r['tokens_in']} -> {r['tokens_out_median']}" if "tokens_in" in r else ""
            lines.append(
                f"| {cls} | {r['n']} | {toks} | {r['direct_p50_ms']} / {r['direct_p95_ms']} | "
                f"{r['proxy_p50_ms']} / {r['proxy_p95_ms']} | {r['added_p50_ms']} / {r['added_p95_ms']} | "
                f"{r.get('inside_p50_ms')} / {r.get('inside_p95_ms')} |"
            )
        lines.append("")
    return "\n".join(lines)


def readme_run(out: Path, argv: list[str]) -> int:
    """The README's proxy commands as written (llama.cpp upstream, `gistify serve` with its defaults,
    examples/serve_request.py, `gistify serve stats`), then the same request against the stub upstream
    answering at 50,000 tokens/s with `--price-per-mtok 0`; the outputs go to readme_run.md."""
    root = Path(__file__).resolve().parents[3]
    request = [sys.executable, str(root / "examples" / "serve_request.py")]
    logs = Path(tempfile.mkdtemp(prefix="serve_readme-"))
    sections = []

    def part(title: str, upstream_cmd: list[str], health: str, upstream_url: str, extra: list[str]) -> None:
        up = _start(upstream_cmd, health, logs / "upstream.log")
        try:
            port = _free_port()
            cmd = [sys.executable, "-m", "gistify.cli", "serve", "--upstream", upstream_url, "--port", str(port)]
            proxy = subprocess.Popen(cmd + extra, stdout=(logs / "proxy.log").open("w"), stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                ran = subprocess.run([*request, "--url", url + "/v1"], capture_output=True, text=True, timeout=1200)
                stats = subprocess.run([sys.executable, "-m", "gistify.cli", "serve", "stats", "--url", url],
                                       capture_output=True, text=True, timeout=60)  # fmt: skip
            finally:
                _stop(proxy)
        finally:
            _stop(up)
        started = [line.split(" INFO ", 1)[-1] for line in (logs / "proxy.log").read_text().splitlines()
                   if "gistify.serve INFO" in line and " 200 " not in line]  # fmt: skip
        shown = " ".join(["gistify serve --upstream", upstream_url, *extra])
        sections.extend([f"## {title}", "", f"`{shown}`, then `python examples/serve_request.py`:", "", "```",
                         ran.stdout.strip() or ran.stderr.strip()[-2000:], "```", "", "The proxy's log at start:", "",
                         "```", *started, "```", "", "`gistify serve stats`:", "", "```", stats.stdout.rstrip(), "```",
                         ""])  # fmt: skip

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    part(
        "llama.cpp (the README's upstream), the proxy's defaults",
        [sys.executable, "-m", "gistify.serve.upstream", "--port", str(port)],
        url + "/health",
        url + "/v1",
        [],
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    stub = [sys.executable, "-m", "gistify_bench.benches.serve", "--stub", "--out", str(out), "--port", str(port),
            "--prefill-tps", "50000"]  # fmt: skip
    part("a stub upstream that reads 50,000 tokens/s, at $0 per million tokens", stub, url + "/health", url + "/v1",
         ["--price-per-mtok", "0"])  # fmt: skip
    load = os.getloadavg()
    head = ["# gistify serve: the README's request", "",
            f"Command: `python -m gistify_bench.benches.serve {' '.join(argv)}`. One machine, {os.cpu_count()} "
            f"shared CPU cores (load average {load[0]:.1f} at the end), loopback only.", ""]  # fmt: skip
    (out / "readme_run.md").write_text("\n".join(head + sections))
    print("\n".join(head + sections))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.benches.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="folder for serve_bench.json and README.md")
    p.add_argument("--logs", type=Path, help="folder for the upstreams' and proxies' logs (default: a temporary one)")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--llama-requests", type=int, default=50, help="0 skips the llama.cpp part")
    p.add_argument("--llama-concurrency", type=int, default=4)
    p.add_argument("--method", default="reinforce")
    p.add_argument("--readme", action="store_true", help="run the README's proxy request instead (readme_run.md)")
    p.add_argument("--stub", action="store_true", help=argparse.SUPPRESS)  # run the stub upstream
    p.add_argument("--prefill-tps", type=float, default=0.0, help=argparse.SUPPRESS)  # the stub's prefill speed
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stub:
        import uvicorn

        app = stub_app(args.prefill_tps)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
        return 0
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.readme:
        return readme_run(out, argv if argv is not None else sys.argv[1:])
    logs = args.logs or Path(tempfile.mkdtemp(prefix="serve_bench-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"logs of the upstreams and proxies in {logs}", file=sys.stderr)
    # the gate weighs dollars only here (a paid upstream, latency not priced) so that long contents compress;
    # the compressor's cost is given, so the start does not time it
    common = ["--method", args.method, "--min-tokens", "128", "--keep", "0.5", "--latency-price", "0",
              "--compress-ms-per-1k", "10000", "--log-level", "warning"]  # fmt: skip
    results = {
        "note": "Loopback, one machine (2 shared CPU cores) running the load generator, the proxy and the "
        "upstream. Added = proxy minus direct, per class and percentile. 'long, first' pays for compressing a "
        "document; 'long, repeat' reuses it (content-hash cache) or waits for it when sent while it runs. The "
        "proxy's memory after start is before the first compression pages the scorer's fp32 weights in (about "
        "540 MB).",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0], "load_avg_at_start": os.getloadavg()},
        "command": "python -m gistify_bench.benches.serve " + " ".join(argv if argv is not None else sys.argv[1:]),
        "parts": {},
    }
    port = _free_port()
    stub = [sys.executable, "-m", "gistify_bench.benches.serve", "--stub", "--out", str(out), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    print(f"stub: {args.requests} requests at concurrency {args.concurrency} ...", file=sys.stderr)
    results["parts"]["stub"] = run_part(
        "stub", stub, url, url + "/health", common, args.requests, 0.1, 4, args.concurrency, 8, logs
    )
    if args.llama_requests:
        port = _free_port()
        llama = [sys.executable, "-m", "gistify.serve.upstream", "--port", str(port), "--threads", "1"]
        url = f"http://127.0.0.1:{port}"
        print(f"llama.cpp: {args.llama_requests} requests at concurrency {args.llama_concurrency} ...", file=sys.stderr)
        results["parts"]["llama.cpp"] = run_part(
            "llama", llama, url, url + "/health", common, args.llama_requests, 0.5, 2, args.llama_concurrency, 8,
            logs,
        )  # fmt: skip
    (out / "serve_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "README.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
