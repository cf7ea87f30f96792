"""Tensor operations that several visual-token methods share: [CLS] attention, outlier ratios, centre merging.

Shapes: N tokens, C the width of the encoder's queries and keys, D the tokens' width, m cluster centres.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F


def cls_attention(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """(N,) [CLS]->patch attention the way LLaVA-PruMerge and Recoverable Compression compute it from a layer's
    projections: one head over the full width, softmax(q_cls kᵀ / sqrt(C)) without the [CLS] column.

    q, k: (N + 1, C) the layer's q_proj and k_proj outputs, [CLS] first (CLIP-L/336: 577 x 1024, layer 23).
    """
    scores = (q[:1].float() @ k.float().T) * q.shape[-1] ** -0.5  # (1, N + 1)
    return torch.softmax(scores, dim=-1)[0, 1:]


def lof_ratio(x: torch.Tensor, k: int, upper_only: bool = False) -> float:
    """The fraction of the values of x (n,) that LOF calls outliers: sklearn LocalOutlierFactor(n_neighbors=k,
    contamination='auto'), i.e. LOF > 1.5 (Recoverable Compression's "dynamic scale filter", docs/methods.md §2.2
    step 3). `upper_only` counts only outliers above the median (§2.4 #8: LOF flags low outliers too, yet the
    ratio feeds a top-k of the high values)."""
    from sklearn.neighbors import LocalOutlierFactor  # lazy: scikit-learn is slow to import

    values = x.detach().float().cpu().numpy().reshape(-1, 1)  # float32, as the reference passes it
    n = len(values)
    if n < 2:
        return 0.0
    with warnings.catch_warnings():
        # sklearn warns about duplicate values (fp16 scores; the reference's masked text scores) and about
        # n_neighbors >= n (it then uses n - 1); both are what the reference computes, so neither is news.
        warnings.simplefilter("ignore", UserWarning)
        outlier = LocalOutlierFactor(n_neighbors=k, contamination="auto").fit_predict(values) == -1
    if upper_only:
        outlier &= values[:, 0] > np.median(values)
    return float(np.sum(outlier) / n)  # the reference's np.float64 count / n, so int(n * ratio) matches


def iqr_ratio(x: torch.Tensor, scale: float = 1.5) -> float:
    """The fraction of the values of x (n,) above Q3 + scale * IQR (LLaVA-PruMerge's adaptive selection: the
    upper outliers of the [CLS] attention; numpy's linear percentiles, as its reference code)."""
    values = x.detach().float().cpu().numpy().ravel()
    q1, q3 = np.percentile(values, 25), np.percentile(values, 75)
    return float(np.sum(values > q3 + scale * (q3 - q1)) / len(values))


def centre_merge(
    x: torch.Tensor,
    weight: torch.Tensor,
    keys: torch.Tensor,
    centres: torch.Tensor,
    neighbours: int,
    bonus: torch.Tensor | None = None,
    normalize: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PruMerge's merge, which Recoverable Compression extends: each centre absorbs its nearest tokens.

    For each centre i, the `neighbours` tokens j != i (other centres included) with the highest
    cos(k_i, k_j) + bonus_j become x_i + sum_j weight_j x_j: a residual, attention-weighted sum, unnormalised
    as in both reference codes (`normalize` divides by 1 + sum_j weight_j, docs/methods.md §2.4 #6). A token can feed
    several centres.

    x: (n, D) tokens; weight: (n,) merge weights (the [CLS] attention); keys: (n, C) the keys used for token j
    (row j); centres: (m,) indices into x; bonus: (n,) added to every similarity (recover's text term).
    Returns the merged centres (m, D) in x's dtype and the neighbours each took (m, nb).
    """
    m, n = len(centres), len(x)
    nb = min(neighbours, n - 1)
    if m == 0 or nb <= 0:
        return x[centres], torch.zeros(m, 0, dtype=torch.long, device=x.device)
    unit = F.normalize(keys.float(), dim=-1)
    sim = unit[centres] @ unit.T  # (m, n)
    if bonus is not None:
        sim = sim + bonus.float()[None, :]
    sim[torch.arange(m, device=x.device), centres] = -torch.inf  # a centre is not its own neighbour
    near = sim.topk(nb, dim=1).indices  # (m, nb)
    w = weight.float()[near]  # (m, nb)
    merged = x[centres].float() + torch.einsum("mk,mkd->md", w, x[near].float())
    if normalize:
        merged = merged / (1 + w.sum(1, keepdim=True))
    return merged.to(x.dtype), near


def weighted_sum(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(1, D): sum_j weight_j x_j, the extra token PruMerge and recover append for the tokens no centre took."""
    return (weight.float() @ x.float())[None].to(x.dtype)


def complement(idx: torch.Tensor, n: int) -> torch.Tensor:
    """The indices in range(n) not in idx, ascending."""
    mask = torch.ones(n, dtype=torch.bool, device=idx.device)
    mask[idx] = False
    return torch.nonzero(mask)[:, 0]
