"""Two ways for a llama-family LLM to read vist's resampled tokens: cross-attention (the paper's) or a prefix.

**Cross-attention** (docs/methods.md §3.4, CEPE's design, arXiv 2402.16617). A block sits in some decoder layers
between self-attention and the MLP:

    h <- h + SelfAttn(RMSNorm(h));  h <- h + g * CrossAttn(RMSNorm_x(h), RMSNorm_m(E));  h <- h + MLP(RMSNorm(h))

E (B, S, D_m) is the memory of each sample: vist's flattened resampler output (gistify.vist.resampler.flatten_images)
or, for the teacher, the LLM's own hidden states of the distant text. Queries come from the decoder states, keys and
values from E; every position sees all of E (non-causal), with GQA like the host model and the empty-memory mask
on the keys. The blocks are initialised from the LLM (App. A.1 and CEPE's code): q_proj copied from the layer's
self-attention; k_proj and v_proj copied whole when D_m = d_model, or their first D_m input columns when
D_m < d_model (TinyLlama's case); RMSNorm_x copied from post_attention_layernorm; o_proj "initialised with norms",
which §3.8 reads as CEPE's Kaiming normal (`out_init="normal"`); `"zero"` zeroes it; `"copy"` takes the
self-attention's o_proj.

Issue 13's reader fixes (each a CrossAttentionConfig field; docs/methods.md §3.4 and §3.10):
- `memory_norm`: E is RMS-normalised before k/v (RMSNorm_m, from the layer's input_layernorm when D_m = d_model,
  as the self-attention normalises its own keys' input). Without it a small memory (RMS 0.08 against 0.2-0.4 of
  the LLM's attention input) gives near-uniform attention: the block outputs the mean of the values, a bias any
  window's memory supplies equally.
- `gate`: g = tanh(a), a learned scalar per block (Flamingo, arXiv 2204.14198), starting at tanh(a) = `gate`:
  0 keeps the model exactly the base LLM at step 0 while a (and, from step 1, everything else) gets gradient;
  with o_proj zeroed instead, q/k/v and the memory get no gradient at step 0. None: no gate (g = 1).
- `rope`: queries get the LLM's own rotary embedding at their text positions (what q_proj was trained on) and
  keys the rotary embedding at the memory's positions, given by `attach(..., positions=)` relative to the text's
  first token (negative: the memory precedes the text); by default the S memory tokens sit at -S..-1, right
  before the text. RoPE is relative, so this is self-attention's geometry over [memory][text].
- The blocks' weights are float32 whatever the LLM's dtype (bfloat16 weights with bfloat16 Adam moments leave
  most small updates unapplied); they compute in float32 and hand the LLM its dtype back.

**Prefix** (the design's second mode): the tokens are projected into the LLM's input space by a small MLP
(LLaVA-1.5's projector) and prepended to the text's embeddings; no hooks at all.

This module knows llama-family module paths (model.model.layers[i].self_attn.{q,k,v,o}_proj,
post_attention_layernorm), as gistify's adapters do for VLMs; `_layers` is the one place that reads them.

Axes: B samples, T text positions, S memory tokens, d LLM width, D_m memory width, H / H_kv heads, hd head width.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gistify.method import check_choice

OUT_INITS = ("normal", "zero", "copy")


def _layers(model) -> list[nn.Module]:
    """The decoder layers of a llama-family causal LM, checked for the parts the blocks copy and hook."""
    inner = getattr(model, "model", model)
    layers = getattr(inner, "layers", None)
    if layers is None or not len(layers):
        raise TypeError(
            f"{type(model).__name__} has no decoder layers at .model.layers: vist injects into llama-family LLMs"
        )
    need = ("q_proj", "k_proj", "v_proj", "o_proj")
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        if attn is None or not all(hasattr(attn, n) for n in need) or not hasattr(layer, "post_attention_layernorm"):
            raise TypeError(
                f"{type(layer).__name__} lacks self_attn.{{q,k,v,o}}_proj or post_attention_layernorm: "
                "vist's cross-attention is written for llama-family decoder layers"
            )
    return list(layers)


@dataclass(frozen=True)
class CrossAttentionConfig:
    """Args:
    memory_dim: width of the memory E (the resampler's `dim`); None: the LLM's hidden size (§3.8's choice).
    out_init: o_proj's initialisation: "normal" (Kaiming normal, CEPE's and §3.8's reading of the paper), "zero",
        "copy" (the self-attention's o_proj).
    layers: indices of the decoder layers that get a block; None: every layer (the paper).
    seed: for the "normal" initialisation and for k/v projections that cannot be copied (D_m > d_model).
    memory_norm: RMS-normalise E before k/v.
    gate: a learned tanh gate per block starting at this value in [0, 1); None: no gate.
    rope: rotary positions on queries and memory keys (see the module's docstring).
    """

    memory_dim: int | None = None
    out_init: str = "copy"
    layers: tuple[int, ...] | None = None
    seed: int = 0
    memory_norm: bool = True
    gate: float | None = 0.0
    rope: bool = True

    def __post_init__(self):
        check_choice("CrossAttentionConfig", "out_init", self.out_init, OUT_INITS)
        if self.memory_dim is not None and (not isinstance(self.memory_dim, int) or self.memory_dim < 1):
            raise ValueError(
                f"CrossAttentionConfig.memory_dim must be a positive integer or None, got {self.memory_dim!r}"
            )
        if self.gate is not None and not 0 <= self.gate < 1:
            raise ValueError(f"CrossAttentionConfig.gate must be in [0, 1) or None, got {self.gate!r}")
        if self.gate == 0 and self.out_init == "zero":  # both factors of the output at 0: neither gets a gradient
            raise ValueError("CrossAttentionConfig: out_init='zero' with gate=0 never learns; use out_init='copy'")


class RMSNorm(nn.Module):
    """Llama's RMSNorm (computed in float32, like transformers'), owned by the block so the LLM's stays untouched."""

    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().float().clone())
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x).to(dtype)


def _linear_from(src: nn.Linear, in_features: int, generator: torch.Generator) -> nn.Linear:
    """A float32 copy of `src` reading `in_features` inputs: whole, its first columns, or fresh (Kaiming uniform,
    as nn.Linear) when it has fewer input columns than needed."""
    out = nn.Linear(in_features, src.out_features, bias=src.bias is not None)
    with torch.no_grad():
        if in_features <= src.in_features:
            out.weight.copy_(src.weight[:, :in_features])
        else:
            bound = 1 / in_features**0.5
            out.weight.copy_(torch.rand(out.weight.shape, generator=generator) * 2 * bound - bound)
        if src.bias is not None:
            out.bias.copy_(src.bias)
    return out


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Llama's rotary embedding of x (B, H, N, hd) with cos, sin (B, N, hd) (transformers' rotate_half convention)."""
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class CrossAttention(nn.Module):
    """One decoder layer's cross-attention block: forward(h (B, T, d), (k, v), mask (B, S), rope) -> (B, T, d)."""

    def __init__(self, layer: nn.Module, config, c: CrossAttentionConfig, memory_dim: int, generator):
        super().__init__()
        attn = layer.self_attn
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.norm = RMSNorm(layer.post_attention_layernorm.weight, config.rms_norm_eps)
        if c.memory_norm:
            source = layer.input_layernorm.weight if memory_dim == config.hidden_size else torch.ones(memory_dim)
            self.memory_norm = RMSNorm(source, config.rms_norm_eps)
        else:
            self.memory_norm = None
        self.q_proj = _linear_from(attn.q_proj, attn.q_proj.in_features, generator)
        self.k_proj = _linear_from(attn.k_proj, memory_dim, generator)
        self.v_proj = _linear_from(attn.v_proj, memory_dim, generator)
        self.o_proj = _linear_from(attn.o_proj, attn.o_proj.in_features, generator)
        with torch.no_grad():
            if c.out_init == "zero":
                self.o_proj.weight.zero_()
            elif c.out_init == "normal":
                w = torch.empty(self.o_proj.weight.shape)
                nn.init.kaiming_normal_(w, generator=generator)
                self.o_proj.weight.copy_(w)
            if c.out_init != "copy" and self.o_proj.bias is not None:
                self.o_proj.bias.zero_()
        self.gate = None if c.gate is None else nn.Parameter(torch.tensor(math.atanh(c.gate)))

    def keys_values(self, memory: torch.Tensor, rope: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """E (B, S, D_m) -> k, v (B, H_kv, S, hd); rope: (cos, sin) (B, S, hd) at the memory's positions."""
        b, s = memory.shape[:2]
        memory = memory.float()
        if self.memory_norm is not None:
            memory = self.memory_norm(memory)
        k = self.k_proj(memory).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(memory).view(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if rope is not None:
            k = _rotate(k, *rope)
        return k, v

    def forward(self, h: torch.Tensor, kv: tuple, mask: torch.Tensor, rope: tuple | None = None) -> torch.Tensor:
        """h (B, T, d) -> (B, T, d), float32; rope: the LLM's (cos, sin) (B, T, hd) at the text's positions."""
        b, t = h.shape[:2]
        q = self.q_proj(self.norm(h.float())).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        if rope is not None:
            q = _rotate(q, *rope)
        k, v = kv
        # A sample without memory would softmax over nothing: let it attend to all keys, then zero its output.
        has = mask.any(dim=1)
        attn_mask = (mask | ~has[:, None])[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=self.kv_heads != self.heads)
        out = self.o_proj(out.transpose(1, 2).reshape(b, t, -1))
        if self.gate is not None:
            out = out * torch.tanh(self.gate)
        return out * has[:, None, None].to(out.dtype)


def default_positions(mask: torch.Tensor) -> torch.Tensor:
    """(B, S) positions of memory tokens relative to the text's first token: each sample's kept tokens, in order,
    right before the text (-n..-1 for n kept tokens); masked tokens get the position of the next kept one."""
    kept = mask.long()
    return (kept.cumsum(1) - kept.sum(1, keepdim=True) - 1 + (1 - kept)).float()


class VistCrossAttention(nn.Module):
    """Cross-attention blocks for the decoder layers of one llama-family LLM, built from its weights (§3.4).

    The module holds only the blocks (the trainable part); `attach(model, memory, memory_mask)` hooks them in.
    """

    def __init__(self, model: nn.Module, config: CrossAttentionConfig | None = None):
        super().__init__()
        self.config = c = config or CrossAttentionConfig()
        layers = _layers(model)
        cfg = model.config
        self.memory_dim = c.memory_dim or cfg.hidden_size
        self.layer_ids = tuple(range(len(layers))) if c.layers is None else tuple(c.layers)
        bad = [i for i in self.layer_ids if not 0 <= i < len(layers)]
        if bad or len(set(self.layer_ids)) != len(self.layer_ids):
            raise ValueError(
                f"CrossAttentionConfig.layers must be distinct indices below {len(layers)}, got {c.layers}"
            )
        g = torch.Generator().manual_seed(c.seed)
        self.blocks = nn.ModuleList(CrossAttention(layers[i], cfg, c, self.memory_dim, g) for i in self.layer_ids)

    @contextmanager
    def attach(
        self,
        model: nn.Module,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        freeze: bool = True,
        positions: torch.Tensor | None = None,
    ):
        """Within the block, `model` reads `memory` (B, S, D_m) through the cross-attention blocks; memory_mask
        (B, S) bool marks the tokens to read. freeze: the LLM's parameters get no gradients meanwhile.
        positions (B, S): the memory tokens' positions relative to the text's first token, for RoPE (default:
        right before the text, `default_positions`)."""
        layers = _layers(model)
        if memory.ndim != 3 or memory.shape[-1] != self.memory_dim:
            raise ValueError(f"memory must be (B, S, {self.memory_dim}), got {tuple(memory.shape)}")
        if memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        if memory_mask.shape != memory.shape[:2]:
            raise ValueError(f"memory_mask must be {tuple(memory.shape[:2])}, got {tuple(memory_mask.shape)}")
        memory_mask = memory_mask.bool()
        key_rope = None
        if self.config.rope:
            if positions is None:
                positions = default_positions(memory_mask)
            if positions.shape != memory.shape[:2]:
                raise ValueError(f"positions must be {tuple(memory.shape[:2])}, got {tuple(positions.shape)}")
            rotary = getattr(getattr(model, "model", model), "rotary_emb", None)
            if rotary is None:
                raise TypeError(f"{type(model).__name__} has no model.rotary_emb: CrossAttentionConfig(rope=False)")
            key_rope = rotary(memory.float(), positions.to(memory.device))  # (cos, sin), each (B, S, hd)
        residual: dict[int, torch.Tensor] = {}
        kv_cache: dict[int, tuple] = {}

        def keep_residual(i):
            def hook(module, args, kwargs):
                residual[i] = args[0] if args else kwargs["hidden_states"]

            return hook

        def add_cross(i, block):
            def hook(module, args, kwargs, output):
                attn_out, *rest = output
                h = residual.pop(i) + attn_out  # the residual stream after self-attention
                if i in kv_cache:
                    kv = kv_cache[i]
                else:
                    kv = block.keys_values(memory, key_rope)
                    if not torch.is_grad_enabled():  # generation: E is fixed, compute its keys once
                        kv_cache[i] = kv
                query_rope = None
                if key_rope is not None:
                    query_rope = kwargs.get("position_embeddings")  # the LLM's own (cos, sin) at the text's positions
                    if query_rope is None:
                        raise TypeError(f"{type(module).__name__} got no position_embeddings: use rope=False")
                mask = memory_mask
                if h.shape[0] != kv[0].shape[0]:  # beams or several sequences per prompt
                    if h.shape[0] % kv[0].shape[0]:
                        raise ValueError(f"batch of {h.shape[0]} for a memory of {kv[0].shape[0]} samples")
                    r = h.shape[0] // kv[0].shape[0]
                    kv = tuple(x.repeat_interleave(r, dim=0) for x in kv)
                    mask = mask.repeat_interleave(r, dim=0)
                x = block(h, kv, mask, query_rope).to(attn_out.dtype)
                return (attn_out + x, *rest)

            return hook

        flags = [(p, p.requires_grad) for p in model.parameters()] if freeze else []
        handles = []
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            for i, block in zip(self.layer_ids, self.blocks):
                handles.append(layers[i].register_forward_pre_hook(keep_residual(i), with_kwargs=True))
                handles.append(layers[i].self_attn.register_forward_hook(add_cross(i, block), with_kwargs=True))
            yield self
        finally:
            for handle in handles:
                handle.remove()
            for p, flag in flags:
                p.requires_grad_(flag)


class PrefixProjector(nn.Module):
    """Resampled tokens as a prefix: (B, S, D_m) -> the LLM's input space by LLaVA-1.5's two-layer MLP, prepended."""

    def __init__(self, memory_dim: int, hidden_size: int):
        super().__init__()
        self.proj = nn.Sequential(
            nn.LayerNorm(memory_dim), nn.Linear(memory_dim, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size)
        )

    def inputs(
        self,
        model: nn.Module,
        input_ids: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Keyword arguments for `model(**...)` / `model.generate(**...)`: inputs_embeds (B, P + T, d),
        attention_mask (B, P + T), position_ids (B, P + T).

        Each sample's memory tokens (those memory_mask keeps) are right-aligned in the P prefix slots, so the
        last T positions are exactly `input_ids`' (logits[:, -T:] line up with the text); positions count the
        real tokens only, so a sample reads as [its memory][its text] whatever the padding.
        """
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if memory_mask is None:
            memory_mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        embed = model.get_input_embeddings()
        counts = memory_mask.sum(dim=1)
        p = int(counts.max()) if b else 0
        tokens = self.proj(memory.to(self.proj[1].weight.dtype)).to(embed.weight.dtype)
        prefix = tokens.new_zeros(b, p, tokens.shape[-1])
        prefix_mask = torch.zeros(b, p, dtype=attention_mask.dtype, device=attention_mask.device)
        for i in range(b):
            n = int(counts[i])
            if n:
                prefix[i, p - n :] = tokens[i][memory_mask[i].bool()]
                prefix_mask[i, p - n :] = 1
        mask = torch.cat([prefix_mask, attention_mask], dim=1)
        return {
            "inputs_embeds": torch.cat([prefix, embed(input_ids)], dim=1),
            "attention_mask": mask,
            "position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0),
        }
