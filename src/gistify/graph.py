"""Graph algorithms of Contextual Reinforcement (docs/methods.md §1.2 steps 2 and 4), free of any model.

Shapes: n nodes (tokens), d feature width, k neighbours per node.
"""

from __future__ import annotations

import torch


def affinity_graph(
    z: torch.Tensor, k: int, sigma: float | None, positions: torch.Tensor | None = None, max_block_elems: int = 1 << 22
) -> torch.Tensor:
    """Sparse symmetric kNN affinity matrix A (n, n) from unit-norm features z (n, d).

    A_ij = max(0, cos(z_i, z_j)) * exp(-|p_i - p_j| / sigma) for the k strongest j of each i, then
    symmetrised, (A + Aᵀ) / 2, with a zero diagonal. Neighbours are chosen by the locality-weighted
    affinity, so that a token's edges go to tokens that are both similar and near (ours: choosing by raw
    cosine first would give edges to far-away look-alikes whose locality weight is ~0). `sigma=None` or
    `positions=None` means no locality factor (cross-modal edges). Rows are computed in blocks so memory
    stays at about `max_block_elems` floats whatever n is.
    """
    n = z.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (n, n)).coalesce()
    if positions is None:
        positions = torch.arange(n, dtype=torch.float32)
    rows, cols, vals = [], [], []
    block = max(1, min(n, max_block_elems // n))
    for s in range(0, n, block):
        e = min(n, s + block)
        a = (z[s:e] @ z.T).clamp_min(0)  # (b, n)
        if sigma is not None:
            a = a * torch.exp(-(positions[s:e, None] - positions[None, :]).abs() / sigma)
        a[torch.arange(e - s), torch.arange(s, e)] = -1.0  # never one's own neighbour
        v, j = a.topk(k, dim=1)  # (b, k)
        rows.append(torch.arange(s, e).repeat_interleave(k))
        cols.append(j.reshape(-1))
        vals.append(v.reshape(-1).clamp_min(0))
    r, c, v = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    a = torch.sparse_coo_tensor(
        torch.stack([torch.cat([r, c]), torch.cat([c, r])]), torch.cat([v, v]) / 2, (n, n), check_invariants=False
    )
    return a.coalesce()


def personalized_pagerank(
    a: torch.Tensor, prior: torch.Tensor, alpha: float = 0.85, iterations: int = 20, tol: float = 1e-4
) -> torch.Tensor:
    """Relevance propagated over the graph: s <- alpha * Pᵀ s + (1 - alpha) * prior, with P = D⁻¹ A.

    `a` is a sparse (n, n) affinity, `prior` (n,) sums to 1. Stops after `iterations` or when the L1 change
    falls below `tol`. A token is reinforced when the tokens it is strongly tied to are relevant.
    """
    deg = torch.sparse.sum(a, dim=1).to_dense() + 1e-12  # (n,)
    idx, val = a.indices(), a.values()
    p_t = torch.sparse_coo_tensor(idx.flip(0), val / deg[idx[0]], a.shape, check_invariants=False).coalesce()  # Pᵀ
    s = prior.clone()
    for _ in range(iterations):
        nxt = alpha * torch.sparse.mm(p_t, s[:, None])[:, 0] + (1 - alpha) * prior
        done = (nxt - s).abs().sum() < tol
        s = nxt
        if done:
            break
    return s


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Standardise over the sequence; a constant signal becomes zeros."""
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else torch.zeros_like(x)
