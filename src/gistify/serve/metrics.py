"""Prometheus metrics of the proxy: what it was asked, what it compressed, what that cost and saved.

Each app gets its own registry (not the process-wide default), so that several proxies in one process (the
tests, the bench) count separately. Names carry the `gistify_` prefix; counters end in `_total` as the
Prometheus text format expects.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

_SECONDS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The proxy's counters, gauges and histograms, in one registry."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "gistify_requests", "Requests answered, by endpoint and HTTP status", ["endpoint", "status"], registry=r
        )
        self.errors = Counter(
            "gistify_errors",
            "Errors, by kind (bad_request, too_large, unauthorized, upstream_unreachable, upstream_timeout, "
            "upstream_error, internal; compress_failed: a content sent unchanged because the compressor failed)",
            ["kind"],
            registry=r,
        )
        self.tokens_in = Counter(
            "gistify_tokens_in", "Text tokens received in message contents and prompts", registry=r
        )
        self.tokens_out = Counter("gistify_tokens_out", "Text tokens sent upstream in their place", registry=r)
        self.messages = Counter(
            "gistify_messages",
            "Message contents (and prompts) seen, by what was done: compressed, cached (same content seen "
            "before, same result), question (the last user message), short (under --min-tokens), gate (break-even "
            "said no), fallback (the fidelity guard raised the budget or kept it whole), failed (the compressor "
            "failed: sent unchanged), other_role",
            ["action"],
            registry=r,
        )
        self.compress_seconds = Histogram(
            "gistify_compress_seconds", "Seconds spent compressing one message content", buckets=_SECONDS, registry=r
        )
        self.fallbacks = Counter(
            "gistify_fallbacks",
            "Compressions the fidelity guard rejected, by what was sent instead (higher_keep, uncompressed)",
            ["outcome"],
            registry=r,
        )
        self.cache = Counter(
            "gistify_cache", "Content-hash cache look-ups, by result (hit, miss)", ["result"], registry=r
        )
        self.added_seconds = Histogram(
            "gistify_added_seconds",
            "Seconds the proxy added before forwarding (parsing, counting, compressing)",
            buckets=_SECONDS,
            registry=r,
        )
        # the break-even gate: its inputs, and per decision the figures it weighed
        self.gate_decisions = Counter(
            "gistify_gate_decisions", "Break-even decisions, by decision (compress, skip)", ["decision"], registry=r
        )
        self.gate_saved_tokens = Counter(
            "gistify_gate_saved_tokens", "Tokens the gate expected to save, by decision", ["decision"], registry=r
        )
        self.gate_usd = Counter(
            "gistify_gate_saved_usd",
            "Upstream dollars the gate expected to save, by decision",
            ["decision"],
            registry=r,
        )
        self.gate_prefill_seconds = Counter(
            "gistify_gate_prefill_seconds_saved",
            "Upstream prefill seconds the gate expected to save, by decision",
            ["decision"],
            registry=r,
        )
        self.gate_compress_seconds = Counter(
            "gistify_gate_compress_seconds_expected",
            "Compressor seconds the gate expected to spend, by decision",
            ["decision"],
            registry=r,
        )
        self.gate_setting = Gauge(
            "gistify_gate_setting",
            "The gate's inputs: price_per_mtok ($ per million upstream input tokens), prefill_tps_default (upstream "
            "prefill tokens/s assumed before any answer), latency_price ($ per hour of added latency), "
            "compress_ms_per_1k (compressor cost: measured at start and as it runs, or given)",
            ["name"],
            registry=r,
        )
        self.prefill_tps = Gauge(
            "gistify_upstream_prefill_tps",
            "The upstream's prefill speed in tokens/s, measured from its answers (smoothed), by model",
            ["model"],
            registry=r,
        )
        self.retrieve_calls = Counter(
            "gistify_retrieve_calls",
            "gistify_retrieve tool calls the proxy answered from an original (invisible to the client)",
            registry=r,
        )
        self.store_degraded = Counter(
            "gistify_store_degraded",
            "Store look-ups answered from this process's memory because the shared store (Redis) was down",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
