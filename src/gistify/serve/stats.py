"""The savings view: what the proxy did since it started, as numbers (`GET /stats`) or a table.

    gistify serve stats --url http://127.0.0.1:8080      # the table, from a running proxy

Dollars saved are the input tokens not sent, at the configured price (`--price-per-mtok`); the time the
compressor spent is beside them, so the saving is never shown without its cost.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields


@dataclass
class Stats:
    """Counters since start; `add` takes one request's report (thread-safe)."""

    price_per_mtok: float
    started: float = field(default_factory=time.time)
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    compressed: int = 0
    fallbacks: int = 0
    gate_skips: int = 0
    retrieve_calls: int = 0
    compress_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, report) -> None:
        with self._lock:
            self.requests += 1
            self.tokens_in += report.tokens_in
            self.tokens_out += report.tokens_out
            self.compressed += report.compressed
            self.fallbacks += report.fallbacks
            self.gate_skips += report.gate_skips
            self.compress_seconds += report.seconds

    def retrieved(self, n: int) -> None:
        with self._lock:
            self.retrieve_calls += n

    def as_dict(self) -> dict:
        with self._lock:
            d = {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}
        saved = d["tokens_in"] - d["tokens_out"]
        d["tokens_saved"] = saved
        d["usd_saved"] = round(saved * self.price_per_mtok / 1e6, 6)
        d["uptime_s"] = round(time.time() - self.started, 1)
        d["compress_seconds"] = round(d["compress_seconds"], 3)
        return d


ROWS = [
    ("requests", "requests"),
    ("tokens in", "tokens_in"),
    ("tokens out", "tokens_out"),
    ("tokens saved", "tokens_saved"),
    ("dollars saved", "usd_saved"),
    ("at $ per 1M tokens", "price_per_mtok"),
    ("contents compressed", "compressed"),
    ("fallbacks", "fallbacks"),
    ("gate skips", "gate_skips"),
    ("retrieve calls", "retrieve_calls"),
    ("compressor seconds", "compress_seconds"),
    ("since start, s", "uptime_s"),
]


def table(d: dict) -> str:
    """The stats as a two-column text table."""
    width = max(len(label) for label, _ in ROWS)
    lines = [f"{'':{width}}  since start", f"{'-' * width}  {'-' * 11}"]
    for label, key in ROWS:
        v = d.get(key, "")
        text = f"${v:,.4f}" if key == "usd_saved" else f"{v:,}" if isinstance(v, int) else f"{v}"
        lines.append(f"{label:{width}}  {text:>11}")
    return "\n".join(lines)


def main(url: str, api_key: str | None = None) -> int:
    """`gistify serve stats`: fetch /stats from a running proxy and print the table."""
    request = urllib.request.Request(url.rstrip("/") + "/stats")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:  # noqa: S310 (a URL the user gave)
            data = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError) as e:
        print(f"gistify serve stats: error: cannot read {url}/stats: {e}", file=sys.stderr)
        return 1
    print(table(data))
    return 0
