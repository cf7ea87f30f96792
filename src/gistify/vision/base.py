"""What every visual-token reducer shares: the context it reads, the reduction it returns, budget handling.

The algorithm is kept apart from model surgery (docs/architecture.md): a method sees one image's tokens and a few
tensors an adapter collected (`VisualContext`), and returns which tokens survive and what goes to the LLM
(`Reduction`). Only adapters know where a model keeps those tensors, and they apply the result.

Shapes: N visual tokens of one image, D their width (what enters the projector or the LLM), Dk the width of
the encoder's keys, Dt the text-aligned width (CLIP's projection), M question tokens, D' the LLM's width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from gistify.budget import Budget
from gistify.method import Method

# What an adapter must collect for each context field; named in the error when a method lacks one.
PROVIDERS = {
    "features": "the visual tokens as they enter the projector or the LLM (e.g. CLIP penultimate patch states)",
    "cls_attention": "the vision encoder's last-layer [CLS]->patch attention (output_attentions=True, or "
    "gistify.vision.ops.cls_attention(q, k) from that layer's queries and keys)",
    "keys": "the last encoder layer's keys of the patches (a forward hook on its k_proj), [CLS] dropped",
    "patch_text": "the patch states projected into the text-aligned space (CLIP visual_projection), [CLS] dropped",
    "text": "the question's embedding from the matching text tower (CLIPTextModelWithProjection.text_embeds)",
    "llm_attention": "the attention the LLM's last text token pays to each visual token at a layer (FastV: run "
    "that layer with eager attention)",
    "question_states": "the hidden states of the question's tokens, in the same space as visual_states",
    "visual_states": "the visual tokens' states in the LLM's space (e.g. after the projector)",
    "grid": "the (h, w) patch grid of the image",
}


@dataclass
class VisualContext:
    """One image's visual tokens and what an adapter collected about them. Only `features` is required; a
    method declares what else it reads (`VisionMethod.needs`).

    Args:
        features: (N, D) the tokens as they enter the projector / LLM (LLaVA: CLIP layer -2, [CLS] dropped).
        cls_attention: (N,) [CLS]->patch attention of the encoder's last layer (or an analogue, e.g. the
            probe of a SigLIP MAP head).
        keys: (N, Dk) that layer's keys of the patches.
        patch_text: (N, Dt) patch embeddings in a text-aligned space (CLIP visual_projection of the patches).
        text: (Dt,) the question's embedding in that space (CLIP text tower).
        llm_attention: (N,) attention the LLM's last text token pays to each visual token at a layer.
        question_states: (M, D') hidden states of the question's tokens.
        visual_states: (N, D') the visual tokens' hidden states in the same space.
        grid: (h, w) with h * w == N when the tokens form a row-major grid.
    """

    features: torch.Tensor
    cls_attention: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    patch_text: torch.Tensor | None = None
    text: torch.Tensor | None = None
    llm_attention: torch.Tensor | None = None
    question_states: torch.Tensor | None = None
    visual_states: torch.Tensor | None = None
    grid: tuple[int, int] | None = None

    # field: (ndim, whether its first dimension is N, the shape named in errors)
    _SHAPES: ClassVar[dict] = {
        "cls_attention": (1, True, "(N,)"),
        "llm_attention": (1, True, "(N,)"),
        "keys": (2, True, "(N, Dk)"),
        "patch_text": (2, True, "(N, Dt)"),
        "text": (1, False, "(Dt,)"),
        "question_states": (2, False, "(M, D')"),
        "visual_states": (2, True, "(N, D')"),
    }

    def __post_init__(self):
        x = self.features
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or len(x) == 0:
            raise ValueError(f"VisualContext.features must be an (N, D) tensor with N >= 1, got {_shape(x)}")
        n = self.n
        for name, (ndim, per_token, want) in self._SHAPES.items():
            v = getattr(self, name)
            if v is None:
                continue
            if not isinstance(v, torch.Tensor) or v.ndim != ndim or len(v) == 0 or (per_token and len(v) != n):
                raise ValueError(f"VisualContext.{name} must be a {want} tensor with N = {n}, got {_shape(v)}")
            if v.device != x.device:
                raise ValueError(f"VisualContext.{name} is on {v.device} but features on {x.device}: put both on one")
        for a, b in (("question_states", "visual_states"), ("text", "patch_text")):
            va, vb = getattr(self, a), getattr(self, b)
            if va is not None and vb is not None and va.shape[-1] != vb.shape[-1]:
                raise ValueError(
                    f"VisualContext.{a} has width {va.shape[-1]} but {b} {vb.shape[-1]}: both must be in one space"
                )
        if self.grid is not None:
            self.grid = tuple(int(g) for g in self.grid)
            if len(self.grid) != 2 or min(self.grid) < 1 or self.grid[0] * self.grid[1] != n:
                raise ValueError(f"VisualContext.grid must be (h, w) with h * w = N = {n}, got {self.grid}")

    @property
    def n(self) -> int:
        return len(self.features)

    def require(self, names: tuple[str, ...], method: str) -> None:
        """Raise a ValueError naming the first missing field and what provides it."""
        for name in names:
            if getattr(self, name) is None:
                raise ValueError(f"{method} needs VisualContext.{name}: {PROVIDERS[name]}")


def _shape(x) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


@dataclass
class Reduction:
    """What a method did to one image's tokens.

    The output sequence `tokens` has two parts. Its first `len(kept)` tokens sit in the slots of the original
    tokens `kept` (ascending, so the original order holds): each is that token itself, or, for a merging
    method, that token with others merged into it. The tokens after them are extra ones appended with no slot
    of their own (merged cluster centres, contextual or aggregate tokens); adapters give them the positions
    that follow the last slot, as the reference implementations do.

    Args:
        kept: (K,) long, ascending: the original tokens whose slots survive.
        tokens: (K', D), K' >= K: the sequence that replaces the N visual tokens, on the features' device and
            in their dtype.
        sources: K' long tensors: the original tokens each output token stands for (itself first for a slot).
            `kept` and `sources` are bookkeeping and live on the CPU.
        n_in: N, the tokens before reduction.
        budget_chosen: K' when the method chose it (dynamic rule), else None.
        grid: (h', w') when the output is a grid again (pooling, identity).
        info: per-stage counts and other numbers worth reporting (e.g. recover's k_v, k_t, m).
        notes: what a user should know about this reduction.
    """

    kept: torch.Tensor
    tokens: torch.Tensor
    sources: list[torch.Tensor]
    n_in: int
    budget_chosen: int | None = None
    grid: tuple[int, int] | None = None
    info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def n_out(self) -> int:
        return len(self.tokens)

    @property
    def keep_ratio(self) -> float:
        return self.n_out / self.n_in

    @classmethod
    def select(cls, ctx: VisualContext, kept: torch.Tensor, **kw) -> Reduction:
        """Keep the tokens `kept` (ascending) unchanged: the result of every pure selection method."""
        tokens = ctx.features[kept.to(ctx.features.device)]
        return cls(kept=kept, tokens=tokens, sources=[i.reshape(1) for i in kept], n_in=ctx.n, **kw)

    def check(self, target: int | None) -> Reduction:
        """Guard the contract every method keeps; a failure here is a bug in the method, not bad input.

        Budget rule: extra tokens (recover's and PruMerge's aggregate token, VisionZip's contextual tokens) count
        against the budget, so K' <= target always, and every method but pooling (the largest grid that fits)
        gives exactly the target.
        """
        k = len(self.kept)
        if self.kept.dtype != torch.long or (k > 1 and not bool((self.kept[1:] > self.kept[:-1]).all())):
            raise AssertionError("Reduction.kept must be ascending long indices")
        if len(self.sources) != self.n_out or self.n_out < k:
            raise AssertionError(f"Reduction has {self.n_out} tokens, {k} slots and {len(self.sources)} sources")
        if target is not None and self.n_out > target:
            raise AssertionError(f"Reduction has {self.n_out} tokens, over the budget of {target}")
        return self


def identity(ctx: VisualContext) -> Reduction:
    """Every token kept, unchanged (the same tensor: nothing is copied or modified)."""
    kept = torch.arange(ctx.n)  # on the CPU, as every Reduction's indices
    return Reduction(kept, ctx.features, [i.reshape(1) for i in kept], ctx.n, grid=ctx.grid)


def _on_cpu(red: Reduction) -> Reduction:
    red.kept = red.kept.cpu()
    red.sources = [s.cpu() for s in red.sources]
    return red


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """(k,) long: the indices of the k highest scores, ascending (original order). Ties go to the earlier
    token, so the choice is deterministic."""
    order = torch.argsort(scores.float(), descending=True, stable=True)
    return order[:k].sort().values


@dataclass
class VisionMethod(Method):
    """Base of the visual-token reducers. A selection method implements `score` (higher = keep); a merging
    method overrides `select` (or `reduce_dynamic` for its own budget rule). Budgets, identity and the
    contract checks are here."""

    kind: ClassVar[str] = "vision"
    needs: ClassVar[tuple[str, ...]] = ()  # VisualContext fields read besides `features`
    dynamic: ClassVar[bool] = False  # whether the method has its own budget rule (reduce with budget=None)

    def required(self) -> tuple[str, ...]:
        """The context fields this instance reads (recover's text_guidance and reinforce's query change them)."""
        return self.needs

    def attention_layer(self) -> int:
        """The LLM layer whose attention an adapter puts in `llm_attention` when `required()` asks for it:
        FastV's K, and 2 (FastV's default) for methods that read it only as a prior."""
        return 2

    def reduce(self, ctx: VisualContext, budget: Budget | None = None) -> Reduction:
        """Reduce one image's tokens to the budget, or by the method's own rule when `budget` is None."""
        if not isinstance(ctx, VisualContext):
            raise TypeError(f"{self.name}.reduce takes a VisualContext, got {type(ctx).__name__}")
        ctx.require(self.required(), self.name)
        if budget is None:
            if not self.dynamic:
                raise ValueError(f"{self.name} has no budget rule of its own: give a Budget (keep= or tokens=)")
            red = _on_cpu(self.reduce_dynamic(ctx))
            red.budget_chosen = red.n_out
            return red.check(None)
        if not isinstance(budget, Budget):
            raise TypeError(f"budget must be a gistify.Budget or None, got {type(budget).__name__}")
        target = budget.target(ctx.n)
        if target >= ctx.n:  # identity is a tested case: keeping everything changes nothing
            return identity(ctx)
        return _on_cpu(self.select(ctx, target)).check(target)

    def select(self, ctx: VisualContext, k: int) -> Reduction:
        """Reduce to at most k < N tokens. Default: the k best scores, in original order. Methods compute on
        the features' device (creating index tensors there too); only LOF and the graph run on the CPU."""
        return Reduction.select(ctx, top_k(self.score(ctx), k))

    def score(self, ctx: VisualContext) -> torch.Tensor:
        """(N,) how much each token is worth keeping. Merging methods override `select` instead."""
        raise NotImplementedError(f"{self.name} defines neither score nor select")

    def reduce_dynamic(self, ctx: VisualContext) -> Reduction:
        """The method's own budget rule; `reduce` calls it only for methods with `dynamic = True`, which
        override it (recover's LOF rule, reinforce's threshold)."""
        raise NotImplementedError(f"{self.name} sets dynamic = True but defines no reduce_dynamic")
