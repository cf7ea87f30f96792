"""The break-even gate: compress a content only when the tokens saved pay for the compressor's time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    """The break-even figures for one content; `compress` is the verdict."""

    compress: bool
    tokens_in: int
    saved_tokens: int
    compress_s: float
    prefill_s_saved: float
    usd_saved: float
    gain_usd: float


@dataclass(frozen=True)
class Gate:
    """Compress only when the tokens saved pay for the compressor's time.

    For a content of n tokens and a budget of t tokens (saved S = n - t):

        compress_s  C = compress_ms_per_1k * n / 1e6        the compressor's seconds
        prefill_s   F = S / prefill_tps                      upstream prefill seconds saved
        usd_saved   M = S * price_per_mtok / 1e6             upstream dollars saved
        gain_usd      = M + (F - C) * latency_price / 3600   compress when gain_usd > 0

    latency_price is what an hour of added latency is worth to the user, in dollars: it converts the net
    time (the prefill saved minus the compressor's time) into money. With a free upstream (price 0) the
    gate compresses only when compressing is faster than prefilling the tokens it saves. compress_ms_per_1k
    is measured once at start (or given) and then fixed, so the same content always gets the same verdict.
    """

    price_per_mtok: float
    prefill_tps: float
    latency_price: float
    compress_ms_per_1k: float
    enabled: bool = True

    def decide(self, tokens_in: int, target: int) -> GateDecision:
        saved = max(0, tokens_in - target)
        c = self.compress_ms_per_1k * tokens_in / 1e6
        f = saved / self.prefill_tps
        m = saved * self.price_per_mtok / 1e6
        gain = m + (f - c) * self.latency_price / 3600
        return GateDecision(
            compress=saved > 0 and (gain > 0 or not self.enabled),
            tokens_in=tokens_in,
            saved_tokens=saved,
            compress_s=round(c, 6),
            prefill_s_saved=round(f, 6),
            usd_saved=round(m, 9),
            gain_usd=round(gain, 9),
        )
