"""VisionZip (arXiv 2412.04467, CVPR 2025): dominant tokens by [CLS] attention, plus a few contextual tokens.

Question-agnostic, before the LLM. Of a budget K:
- dominant: the K - c tokens the encoder's [CLS] attends to most (the reference sums the heads of layer -2's
  attention), kept unchanged in their original order;
- contextual: the other tokens, in their original order, are split into c evenly spaced targets (every
  floor(n_rest / c)-th) and the rest; each of the rest joins the target whose key it is most similar to
  (cosine of the layer's head-averaged keys), and each group becomes the plain mean of its members; the c
  contextual tokens are appended after the dominant ones.

The paper's settings keep c / K = 10/64 at every budget (54 + 10, 108 + 20, 162 + 30), the default here. The
reference also keeps [CLS] as a dominant token; the context here holds patches only (the LLaVA-1.5 layout),
so every dominant token is a patch. Which layer's attention and keys to collect is the adapter's business
(VisionZip: layer -2, head-summed attention; PruMerge / recover: the last layer, one full-width head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gistify.vision.base import Reduction, VisionMethod, VisualContext, top_k
from gistify.vision.ops import complement


@dataclass
class VisionZip(VisionMethod):
    """VisionZip: dominant tokens by [CLS] attention plus contextual tokens merged by key similarity.

    Based on https://arxiv.org/abs/2412.04467.

    Args:
        contextual: the share of the budget given to contextual (merged) tokens, rounded to a whole token.
    """

    name = "visionzip"
    needs = ("cls_attention", "keys")
    contextual: float = 10 / 64

    def __post_init__(self):
        self._check_number("contextual", 0, 1, hi_open=True)

    def select(self, ctx: VisualContext, k: int) -> Reduction:
        c = round(k * self.contextual)
        dominant = top_k(ctx.cls_attention, k - c)  # (k - c,) ascending
        red = Reduction.select(ctx, dominant, info={"dominant": k - c, "contextual": c})
        if c == 0:
            return red
        rest = complement(dominant, ctx.n)  # (n_rest,) ascending, n_rest >= c since k < N
        step = max(1, len(rest) // c)
        is_target = torch.zeros(len(rest), dtype=torch.bool, device=rest.device)
        is_target[torch.arange(0, len(rest), step, device=rest.device)[:c]] = True
        targets, members = rest[is_target], rest[~is_target]  # (c,), (n_rest - c,)
        unit = F.normalize(ctx.keys.float(), dim=-1)
        group = (unit[members] @ unit[targets].T).argmax(dim=1)  # (n_rest - c,) which target each joins
        x = ctx.features.float()
        sums = x[targets].index_add(0, group, x[members])  # (c, D): a target counts once in its own group
        counts = 1 + torch.bincount(group, minlength=c)
        red.tokens = torch.cat([red.tokens, (sums / counts[:, None]).to(ctx.features.dtype)])
        red.sources += [torch.cat([t.reshape(1), members[group == i]]) for i, t in enumerate(targets)]
        return red
