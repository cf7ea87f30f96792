"""Recoverable Compression (arXiv 2409.01179, AAAI 2025): text-guided recovery of visual tokens.

docs/methods.md §2.2 describes the reference implementation step by step; per image (N patches):

1. a = [CLS] attention of the last encoder layer (N,); k_v = floor(N * LOF-ratio(a)); I_v = top k_v of a;
2. s_j = cos(text, patch_text_j) / sqrt(Dt): how much each patch matches the question (CLIP's text tower);
   k_t = floor(n_rest * LOF-ratio(s over the rest)); I_t = the top k_t of s among the tokens not in I_v;
3. the tokens I_v ∪ I_t are kept in their original order;
4. the rest R (n_R tokens): m = floor(n_R * LOF-ratio(a_R)) centres (the top m of a_R); each centre absorbs
   the 32 tokens of R with the highest cos(key_i, key_j) + 50 * s_j (an attention-weighted residual sum), and
   one extra token sums the non-centres weighted by their attention;
5. output: kept tokens, then the centres (descending attention), then the extra token: K' = k_v + k_t + m + 1
   (the extra token is dropped when m = 0).

`mode="code"` reproduces the released code exactly, bugs included (§2.4): m = floor(D * ratio) with D the
feature width (1024 for CLIP-L; #4), centres and neighbours use the keys of the wrong tokens (#5), LOF of the
text step runs on all N scores with the kept ones set to the minimum (#7). `mode="paper"` applies §2.4's
fixes: m = floor(n_R * ratio), keys aligned with their tokens, LOF on the remaining scores. Both modes keep
the unnormalised residual merge and the extra token (#6: that is the algorithm; `normalize_merge` is the
option). Which text is encoded (#1, #2), post-LN on the patches (#3), batching (#10) and the single ViT
forward (#11) are the adapter's business: it builds the context.

A budget (§2.4 #9) splits K between visual, text and merged tokens in the proportions k_v : k_t : m + 1 that
the dynamic rule finds for this image (largest remainders, so they sum to K), then selects with those
counts; with one merged token, that token is the extra one (all of R in one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gistify.vision.base import Reduction, VisionMethod, VisualContext
from gistify.vision.ops import centre_merge, complement, lof_ratio, weighted_sum


@dataclass
class RecoverableCompression(VisionMethod):
    """Recoverable Compression: [CLS]-attention outliers, then tokens the question points at, the rest merged.

    Based on https://arxiv.org/abs/2409.01179 (reference code: banjiuyufen/Recoverable-Compression).

    Args:
        mode: "paper" (the intent, with the reference code's bugs fixed) or "code" (as released).
        lof_neighbors: LOF n_neighbors of the visual, text and centre steps.
        neighbours: tokens each centre absorbs.
        text_weight: weight of the text score in a centre's choice of neighbours (50 in the code, so the text
            term is about 1.8 * cos(text, patch)).
        text_guidance: False drops the question (no text recovery, no text term in the merge): the visual-only
            ablation, which needs no patch_text or text.
        normalize_merge: divide each merged centre by 1 + its neighbours' attention (paper mode only).
        upper_outliers: count only LOF outliers above the median (paper mode only; §2.4 #8).
        text_share: with a budget, the share of it given to the question's picks (step 2) before the rest is split
            between visual picks and merged tokens in the dynamic rule's proportions; None (default): all three
            parts in the dynamic rule's proportions (§2.4 #9). Not in the paper: where the question decides which
            tokens matter, the [CLS]-attention picks go to salient objects whatever is asked (docs/methods.md §2.6).
    """

    name = "recover"
    needs = ("cls_attention", "keys", "patch_text", "text")
    dynamic = True
    mode: str = "paper"
    lof_neighbors: tuple[int, int, int] = (20, 20, 10)
    neighbours: int = 32
    text_weight: float = 50.0
    text_guidance: bool = True
    normalize_merge: bool = False
    upper_outliers: bool = False
    text_share: float | None = None

    def __post_init__(self):
        self._check_choice("mode", ("paper", "code"))
        lof = tuple(self.lof_neighbors) if isinstance(self.lof_neighbors, (tuple, list)) else ()
        if len(lof) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in lof):
            raise ValueError(f"recover.lof_neighbors must be three ints >= 1, got {self.lof_neighbors!r}")
        self.lof_neighbors = lof
        self._check_int("neighbours", 1)
        self._check_number("text_weight", 0, math.inf)
        for f in ("text_guidance", "normalize_merge", "upper_outliers"):
            if not isinstance(getattr(self, f), bool):
                raise ValueError(f"recover.{f} must be True or False, got {getattr(self, f)!r}")
        if self.text_share is not None:
            self._check_number("text_share", 0, 1)
            if not self.text_guidance:
                raise ValueError("recover.text_share needs the question: text_guidance=False has no text picks")
        if self.mode == "code" and (self.normalize_merge or self.upper_outliers):
            raise ValueError(
                "recover.normalize_merge and recover.upper_outliers are paper-mode options: mode='code' "
                "reproduces the released code exactly"
            )

    def required(self) -> tuple[str, ...]:
        return self.needs if self.text_guidance else ("cls_attention", "keys")

    def text_scores(self, ctx: VisualContext) -> torch.Tensor:
        """(N,) s_j = cos(text, patch_text_j) / sqrt(Dt) (step 2); zeros without text guidance."""
        if not self.text_guidance:
            return torch.zeros(ctx.n, device=ctx.features.device)
        v = F.normalize(ctx.patch_text.float(), dim=-1)  # (N, Dt)
        t = F.normalize(ctx.text.float(), dim=-1)  # (Dt,)
        return (v @ t) * ctx.patch_text.shape[-1] ** -0.5

    def reduce_dynamic(self, ctx: VisualContext) -> Reduction:
        return self._run(ctx, None)

    def select(self, ctx: VisualContext, k: int) -> Reduction:
        return self._run(ctx, k)

    def _ratio(self, x: torch.Tensor, step: int) -> float:
        return lof_ratio(x, self.lof_neighbors[step], self.upper_outliers)

    def _keep(self, a: torch.Tensor, s: torch.Tensor, k_v: int | None, k_t: int | None):
        """Steps 1-3: the visual and text picks. Counts given as None come from the LOF rule."""
        n = len(a)
        if k_v is None:
            k_v = int(n * self._ratio(a, 0))
        i_v = a.topk(k_v).indices
        if not self.text_guidance:
            k_t, i_t = 0, i_v[:0]
        elif self.mode == "code":
            # §2.4 #7: the kept tokens' scores become the minimum and LOF sees all N values, ties included.
            masked = s.clone()
            masked[i_v] = s.min()
            if k_t is None:
                k_t = int((n - k_v) * self._ratio(masked, 1))
            i_t = masked.topk(k_t).indices
        else:
            rest = complement(i_v, n)
            if k_t is None:
                k_t = int(len(rest) * self._ratio(s[rest], 1))
            i_t = rest[s[rest].topk(k_t).indices]
        return torch.unique(torch.cat([i_v, i_t])), k_v, k_t  # unique: sorted, the original order

    def _merge_count(self, a_rest: torch.Tensor, width: int, notes: list[str]) -> int:
        """Step 4's number of centres m from the LOF rule."""
        n_rest = len(a_rest)
        # §2.4 #4: the released code multiplies by the feature width (a variable overwritten by the tensor's
        # last dimension) where the remainder's size is meant.
        m = int((width if self.mode == "code" else n_rest) * self._ratio(a_rest, 2))
        if m > n_rest:
            notes.append(
                f"recover: {m} centres asked for {n_rest} remaining tokens; clamped (the released code fails here)"
            )
            m = n_rest
        return m

    def _run(self, ctx: VisualContext, target: int | None) -> Reduction:
        x, a = ctx.features, ctx.cls_attention.float()  # (N, D), (N,)
        s = self.text_scores(ctx)
        notes: list[str] = []
        keep, k_v, k_t = self._keep(a, s, None, None)
        rest = complement(keep, ctx.n)  # R, ascending
        m = self._merge_count(a[rest], x.shape[1], notes) if len(rest) else 0
        info = {"k_v": k_v, "k_t": k_t, "m": m, "extra": int(m > 0)}
        if target is None:
            merged = m + 1 if m else 0  # the extra token comes only with centres (the code drops it when m = 0)
        else:
            info["dynamic"] = dict(info)
            if self.text_share is None:
                k_v, k_t, merged = _split(target, (k_v, k_t, m + 1 if m else 0))
            else:  # the question's share first, the rest split as the dynamic rule splits visual and merged
                k_t = round(target * self.text_share)
                k_v, _, merged = _split(target - k_t, (k_v, 0, m + 1 if m else 0))
            keep, k_v, k_t = self._keep(a, s, k_v, k_t)
            rest = complement(keep, ctx.n)
            m = max(merged - 1, 0)  # the extra token is one of the merged part
            info.update(k_v=k_v, k_t=k_t, m=m, extra=int(merged > 0))
        out = Reduction.select(ctx, keep, info=info, notes=notes)
        if merged and len(rest):
            self._recover(ctx, a, s, rest, m, out)
        return out

    def _recover(
        self, ctx: VisualContext, a: torch.Tensor, s: torch.Tensor, rest: torch.Tensor, m: int, out: Reduction
    ):
        """Step 4: merge the remainder R into m centres and one extra token, appended to `out`."""
        x_r, a_r = ctx.features[rest], a[rest]  # (n_R, D), (n_R,)
        # §2.4 #5: the released code takes the keys at the remainder's local positions 0..n_R-1, i.e. of the
        # wrong tokens; paper mode takes each token's own key.
        k_r = ctx.keys[: len(rest)] if self.mode == "code" else ctx.keys[rest]
        centres = a_r.topk(m).indices  # descending attention: the order the centres are appended in
        bonus = self.text_weight * s[rest] if self.text_guidance else None
        merged, near = centre_merge(x_r, a_r, k_r, centres, self.neighbours, bonus, self.normalize_merge)
        others = complement(centres, len(rest))
        extra = weighted_sum(x_r[others], a_r[others])
        out.tokens = torch.cat([out.tokens, merged, extra])
        out.sources += [rest[torch.cat([c.reshape(1), nb])] for c, nb in zip(centres, near)] + [rest[others]]


def _split(k: int, parts: tuple[int, int, int]) -> tuple[int, int, int]:
    """k split in the proportions of `parts` (largest remainders, earlier parts first on ties); all to the
    first part when every part is 0."""
    total = sum(parts)
    if total == 0:
        return k, 0, 0
    raw = [k * p / total for p in parts]
    out = [math.floor(r) for r in raw]
    for i in sorted(range(3), key=lambda i: (-(raw[i] - out[i]), i))[: k - sum(out)]:
        out[i] += 1
    return tuple(out)
