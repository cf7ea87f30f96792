"""Contextual Reinforcement on visual tokens: question relevance propagated over a patch affinity graph.

docs/methods.md §1.2 with visual tokens (the text version is gistify/text/reinforce.py; both use gistify.graph):

1. node features z_i: the visual tokens' states in the LLM's space (`visual_states`, else `features`),
   L2-normalised;
2. affinity graph over the visual tokens: the k nearest by max(0, cos) * exp(-d_ij / sigma), symmetrised,
   where d_ij is the Euclidean distance of the patches on the grid (no locality factor without a grid);
3. relevance prior r = softmax(cos(z_i, q) / temperature), q from the question's states (their mean, or the
   best-matching question token), or the LLM's attention to each token (the spec's FastV-style option), or
   uniform (question-agnostic: plain PageRank centrality);
4. personalised PageRank s = alpha Pᵀ s + (1 - alpha) r;
5. w = sigmoid(b1 ẑ(s) + b2 ẑ(r) + bias): visual tokens have no self-information (u = 0, so its term drops);
6. the K best by w in original order, or, with no budget, those with w >= threshold;
7. merge (on by default for visual tokens): each dropped token joins the kept token it is most affine to
   (same kernel as the graph), h_i <- (w_i h_i + sum_j w_j h_j) / (w_i + sum_j w_j).

The question's tokens are not nodes: they are always kept, so only their pull on the visual tokens matters.
Constants are the spec's except `sigma` (in patches, ours: the spec's 32 is for text tokens) and the 2-D
distance; none was tuned on a real VLM yet.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gistify.graph import affinity_graph, personalized_pagerank, zscore
from gistify.vision.base import Reduction, VisionMethod, VisualContext, top_k
from gistify.vision.ops import complement


def grid_positions(grid: tuple[int, int]) -> torch.Tensor:
    """(h * w,) complex patch positions col + i * row, row-major: |p_i - p_j| is the patches' Euclidean
    distance, which is what gistify.graph's locality factor exp(-|p_i - p_j| / sigma) reads."""
    h, w = grid
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    return torch.complex(cols, rows).flatten()


@dataclass
class VisualReinforcement(VisionMethod):
    """Contextual Reinforcement: question relevance propagated over a patch graph; dropped tokens merged.

    Reconstructed from https://arxiv.org/abs/2501.16658 (docs/methods.md §1.2).

    Args:
        k: neighbours per token in the affinity graph.
        sigma: locality scale of the 2-D distance decay, in patches (used when the context has a grid).
        temperature: softmax temperature of the relevance prior.
        alpha: PageRank damping (share of propagated versus prior relevance).
        iterations: most PageRank iterations.
        weights: (b1, b2) of propagated and prior relevance.
        bias: the weighting's bias b.
        threshold: with no budget, keep the tokens whose weight is at least this (at least one).
        query: "mean" (the spec): cosine to the mean question state; "max": best cosine to any question token;
            "attention": the prior is the LLM's attention to each token (llm_attention); "none": uniform.
        merge: merge each dropped token into its most affine kept token (step 7).
    """

    name = "reinforce"
    dynamic = True
    k: int = 10
    sigma: float = 4.0
    temperature: float = 0.1
    alpha: float = 0.85
    iterations: int = 20
    weights: tuple[float, float] = (1.0, 0.5)
    bias: float = 0.0
    threshold: float = 0.5
    query: str = "mean"
    merge: bool = True

    def __post_init__(self):
        self._check_int("k", 1)
        self._check_int("iterations", 1)
        self._check_number("sigma", 0, float("inf"), lo_open=True)
        self._check_number("temperature", 0, float("inf"), lo_open=True)
        self._check_number("alpha", 0, 1, hi_open=True)
        self._check_number("threshold", 0, 1, lo_open=True, hi_open=True)
        self._check_number("bias", -float("inf"), float("inf"))
        w = tuple(self.weights) if isinstance(self.weights, (tuple, list)) else ()
        if len(w) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in w):
            raise ValueError(f"reinforce.weights must be two numbers (b1, b2), got {self.weights!r}")
        self.weights = tuple(float(v) for v in w)
        self._check_choice("query", ("mean", "max", "attention", "none"))
        if not isinstance(self.merge, bool):
            raise ValueError(f"reinforce.merge must be True or False, got {self.merge!r}")

    def required(self) -> tuple[str, ...]:
        return {"mean": ("question_states",), "max": ("question_states",), "attention": ("llm_attention",)}.get(
            self.query, ()
        )

    def _nodes(self, ctx: VisualContext) -> torch.Tensor:
        h = ctx.visual_states if ctx.visual_states is not None else ctx.features
        if (
            ctx.question_states is not None
            and self.query in ("mean", "max")
            and h.shape[1] != ctx.question_states.shape[1]
        ):
            raise ValueError(
                f"reinforce: question_states have width {ctx.question_states.shape[1]} but the visual tokens "
                f"{h.shape[1]}; give VisualContext.visual_states in the question's space (e.g. after the projector)"
            )
        return F.normalize(h.float().cpu(), dim=-1)  # (N, D') on the CPU, where gistify.graph works

    def prior(self, ctx: VisualContext, z: torch.Tensor) -> torch.Tensor:
        """(N,) step 3's relevance prior, summing to 1."""
        if self.query == "attention":
            a = ctx.llm_attention.float().cpu().clamp_min(0)
            return a / a.sum() if a.sum() > 0 else torch.full((ctx.n,), 1 / ctx.n)
        if self.query == "none":
            return torch.full((ctx.n,), 1 / ctx.n)
        q = F.normalize(ctx.question_states.float().cpu(), dim=-1)  # (M, D')
        cos = z @ F.normalize(q.mean(0), dim=0) if self.query == "mean" else (z @ q.T).amax(dim=1)
        return torch.softmax(cos / self.temperature, dim=0)

    def token_weights(self, ctx: VisualContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) keep probabilities w (step 5), and the node features z (N, D'), both on the CPU."""
        z = self._nodes(ctx)
        r = self.prior(ctx, z)
        positions = grid_positions(ctx.grid) if ctx.grid is not None else None
        graph = affinity_graph(z, self.k, self.sigma if positions is not None else None, positions)
        s = personalized_pagerank(graph, r, self.alpha, self.iterations)
        b1, b2 = self.weights
        return torch.sigmoid(b1 * zscore(s) + b2 * zscore(r) + self.bias), z

    def select(self, ctx: VisualContext, k: int) -> Reduction:
        w, z = self.token_weights(ctx)
        return self._finish(ctx, top_k(w, k), w, z)

    def reduce_dynamic(self, ctx: VisualContext) -> Reduction:
        w, z = self.token_weights(ctx)
        kept = torch.nonzero(w >= self.threshold)[:, 0]
        return self._finish(ctx, kept if len(kept) else top_k(w, 1), w, z)

    def _finish(self, ctx: VisualContext, kept: torch.Tensor, w: torch.Tensor, z: torch.Tensor) -> Reduction:
        red = Reduction.select(ctx, kept)
        dropped = complement(kept, ctx.n)
        if not self.merge or len(dropped) == 0:
            return red
        # Step 7: the spec's argmax over kept i of A_ij, with A's kernel on every pair (the kNN graph may give
        # a dropped token no kept neighbour); a token anti-correlated with every kept one is not merged.
        affinity = (z[dropped] @ z[kept].T).clamp_min(0)  # (n_dropped, K)
        if ctx.grid is not None:
            p = grid_positions(ctx.grid)
            affinity = affinity * torch.exp(-(p[dropped, None] - p[None, kept]).abs() / self.sigma)
        best, into = affinity.max(dim=1)
        merged = best > 0
        dropped, into = dropped[merged], into[merged]
        red.sources = [torch.cat([i.reshape(1), dropped[into == j]]) for j, i in enumerate(kept)]
        red.info["merged"] = int(merged.sum())
        x, dev = ctx.features.float(), ctx.features.device
        w, kept, dropped, into = w.to(dev), kept.to(dev), dropped.to(dev), into.to(dev)
        num = (w[kept, None] * x[kept]).index_add(0, into, w[dropped, None] * x[dropped])  # (K, D)
        den = w[kept].index_add(0, into, w[dropped])  # (K,)
        red.tokens = (num / den[:, None]).to(ctx.features.dtype)
        return red
