"""The break-even gate: compress a content only when the tokens saved pay for the compressor's time.

It knows its upstream: the upstream's prefill speed is measured from its own answers (`Speeds`), per model,
smoothed; the configured figure (`--prefill-tps`) is used only until the first answers. The compressor's
cost is measured at start and then as it runs (`Cost`). Every decision carries the figures it used and
where they came from, and says whether compressing pays in dollars, in time, or both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

ALPHA = 0.3  # the weight of a new measurement in the smoothed figures (an exponential moving average)
MIN_PREFILL_TOKENS = 128  # fewer prompt tokens than this measure the round trip, not the prefill


@dataclass(frozen=True)
class GateDecision:
    """The break-even figures for one content; `compress` is the verdict, `reason` says why."""

    compress: bool
    tokens_in: int
    saved_tokens: int
    compress_s: float
    prefill_s_saved: float
    usd_saved: float
    gain_usd: float
    prefill_tps: float = 0.0
    prefill_from: str = "default"  # measured (this model), upstream (another model of the upstream), probe, default
    compress_ms_per_1k: float = 0.0
    compress_from: str = "measured"  # measured (at start and as it runs) or given (--compress-ms-per-1k)
    reason: str = ""


class Speeds:
    """The upstream's prefill speed in tokens/s, per model, smoothed over its answers; thread-safe.

    A model not measured yet gets the upstream's latest figure for any model (one server usually serves its
    models on the same hardware), and before any answer the configured default.
    """

    def __init__(self, default_tps: float):
        self.default = default_tps
        self.by_model: dict[str, float] = {}
        self.source: dict[str, str] = {}  # per model: measured (its answers) or probe (the probe at start only)
        self.any: float | None = None
        self.any_from = "upstream"  # the latest figure of any model: from its answers (upstream) or the probe
        self.samples = 0
        self.lock = threading.Lock()

    def observe(self, model: str, prefill_tokens: int, seconds: float, source: str = "measured") -> float | None:
        """Record `prefill_tokens` read in `seconds`; the model's new figure, or None when too few to tell."""
        if prefill_tokens < MIN_PREFILL_TOKENS or seconds <= 0:
            return None
        tps = prefill_tokens / seconds
        with self.lock:
            old = self.by_model.get(model)
            new = tps if old is None else (1 - ALPHA) * old + ALPHA * tps
            self.by_model[model] = new
            self.source[model] = source
            self.any, self.any_from = new, "probe" if source == "probe" else "upstream"
            self.samples += 1
            return new

    def get(self, model: str | None) -> tuple[float, str]:
        """(tokens/s, where the figure comes from: measured, upstream, probe or default)."""
        with self.lock:
            if model in self.by_model:
                return self.by_model[model], self.source[model]
            if self.any is not None:
                return self.any, self.any_from
            return self.default, "default"


class Cost:
    """The compressor's cost in ms per 1k tokens: given and fixed, or measured at start and as it runs."""

    def __init__(self, ms_per_1k: float, given: bool):
        self.value, self.given, self.lock = ms_per_1k, given, threading.Lock()

    @property
    def source(self) -> str:
        return "given" if self.given else "measured"

    def observe(self, tokens: int, seconds: float) -> None:
        if self.given or tokens < MIN_PREFILL_TOKENS or seconds <= 0:
            return
        with self.lock:
            self.value = (1 - ALPHA) * self.value + ALPHA * seconds * 1e6 / tokens


@dataclass
class Gate:
    """Compress only when the tokens saved pay for the compressor's time.

    For a content of n tokens and a budget of t tokens (saved S = n - t):

        compress_s  C = compress_ms_per_1k * n / 1e6        the compressor's seconds
        prefill_s   F = S / prefill_tps                      upstream prefill seconds saved
        usd_saved   M = S * price_per_mtok / 1e6             upstream dollars saved
        gain_usd      = M + (F - C) * latency_price / 3600   compress when gain_usd > 0

    latency_price is what an hour of added latency is worth to the user, in dollars: it converts the net
    time (the prefill saved minus the compressor's time) into money. With a free upstream (price 0) the
    gate compresses only when compressing is faster than prefilling the tokens it saves. prefill_tps is the
    upstream's measured speed for the request's model (`Speeds`), compress_ms_per_1k the compressor's
    (`Cost`); a content, once decided, keeps its decision (the store), so a changing figure never changes
    the bytes of a content already sent.
    """

    price_per_mtok: float
    speeds: Speeds
    latency_price: float
    cost: Cost
    enabled: bool = True

    def break_even_ms_per_1k(self, tokens_in: int, target: int, model: str | None = None) -> float:
        """The compressor cost (ms per 1k tokens) at which compressing `tokens_in` to `target` gains nothing: gain_usd
        = 0 solved for compress_ms_per_1k (infinite with no latency price and dollars saved; 0 with nothing saved)."""
        saved = max(0, tokens_in - target)
        if not saved:
            return 0.0
        tps, _ = self.speeds.get(model)
        usd = saved * self.price_per_mtok / 1e6
        if not self.latency_price:
            return float("inf") if usd > 0 else 0.0
        return (usd * 3600 / self.latency_price + saved / tps) * 1e6 / tokens_in

    def decide(self, tokens_in: int, target: int, model: str | None = None) -> GateDecision:
        saved = max(0, tokens_in - target)
        tps, tps_from = self.speeds.get(model)
        ms = self.cost.value
        c = ms * tokens_in / 1e6
        f = saved / tps
        m = saved * self.price_per_mtok / 1e6
        gain = m + (f - c) * self.latency_price / 3600
        compress = saved > 0 and (gain > 0 or not self.enabled)
        if saved <= 0:
            reason = "nothing to save at this budget"
        elif not self.enabled:
            reason = "the gate is off (--no-gate)"
        elif compress:
            pays = [w for w, ok in (("dollars", m > 0), ("time", f > c and self.latency_price > 0)) if ok]
            reason = f"pays in {' and '.join(pays)}" if pays else "pays"
        else:
            reason = f"costs more than it saves: {c:.2f} s compressing for {f:.2f} s of prefill and ${m:.6f}"
        return GateDecision(
            compress=compress,
            tokens_in=tokens_in,
            saved_tokens=saved,
            compress_s=round(c, 6),
            prefill_s_saved=round(f, 6),
            usd_saved=round(m, 9),
            gain_usd=round(gain, 9),
            prefill_tps=round(tps, 1),
            prefill_from=tps_from,
            compress_ms_per_1k=round(ms, 1),
            compress_from=self.cost.source,
            reason=reason,
        )
