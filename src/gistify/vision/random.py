"""The floor every visual-token method must beat: keep random tokens.

Random pruning is a strong baseline for visual tokens (UniPruneBench, arXiv 2511.02650; docs/methods.md §4.3):
neighbouring patches are redundant, so any spread-out subset keeps much of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gistify.vision.base import VisionMethod, VisualContext


@dataclass
class RandomTokens(VisionMethod):
    """Keep random visual tokens (seeded) up to the budget, in their original order.

    Args:
        seed: random seed; the same seed and number of tokens keep the same tokens.
    """

    name = "random"
    seed: int = 0

    def __post_init__(self):
        self._check_int("seed", 0)

    def score(self, ctx: VisualContext) -> torch.Tensor:
        # drawn on the CPU so that a seed keeps the same tokens on every device
        return torch.rand(ctx.n, generator=torch.Generator().manual_seed(self.seed)).to(ctx.features.device)
