"""Context across a text's memory tokens: a small causal transformer over the resampled slots (ours, issue 24).

The resampler reads each image alone, and with local latents (ResamplerConfig.local) each memory token sees its
own stretch of a line and the other latents of its image. The teacher it is distilled into (docs/methods.md
§3.10-3.11) reads the LLM's layer-18 states, each of which draws on every token before it in the window: a word's
state depends on the sentence it ends and on the paragraph before. This module gives the vision path that
context: after the resampler, every memory token of a text attends to the tokens before it in reading order
(across lines and images), within `window` tokens, through `layers` pre-norm transformer blocks.

Causal, like the states it learns: a token's output never depends on text after it, so a long text read in
pieces gives each piece what it gives whole, up to the window. Each token also attends to itself, so a token with
no earlier token to read has one key, never a softmax over nothing. The output projections start at zero: a
freshly built module is the identity, and weights trained without it read the same memory with it.

Positions: a fixed sinusoidal embedding of each token's index among the text's kept tokens (no learned table, so
any length is read), added to the attention's input only. Axes: B texts, S memory tokens, D width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def sinusoid(index: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, S) positions -> (B, S, dim): the Transformer's fixed sinusoidal embedding (arXiv 1706.03762, §3.5)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=index.device) / half)
    angle = index.float()[..., None] * freq
    return torch.cat([angle.sin(), angle.cos()], dim=-1)


class ContextBlock(nn.Module):
    """x + Attn(LN(x)) then x + MLP(LN(x)); attention masked by `allowed` (B, 1, S, S)."""

    def __init__(self, dim: int, heads: int, ff_mult: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"context width {dim} must be a multiple of its {heads} heads")
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.ff = nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Linear(ff_mult * dim, dim))
        with torch.no_grad():  # the block starts as the identity
            self.out.weight.zero_()
            self.ff[2].weight.zero_()
            self.ff[2].bias.zero_()

    def forward(self, x: torch.Tensor, where: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, S, D) the residual stream; where (B, S, D) the position embedding, added to the attention's input
        only (the stream stays the tokens); allowed (B, 1, S, S)."""
        b, s, d = x.shape
        qkv = self.qkv(self.norm1(x) + where)
        q, k, v = qkv.view(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)  # (B, H, S, d / H)
        x = x + self.out(a.transpose(1, 2).reshape(b, s, d))
        return x + self.ff(self.norm2(x))


class SlotContext(nn.Module):
    """forward(tokens (B, S, D), mask (B, S) bool) -> (B, S, D): each kept token after reading the kept tokens
    before it (at most `window` of them); masked tokens come out as they went in."""

    def __init__(self, dim: int, layers: int = 2, heads: int = 8, window: int = 256):
        super().__init__()
        if layers < 1 or window < 1:
            raise ValueError(f"SlotContext needs layers >= 1 and window >= 1, got {layers} and {window}")
        self.window = window
        # feed-forward x2, not x4: 2.7M parameters a block at D = 576, so that the resampler and two blocks ship
        # in bfloat16 under 30 MB
        self.blocks = nn.ModuleList(ContextBlock(dim, heads, ff_mult=2) for _ in range(layers))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        order = mask.long().cumsum(1) - 1  # (B, S): each kept token's index among the kept ones
        i, j = order[:, :, None], order[:, None, :]
        allowed = mask[:, None, :] & (j <= i) & (j > i - self.window)  # (B, S, S): earlier kept tokens, in reach
        allowed = allowed | torch.eye(tokens.shape[1], dtype=torch.bool, device=tokens.device)[None]
        where = sinusoid(order.clamp(min=0), tokens.shape[-1]).to(tokens.dtype)
        x = tokens
        for block in self.blocks:
            x = block(x, where, allowed[:, None])
        return torch.where(mask[..., None], x, tokens)
