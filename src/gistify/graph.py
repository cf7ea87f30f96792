"""Graph algorithms of Contextual Reinforcement (docs/methods.md §1.2 steps 2 and 4), free of any model.

Shapes: n nodes (tokens), d feature width, k neighbours per node.
"""

from __future__ import annotations

import math
import warnings

import torch

from gistify.progress import progress_bar

# The locality factor exp(-|i - j| / sigma) of a pair farther apart than band(sigma) tokens is below 1e-6:
# such a pair can only be among a token's k strongest when fewer than k nearer tokens beat 1e-6.
BAND_EPS = 1e-6


def band(sigma: float, eps: float = BAND_EPS) -> int:
    """Half-width W of the band of positions |i - j| <= W searched for neighbours: ceil(sigma * ln(1 / eps))
    (55 tokens at sigma 4). Any pair outside it has a locality-weighted affinity below exp(-(W + 1) / sigma)."""
    return math.ceil(sigma * math.log(1 / eps))


def affinity_graph(
    z: torch.Tensor,
    k: int,
    sigma: float | None,
    positions: torch.Tensor | None = None,
    max_block_elems: int = 1 << 22,
    banded: bool = True,
    progress: bool = False,
) -> torch.Tensor:
    """Sparse symmetric kNN affinity matrix A (n, n) from unit-norm features z (n, d).

    A_ij = max(0, cos(z_i, z_j)) * exp(-|p_i - p_j| / sigma) for the k strongest j of each i, then
    symmetrised, (A + Aᵀ) / 2, with a zero diagonal. Neighbours are chosen by the locality-weighted
    affinity, so that a token's edges go to tokens that are both similar and near (ours: choosing by raw
    cosine first would give edges to far-away look-alikes whose locality weight is ~0). `sigma=None` or
    explicit `positions` (vision's 2-D grid) search all pairs, in blocks of rows so memory stays at about
    `max_block_elems` floats whatever n is.

    With a locality factor over token positions 0..n-1 (text: `positions=None`) and `banded`, each row only
    looks at the positions within `band(sigma)` of it (docs/methods.md §1.2 step 2): time and memory grow
    linearly with n. The result equals the all-pairs graph: a row whose k-th strongest in-band affinity is
    below the largest value any pair outside the band can reach, exp(-(W + 1) / sigma), is searched again over
    all pairs (on real text, none is).
    """
    n = z.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (n, n)).coalesce()
    if sigma is not None and positions is None and banded and n > 2 * band(sigma) + 1:
        r, c, v = _banded_knn(z, k, sigma, max_block_elems, progress)
    else:
        if positions is None:
            positions = torch.arange(n, dtype=torch.float32)
        r, c, v = _dense_knn(z, k, sigma, positions, torch.arange(n), max_block_elems, progress)
    a = torch.sparse_coo_tensor(
        torch.stack([torch.cat([r, c]), torch.cat([c, r])]), torch.cat([v, v]) / 2, (n, n), check_invariants=False
    )
    return a.coalesce()


def _dense_knn(z, k, sigma, positions, rows, max_block_elems, progress):
    """The k strongest neighbours of each of `rows` over all n nodes: (row, col, value), k per row."""
    n = z.shape[0]
    block = max(1, min(len(rows), max_block_elems // n))
    out_r, out_c, out_v = [], [], []
    starts = range(0, len(rows), block)
    with progress_bar(len(starts), "graph", progress) as advance:
        for s in starts:
            idx = rows[s : s + block]
            a = (z[idx] @ z.T).clamp_min(0)  # (b, n)
            if sigma is not None:
                a = a * torch.exp(-(positions[idx, None] - positions[None, :]).abs() / sigma)
            a[torch.arange(len(idx)), idx] = -1.0  # never one's own neighbour
            v, j = a.topk(k, dim=1)  # (b, k)
            out_r.append(idx.repeat_interleave(k))
            out_c.append(j.reshape(-1))
            out_v.append(v.reshape(-1).clamp_min(0))
            advance()
    return torch.cat(out_r), torch.cat(out_c), torch.cat(out_v)


def _banded_knn(z, k, sigma, max_block_elems, progress):
    """The k strongest neighbours of every token among the tokens within band(sigma) of it (§1.2 step 2):
    blocks of b rows against their b + 2W columns, O(n (b + 2W) d) time, O(b (b + 2W)) memory."""
    n = z.shape[0]
    w = band(sigma)
    # Rows per block: about the band's width, so a block's columns (b + 2W) are mostly in someone's band (512
    # rows computed 5.6x the products needed at sigma 4; 2W rows, 2x), within the memory cap.
    block = max(64, min(n, 2 * w, int(math.sqrt(max_block_elems)) // 4))
    outside = math.exp(-(w + 1) / sigma)  # the most a pair outside the band can weigh
    out_r, out_c, out_v, redo = [], [], [], []
    starts = range(0, n, block)
    with progress_bar(len(starts), "graph", progress) as advance:
        for s in starts:
            e = min(n, s + block)
            cs, ce = max(0, s - w), min(n, e + w)
            a = (z[s:e] @ z[cs:ce].T).clamp_min(0)  # (b, c): rows s..e, columns cs..ce
            rows, cols = torch.arange(s, e, dtype=torch.float32), torch.arange(cs, ce, dtype=torch.float32)
            a = a * torch.exp(-(rows[:, None] - cols[None, :]).abs() / sigma)
            a[torch.arange(e - s), torch.arange(s - cs, e - cs)] = -1.0
            v, j = a.topk(k, dim=1)
            ok = v[:, -1] >= outside  # the k-th in-band value beats everything outside the band
            redo.append(torch.arange(s, e)[~ok])
            out_r.append(torch.arange(s, e)[ok].repeat_interleave(k))
            out_c.append((j[ok] + cs).reshape(-1))
            out_v.append(v[ok].reshape(-1).clamp_min(0))
            advance()
    redo = torch.cat(redo)
    if len(redo):  # rare: fewer than k tokens in the band have a positive affinity
        r, c, v = _dense_knn(z, k, sigma, torch.arange(n, dtype=torch.float32), redo, max_block_elems, False)
        out_r, out_c, out_v = out_r + [r], out_c + [c], out_v + [v]
    return torch.cat(out_r), torch.cat(out_c), torch.cat(out_v)


def personalized_pagerank(
    a: torch.Tensor,
    prior: torch.Tensor,
    alpha: float = 0.85,
    iterations: int = 20,
    tol: float = 1e-4,
    progress: bool = False,
) -> torch.Tensor:
    """Relevance propagated over the graph: s <- alpha * Pᵀ s + (1 - alpha) * prior, with P = D⁻¹ A.

    `a` is a sparse (n, n) affinity, `prior` (n,) sums to 1. Stops after `iterations` or when the L1 change
    falls below `tol`. A token is reinforced when the tokens it is strongly tied to are relevant. Time and
    memory grow with the number of edges (k per node), never with n².
    """
    deg = torch.sparse.sum(a, dim=1).to_dense() + 1e-12  # (n,)
    idx, val = a.indices(), a.values()
    p_t = torch.sparse_coo_tensor(idx.flip(0), val / deg[idx[0]], a.shape, check_invariants=False).coalesce()  # Pᵀ
    # row-compressed (the coalesced entries are in row order): each iteration's product is ~100x faster than COO's
    rows, cols = p_t.indices()
    crow = torch.zeros(a.shape[0] + 1, dtype=torch.long)
    crow[1:] = torch.bincount(rows, minlength=a.shape[0]).cumsum(0)
    with warnings.catch_warnings():  # "CSR support is in beta": sparse @ dense is all that is asked of it
        warnings.simplefilter("ignore", UserWarning)
        p_t = torch.sparse_csr_tensor(crow, cols, p_t.values(), a.shape, check_invariants=False)
    s = prior.clone()
    with progress_bar(iterations, "propagation", progress) as advance:
        for _ in range(iterations):
            nxt = alpha * torch.sparse.mm(p_t, s[:, None])[:, 0] + (1 - alpha) * prior
            done = (nxt - s).abs().sum() < tol
            s = nxt
            advance()
            if done:
                break
    return s


def zscore(x: torch.Tensor) -> torch.Tensor:
    """Standardise over the sequence; a constant signal becomes zeros."""
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else torch.zeros_like(x)
