"""FastV (arXiv 2403.06764, ECCV 2024): keep the visual tokens the LLM attends to.

After layer K of the LLM, rank the visual tokens by the attention the last token of the prompt pays them
(averaged over heads) and drop the lowest ones for all later layers; VisualContext.llm_attention holds that
attention. The surgery is the adapter's; the method is the ranking. gistify.reduce's adapters prune at the
input, not inside the LLM: the LLM's layers up to `layer` run once on the full prompt to collect the attention,
then the whole LLM reads the kept tokens (the Reductions' notes say so).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gistify.vision.base import VisionMethod, VisualContext


@dataclass
class FastV(VisionMethod):
    """FastV: keep the visual tokens that the LLM's last text token attends to most at a layer.

    Based on https://arxiv.org/abs/2403.06764.

    Args:
        layer: the LLM layer whose attention ranks the tokens; the adapter prunes after it (FastV's K = 2).
    """

    name = "fastv"
    needs = ("llm_attention",)
    layer: int = 2

    def __post_init__(self):
        self._check_int("layer", 0)

    def attention_layer(self) -> int:
        return self.layer

    def score(self, ctx: VisualContext) -> torch.Tensor:
        return ctx.llm_attention
