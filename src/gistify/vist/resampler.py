"""The Perceiver resampler: one image's encoder features -> N latent tokens, plus a CLS latent for PVE.

docs/methods.md §3.3 (Flamingo's design, arXiv 2204.14198): learned latent queries attend to the concatenation
of the image's features and the latents themselves, then a feed-forward block, repeated `depth` times, then a
LayerNorm. The paper keeps 64 tokens per image for the LLM (N, changeable at inference by training with several)
and one extra latent whose output feeds only the PVE loss (§3.5), with Flamingo's sizes (depth 6, 8 heads x 64,
FF x4) at ViT-L width 1024. For a 135M LLM §3.8-3.9 scale it to width d_model (576 for SmolLM2) and depth 2-3,
so that the cross-attention can copy the self-attention's k/v weights whole (§3.4).

Three things differ from Flamingo because the encoder differs.
(1) The features (120- or 384-d from PP-OCRv6, gistify.vist.encoder) are standardised per channel with the mean
and standard deviation of the training corpus's text tokens (`set_feature_stats`; kept with the weights), then
projected to the resampler's width by a linear layer. PP-OCRv6's features share one large component (on the
training lines the mean feature has norm 29, a token's 50, and two pages' mean features have cosine 0.98), so
raw, every latent's attention average was nearly the same vector whatever the text (at initialisation the memory
tokens' spread was 0.16 for a norm of 20) and every trained run collapsed to one constant memory; standardised,
the spread is 0.84 from step 0 (README, "Results: vist").
(2) OCR features carry no absolute position (ViT features do, from its position embeddings), and attention over
keys is blind to their order, so a learned embedding of each token's position in the image is added to its
projected features; without it the resampler could not tell which word came first.
(3) The empty-region mask (§3.2) is a key mask: the latents never attend to tokens after the end of the text,
and an image with no text at all gives latents that saw only each other (callers drop such images with
`Resampled.image_mask`).

Axes: M images, L encoder tokens per image, D_in encoder width, N latents, D width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ResamplerConfig:
    """Args:
    input_dim: encoder feature width (120: PP-OCRv6 neck; 384: its backbone).
    dim: latent width; the LLM's hidden size, so that cross-attention copies k/v whole (§3.8).
    depth: attention + feed-forward blocks (Flamingo 6; §3.8 scales to 2-3 for a 135M LLM).
    heads, head_dim: attention heads (Flamingo: 8 x 64).
    ff_mult: feed-forward expansion (x4).
    latents: tokens per image given to the LLM (the paper's N = 64).
    cls: add one more latent whose output is the image's summary for PVE (§3.5), never seen by the LLM.
    local: (ours) latent j attends only to its own j-th 1/N of the image's tokens in reading order (16 lines x 96
        tokens, 48 latents: a third of a line), the CLS latent to all. A locality prior, added when every
        trained run collapsed to one constant memory; the cause was the features' shared component, which the
        standardisation (1, above) removes (README, "Results: vist").
    max_tokens: most encoder tokens per image (sizes the position embedding; a fold image has 16 x 96 = 1536).
    """

    input_dim: int = 120
    dim: int = 576
    depth: int = 2
    heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4
    latents: int = 64
    cls: bool = True
    max_tokens: int = 1536
    local: bool = False

    def __post_init__(self):
        for name in ("input_dim", "dim", "depth", "heads", "head_dim", "ff_mult", "latents", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ResamplerConfig.{name} must be a positive integer, got {value!r}")


@dataclass
class Resampled:
    """tokens (M, N, D): what the LLM reads; cls (M, D) or None: the PVE summary; image_mask (M,) bool: images
    that hold any text."""

    tokens: torch.Tensor
    cls: torch.Tensor | None
    image_mask: torch.Tensor


class PerceiverAttention(nn.Module):
    """Latents attend to [features; latents] (Flamingo): queries from the latents only."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor, key_mask: torch.Tensor, stretch: int = 0) -> torch.Tensor:
        """x (M, L, D), latents (M, N, D), key_mask (M, L + N) or per latent (M, N, L + N), True = attend
        -> (M, N, D).

        stretch > 0: the local layout (ResamplerConfig.local with L = N' x stretch, N' the local latents, any
        further latent a CLS that reads everything). Latent j's keys are then its own `stretch` tokens and the
        latents, so its scores are computed for those alone, (N', stretch + N) instead of (N', L + N) dense and
        masked: the same attention (tests/test_vist.py) at a fraction of the scores' time and memory (issue 24)."""
        m, n = latents.shape[:2]
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([self.norm_media(x), latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.view(m, t.shape[1], self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if stretch:
            return self.to_out(self._local(q, k, v, key_mask, stretch).transpose(1, 2).reshape(m, n, -1))
        mask = key_mask[:, None, None, :] if key_mask.ndim == 2 else key_mask[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (M, H, N, hd)
        return self.to_out(out.transpose(1, 2).reshape(m, n, -1))

    def _local(self, q, k, v, key_mask: torch.Tensor, stretch: int) -> torch.Tensor:
        """q (M, H, N, hd), k and v (M, H, L + N, hd), key_mask (M, L) of the tokens -> (M, H, N, hd)."""
        m, h, n, hd = q.shape
        length = key_mask.shape[1]
        own = length // stretch  # the latents with a stretch of their own; the rest (CLS) read everything
        kt, vt = (t[:, :, :length].reshape(m, h, own, stretch, hd) for t in (k, v))
        kl, vl = k[:, :, length:], v[:, :, length:]
        scale = hd**-0.5
        tokens = torch.einsum("bhjd,bhjsd->bhjs", q[:, :, :own], kt) * scale  # (M, H, N', stretch)
        tokens = tokens.masked_fill(~key_mask.view(m, 1, own, stretch), float("-inf"))
        mutual = q[:, :, :own] @ kl.transpose(-1, -2) * scale  # (M, H, N', N): latents always see each other
        weights = torch.cat([tokens, mutual], dim=-1).softmax(-1)
        out = torch.einsum("bhjs,bhjsd->bhjd", weights[..., :stretch], vt) + weights[..., stretch:] @ vl
        if own < n:  # the CLS latent(s): dense over every token and latent
            rest = F.scaled_dot_product_attention(
                q[:, :, own:], k, v, attn_mask=torch.cat([key_mask, key_mask.new_ones(m, n)], 1)[:, None, None]
            )
            out = torch.cat([out, rest], dim=2)
        return out


class PerceiverResampler(nn.Module):
    """forward(features (M, L, D_in), mask (M, L) bool) -> Resampled(tokens (M, N, D), cls (M, D), image_mask (M,))."""

    def __init__(self, config: ResamplerConfig | None = None):
        super().__init__()
        self.config = c = config or ResamplerConfig()
        self.proj = nn.Linear(c.input_dim, c.dim)
        # (D_in,) each: the training corpus's feature statistics (identity until set_feature_stats)
        self.register_buffer("feature_mean", torch.zeros(c.input_dim))
        self.register_buffer("feature_std", torch.ones(c.input_dim))
        self.position = nn.Parameter(torch.randn(c.max_tokens, c.dim) * 0.02)
        self.latents = nn.Parameter(torch.randn(c.latents + int(c.cls), c.dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PerceiverAttention(c.dim, c.heads, c.head_dim),
                    nn.Sequential(
                        nn.LayerNorm(c.dim),
                        nn.Linear(c.dim, c.ff_mult * c.dim, bias=False),
                        nn.GELU(),
                        nn.Linear(c.ff_mult * c.dim, c.dim, bias=False),
                    ),
                ]
            )
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.dim)

    @torch.no_grad()
    def set_feature_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise inputs with these per-channel statistics (D_in,) of the training corpus's text tokens."""
        d = self.config.input_dim
        if mean.shape != (d,) or std.shape != (d,):
            raise ValueError(f"feature statistics must be ({d},), got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError("feature statistics need a finite mean and a positive standard deviation per channel")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def forward(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> Resampled:
        c = self.config
        if features.ndim != 3 or features.shape[-1] != c.input_dim:
            raise ValueError(f"features must be (M, L, {c.input_dim}), got {tuple(features.shape)}")
        m, length = features.shape[:2]
        if length > c.max_tokens:
            raise ValueError(f"{length} tokens per image; ResamplerConfig.max_tokens is {c.max_tokens}")
        mask = torch.ones(m, length, dtype=torch.bool) if mask is None else mask.bool()
        dtype = self.proj.weight.dtype
        standard = (features.to(dtype) - self.feature_mean.to(dtype)) / self.feature_std.to(dtype)
        x = self.proj(standard) + self.position[:length]  # (M, L, D)
        latents = self.latents.expand(m, -1, -1)  # (M, N(+1), D)
        # Latents always see each other, so a blank image still has keys and no softmax over nothing.
        key_mask = torch.cat([mask.to(x.device), torch.ones(m, latents.shape[1], dtype=torch.bool)], dim=1)
        stretch = length // c.latents if c.local and length % c.latents == 0 else 0
        if stretch:  # latent j reads the j-th `stretch` tokens (PerceiverAttention._local): only the tokens' mask
            key_mask = mask.to(x.device)
        elif c.local:  # (M, N(+1), L + N(+1)): latent j sees tokens i with floor(i N / L) = j, and every latent
            own = (torch.arange(length) * c.latents // length)[None, :] == torch.arange(latents.shape[1])[:, None]
            if c.cls:
                own[-1] = True
            seen = own.to(x.device)[None] & mask.to(x.device)[:, None, :]
            key_mask = torch.cat([seen, key_mask[:, None, length:].expand(-1, latents.shape[1], -1)], dim=2)
        for attn, ff in self.layers:
            latents = latents + attn(x, latents, key_mask, stretch)
            latents = latents + ff(latents)
        latents = self.norm(latents)
        tokens, cls = (latents[:, :-1], latents[:, -1]) if c.cls else (latents, None)
        return Resampled(tokens=tokens, cls=cls, image_mask=mask.any(dim=1))


def flatten_images(tokens: torch.Tensor, image_mask: torch.Tensor, images_per_sample: list[int]) -> tuple:
    """The memory each sample's LLM text reads: its images' tokens one after the other (§3.4: E is (M x N, D)).

    tokens (sum M_i, N, D), image_mask (sum M_i,) -> memory (B, max_i M_i x N, D), memory_mask (B, max_i M_i x N)
    bool, with the tokens of blank images and the padding masked out.
    """
    if sum(images_per_sample) != tokens.shape[0]:
        raise ValueError(f"images_per_sample sums to {sum(images_per_sample)}, but there are {tokens.shape[0]} images")
    n, d = tokens.shape[1:]
    longest = max(images_per_sample, default=0) * n
    memory = tokens.new_zeros(len(images_per_sample), longest, d)
    memory_mask = torch.zeros(len(images_per_sample), longest, dtype=torch.bool, device=tokens.device)
    start = 0
    for b, count in enumerate(images_per_sample):
        memory[b, : count * n] = tokens[start : start + count].reshape(-1, d)
        memory_mask[b, : count * n] = image_mask[start : start + count].repeat_interleave(n)
        start += count
    return memory, memory_mask
