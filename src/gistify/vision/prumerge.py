"""LLaVA-PruMerge (arXiv 2403.15388): keep the [CLS]-attention outliers, merge the others into them.

The [CLS]->patch attention of CLIP's last layer is sparse: a few patches take most of it. PruMerge keeps the
upper outliers (attention above Q3 + 1.5 IQR: an adaptive count, about 32 of 576 on LLaVA-1.5) and merges
the information of the others back: each kept token absorbs its 32 nearest tokens by key cosine, weighted by
their attention, and one extra token sums all unkept tokens weighted by their attention (the same merge that
Recoverable Compression builds on, `ops.centre_merge`).

Differences from the reference code (42Shawn/LLaVA-PruMerge, `token_prune_merge_advanced`): the kept tokens
come out in their original order (the code emits them in descending attention; order carries the position
for the LLM); a budget of K keeps the K - 1 best tokens plus the extra token (the code has only the adaptive
count). PruMerge+'s spatially uniform extra samples are not implemented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gistify.vision.base import Reduction, VisionMethod, VisualContext
from gistify.vision.ops import centre_merge, complement, iqr_ratio, weighted_sum


@dataclass
class PruMerge(VisionMethod):
    """LLaVA-PruMerge: [CLS]-attention outliers kept (IQR rule), the other tokens merged into them by key kNN.

    Based on https://arxiv.org/abs/2403.15388.

    Args:
        neighbours: tokens each kept token absorbs (the nearest by key cosine, kept ones included).
        iqr_scale: a token is an outlier above Q3 + iqr_scale * IQR of the attention.
        normalize_merge: divide each merged token by 1 + its neighbours' attention (the code does not).
    """

    name = "prumerge"
    needs = ("cls_attention", "keys")
    dynamic = True
    neighbours: int = 32
    iqr_scale: float = 1.5
    normalize_merge: bool = False

    def __post_init__(self):
        self._check_int("neighbours", 1)
        self._check_number("iqr_scale", 0, float("inf"))
        if not isinstance(self.normalize_merge, bool):
            raise ValueError(f"prumerge.normalize_merge must be True or False, got {self.normalize_merge!r}")

    def reduce_dynamic(self, ctx: VisualContext) -> Reduction:
        k = int(ctx.n * iqr_ratio(ctx.cls_attention, self.iqr_scale))
        red = self._merge(ctx, k)
        red.info["outliers"] = k
        return red

    def select(self, ctx: VisualContext, k: int) -> Reduction:
        return self._merge(ctx, k - 1)  # the extra token is the budget's last unit

    def _merge(self, ctx: VisualContext, k: int) -> Reduction:
        a = ctx.cls_attention.float()  # (N,)
        kept = a.topk(k).indices.sort().values
        merged, near = centre_merge(ctx.features, a, ctx.keys, kept, self.neighbours, None, self.normalize_merge)
        others = complement(kept, ctx.n)
        tokens = torch.cat([merged, weighted_sum(ctx.features[others], a[others])])
        sources = [torch.cat([i.reshape(1), nb]) for i, nb in zip(kept, near)] + [others]
        return Reduction(kept, tokens, sources, ctx.n)
