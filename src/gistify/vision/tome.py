"""ToMe, Token Merging (arXiv 2210.09461, ICLR 2023): bipartite soft matching, applied until the budget.

One round of bipartite soft matching on the current tokens (in their original order):
1. split them alternately into A (even places) and B (odd places);
2. each token of A finds its most similar token of B (cosine of the keys);
3. the r A-tokens with the most similar matches merge into their B-tokens; a merged token is the size-weighted
   average of its members (ToMe's merge_wavg), so sum(size * token) is preserved, and it keeps the slot of its
   B-token.
Rounds repeat until K tokens are left; r is at most |A| per round (ToMe's cap of half the tokens).

ToMe runs one round in each transformer block, with keys recomputed from the merged tokens; outside the
encoder there are no new keys, so a merged token's key is the size-weighted average of its members' keys.
ToMe also lets its output order follow the matching (harmless inside a ViT); here survivors keep their
original order. `sizes` (the number of tokens each output stands for, len of its sources) is what ToMe's
proportional attention adds as log(size) to the attention logits; an adapter may do the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gistify.vision.base import Reduction, VisionMethod, VisualContext


@dataclass
class ToMe(VisionMethod):
    """ToMe: bipartite soft matching merges the most similar tokens (by key) until the budget.

    Based on https://arxiv.org/abs/2210.09461.

    Args:
        r: tokens merged per round; None merges as many as a round can (half the tokens), the fewest rounds.
    """

    name = "tome"
    needs = ("keys",)
    r: int | None = None

    def __post_init__(self):
        self._check_int("r", 1, optional=True)

    def select(self, ctx: VisualContext, k: int) -> Reduction:
        dev = ctx.features.device
        slot = torch.arange(ctx.n, device=dev)  # (n,) the original slot of each current token, ascending
        xs = ctx.features.float().clone()  # (n, D) size-weighted sums of the members' features
        ks = ctx.keys.float().clone()  # (n, Dk) ... and of their keys
        size = torch.ones(ctx.n, device=dev)  # (n,)
        owner = torch.arange(ctx.n, device=dev)  # (N,) which current token each original token is merged into
        rounds = 0
        while len(slot) > k:
            n = len(slot)
            a, b = torch.arange(0, n, 2, device=dev), torch.arange(1, n, 2, device=dev)
            r = min(n - k, len(a), self.r or n)
            metric = F.normalize(ks, dim=-1)  # a sum of keys points where their mean does
            best, match = (metric[a] @ metric[b].T).max(dim=1)  # (|A|,) each A-token's best B-token
            src = torch.argsort(best, descending=True, stable=True)[:r]  # the r most similar edges
            dst = b[match[src]]
            src = a[src]
            for acc in (xs, ks):
                acc.index_add_(0, dst, acc[src])
            size.index_add_(0, dst, size[src])
            alive = torch.ones(n, dtype=torch.bool, device=dev)
            alive[src] = False
            remap = torch.arange(n, device=dev)
            remap[src] = dst  # a merged token's members now belong to its B-token
            new_index = torch.cumsum(alive, 0) - 1  # (n,) position among the survivors
            owner = new_index[remap[owner]]
            slot, xs, ks, size = slot[alive], xs[alive], ks[alive], size[alive]
            rounds += 1
        tokens = (xs / size[:, None]).to(ctx.features.dtype)
        order = torch.argsort(owner, stable=True)  # original tokens grouped by owner, ascending within a group
        sources = list(torch.split(order, torch.bincount(owner, minlength=len(slot)).tolist()))
        # put each slot's own token first in its sources
        sources = [torch.cat([s[s == i], s[s != i]]) for s, i in zip(sources, slot)]
        return Reduction(slot, tokens, sources, ctx.n, info={"rounds": rounds})
