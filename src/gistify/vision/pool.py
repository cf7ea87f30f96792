"""Pooling: average the patch grid down to a coarser grid, the "downsampling" baseline.

Simple downsampling beats many compression methods on common benchmarks (VTC-Bench, arXiv 2510.07143;
docs/methods.md §4.3), so every method must be compared with it. The h x w grid becomes the largest h' x w' grid
that fits the budget with the image's aspect kept (h' = floor(h * sqrt(K / N)), likewise w', then one more row
and/or column if it still fits); each output token is the mean of its window (adaptive average pooling: windows of
nearly equal size that may overlap by one patch). Its slot is the window's centre patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gistify.vision.base import Reduction, VisionMethod, VisualContext


def pooled_grid(h: int, w: int, k: int) -> tuple[int, int]:
    """The largest (h', w') with h' * w' <= k that keeps the aspect of (h, w) up to one row or column."""
    scale = math.sqrt(k / (h * w))
    hh, ww = max(1, min(h, math.floor(h * scale + 1e-9))), max(1, min(w, math.floor(w * scale + 1e-9)))
    grown = [(hh + i, ww + j) for i, j in ((1, 1), (1, 0), (0, 1)) if (hh + i) * (ww + j) <= k]
    grown = [(a, b) for a, b in grown if a <= h and b <= w]
    return max(grown, key=lambda g: g[0] * g[1], default=(hh, ww))


def _windows(n: int, out: int) -> list[range]:
    # adaptive pooling's windows: [floor(i * n / out), ceil((i + 1) * n / out))
    return [range(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]


@dataclass
class Pool(VisionMethod):
    """Average pooling of the patch grid to the largest coarser grid within the budget (downsampling)."""

    name = "pool"
    needs = ("grid",)

    def select(self, ctx: VisualContext, k: int) -> Reduction:
        h, w = ctx.grid
        hh, ww = pooled_grid(h, w, k)
        x = ctx.features.T.reshape(1, -1, h, w).float()  # (1, D, h, w)
        tokens = F.adaptive_avg_pool2d(x, (hh, ww))[0].flatten(1).T.to(ctx.features.dtype)  # (hh * ww, D)
        rows, cols = _windows(h, hh), _windows(w, ww)
        index = torch.arange(ctx.n).reshape(h, w)  # bookkeeping on the CPU
        slots, sources = [], []
        for r in rows:
            for c in cols:
                centre = index[(r.start + r.stop - 1) // 2, (c.start + c.stop - 1) // 2]
                block = index[r.start : r.stop, c.start : c.stop].flatten()
                slots.append(centre)
                sources.append(torch.cat([centre.reshape(1), block[block != centre]]))
        return Reduction(torch.stack(slots), tokens, sources, ctx.n, grid=(hh, ww))
