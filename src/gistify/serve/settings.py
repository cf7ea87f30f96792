"""The proxy's settings and the `gistify serve` options that fill them.

Kept apart from the app so that the command line can list the options without importing the web stack
(argparse and dataclasses only): `gistify --help` stays fast and works without the `serve` extra.
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

from gistify.text.options import TextOptions
from gistify.text.options import add_arguments as add_text_options

_SIZE = re.compile(r"(?i)^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?\s*$")


def parse_size(text: str) -> int:
    """Bytes from "20MB", "512k", "1.5 GiB" or a plain number (powers of 1024 either way)."""
    m = _SIZE.match(str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (give bytes, or a number with K, M or G)")
    unit = (m.group(2) or "b")[0].lower()
    return int(float(m.group(1)) * {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[unit])


def _proxy_default(name: str, value: Any) -> Any:
    """A text option whose default the proxy changes: the field as TextOptions declares it, with `value`."""
    base = TextOptions.__dataclass_fields__[name]
    return field(default=value, metadata=base.metadata)


@dataclass
class Settings(TextOptions):
    """Everything `gistify serve` can be told; the defaults are the command's. The text options are TextOptions'
    fields (the budget, the method and its parameters, the protections, ...), with the proxy's own defaults below."""

    # a server sees what nobody reviews before it goes upstream: numbers, negations and identifiers kept whole
    protect_numbers: bool = _proxy_default("protect_numbers", True)
    protect_negations: bool | None = _proxy_default("protect_negations", True)
    protect_identifiers: bool = _proxy_default("protect_identifiers", True)
    max_risk: float | None = _proxy_default("max_risk", 0.2)  # the explicit fallbacks' threshold (gistify.compress)
    upstream: str = "http://127.0.0.1:8081"
    host: str = "127.0.0.1"
    port: int = 8080
    min_tokens: int = 256
    api_key: str | None = None
    upstream_api_key: str | None = None
    max_body: int = 20 << 20
    price_per_mtok: float = 3.0
    prefill_tps: float = 5000.0
    latency_price: float = 36.0
    compress_ms_per_1k: float | None = None  # None: measured at start
    gate: bool = True
    probe: bool | None = None  # time the upstream's prefill at start; None: only when it is on this machine
    cache: str | None = None  # where decisions are kept: "memory" (None) or a redis:// URL shared by replicas
    cache_entries: int = 4096
    retrieve: bool = True  # compressed contents carry a handle; the model may call gistify_retrieve
    retrieve_rounds: int = 3
    timeout: float = 600.0
    connect_timeout: float = 10.0
    workers: int = 4  # threads that parse and count off the event loop (compressions have their own thread)
    torch_threads: int | None = 1  # the scorer's intra-op threads; None: torch's default
    log_level: str = "info"

    def __post_init__(self):
        if self.keep is None and self.tokens is None:
            self.keep = 0.5
        super().__post_init__()  # the text options, each checked
        for f in fields(TextOptions):
            fixed = f.metadata["fixed"].get("serve")
            if fixed and getattr(self, f.name) != TextOptions.__dataclass_fields__[f.name].default:
                raise ValueError(f"the proxy takes no {f.name}: {fixed}")
        if not re.match(r"^https?://[^/\s]+", self.upstream):
            raise ValueError(f"upstream must be an http(s) URL such as http://127.0.0.1:8081, got {self.upstream!r}")
        if self.prefill_tps <= 0:
            raise ValueError(f"prefill_tps must be positive, got {self.prefill_tps}")
        if self.max_risk is None:
            raise ValueError("max_risk must be a number in [0, 1] for the proxy, got None")
        if self.cache not in (None, "memory") and not self.cache.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"cache must be 'memory' or a redis:// URL such as redis://127.0.0.1:6379/0, got "
                             f"{self.cache!r}")  # fmt: skip

    @property
    def upstream_base(self) -> str:
        """The upstream's root: the OpenAI paths (/v1/...) are appended to it, so a trailing /v1 is dropped."""
        base = self.upstream.rstrip("/")
        return base[: -len("/v1")] if base.endswith("/v1") else base

    @classmethod
    def from_args(cls, args: argparse.Namespace, **more: Any) -> Settings:
        keys = dict(
            api_key=args.api_key or os.environ.get("GISTIFY_API_KEY") or None,
            upstream_api_key=args.upstream_api_key or os.environ.get("GISTIFY_UPSTREAM_API_KEY"),
        )
        if not args.upstream:
            raise ValueError("gistify serve needs --upstream (the OpenAI-compatible server to forward to)")
        return super().from_args(args, **keys, **more)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `gistify serve`."""
    d = Settings
    p.add_argument(
        "action", nargs="?", choices=["stats"], help="stats: print a running proxy's savings (see --url) and exit"
    )
    p.add_argument("--url", default=f"http://127.0.0.1:{d.port}", help="with stats: the proxy to ask")
    p.add_argument("--upstream", help="the OpenAI-compatible server to forward to (with or without /v1); required")
    p.add_argument("--host", default=d.host, help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    add_text_options(p, "serve", defaults=Settings())  # the budget, the method, the protections, max_risk, ...
    p.add_argument(
        "--min-tokens", type=int, default=d.min_tokens, help=f"compress only contents longer (default {d.min_tokens})"
    )
    p.add_argument("--api-key", help="require this key from clients (Bearer or X-Gistify-Key); or GISTIFY_API_KEY")
    p.add_argument(
        "--upstream-api-key",
        help="send this key upstream instead of the client's Authorization; or GISTIFY_UPSTREAM_API_KEY",
    )
    p.add_argument("--max-body", type=parse_size, default=d.max_body, help="largest request body (default 20MB)")
    g = p.add_argument_group("break-even gate (compress only when the saving pays for the compressor)")
    g.add_argument("--price-per-mtok", type=float, default=d.price_per_mtok, help="upstream $ per 1M input tokens")
    g.add_argument(
        "--prefill-tps",
        type=float,
        default=d.prefill_tps,
        help="upstream prefill speed, tokens/s, assumed until the upstream's answers measure it "
        f"(default {d.prefill_tps:g})",
    )
    g.add_argument(
        "--latency-price", type=float, default=d.latency_price, help="$ one hour of added latency is worth to you"
    )
    g.add_argument(
        "--compress-ms-per-1k",
        type=float,
        help="compressor cost per 1k tokens, fixed (default: measured at start, then as it runs)",
    )
    g.add_argument(
        "--probe",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the upstream's prefill with one small request at start (default: when the upstream is on "
        "this machine, where asking costs nothing)",
    )
    g.add_argument("--gate", action=argparse.BooleanOptionalAction, default=True, help="apply the gate (default on)")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=d.torch_threads,
        help="the scorer's threads (default 1: the proxy shares its cores with its event loop, and on a busy "
        "machine OpenMP's waiting threads made a compression 3x slower with 2 than with 1)",
    )
    p.add_argument(
        "--cache",
        help="where decisions are kept: memory (default, this process) or a Redis URL (redis://host:6379/0) that "
        "replicas share, so that all of them and restarts send the same bytes for a content",
    )
    p.add_argument("--cache-entries", type=int, default=d.cache_entries, help="decisions kept in this process's memory")
    p.add_argument(
        "--retrieve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compressed contents carry a handle and the model is offered gistify_retrieve, answered by the "
        "proxy from the original (default on)",
    )
    p.add_argument(
        "--retrieve-rounds",
        type=int,
        default=d.retrieve_rounds,
        help="gistify_retrieve calls answered per request before the answer goes to the client "
        f"(default {d.retrieve_rounds})",
    )
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds to wait for the upstream's answer")
    p.add_argument("--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"])
