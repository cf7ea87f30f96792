"""The scorer's fast path: the first layers only, and a small head for self-information.

`reinforce` reads hidden states at a shallow layer (4 of SmolLM2's 30); the other layers and the LM head serve
only the self-information u_t = -log p(x_t | x_<t) of step 5 (docs/methods.md §1.2). The fast path
(docs/methods.md §1.2.2) runs

1. the trunk: the scorer's embeddings and its first `layer` decoder layers with no final norm, so that its
   output is exactly the full model's `hidden_states[layer]` (float32; int8 dynamic quantisation of its linear
   maps was measured at 0.26 against 0.32 s per 1k tokens, but the states' cosine to float32 fell to 0.96 on
   average, 0.83 at worst, from SmolLM2's outlier dimensions: not worth the features' drift);
2. a surprisal head: a small MLP that predicts the full model's u_t from the trunk's states at t-1 and t
   (the state at t-1 is what the LM head would read; the one at t says which token came). It is trained by
   `python -m gistify_bench.train.surprisal` on the "train" articles against the full model's u_t and ships
   as surprisal_head.safetensors, with a fingerprint of the scorer it was trained for.

Cost per token: `layer` decoder layers (about 4M multiply-adds each for SmolLM2-135M) and 74k for the head,
against 30 layers and a 28M LM head for the full pass. A short text (the question) is memory-bound: the full
pass reads all 135M weights (about 0.3 s on 2 cores for 10 tokens), the trunk a sixth of them.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import torch
from torch import nn

HEAD = Path(__file__).with_name("surprisal_head.safetensors")  # the head for layer 4 (`reinforce-fast`)


def head_file(layer: int) -> Path:
    """The shipped surprisal head for a trunk of `layer` layers: one file per depth (4: HEAD)."""
    return HEAD if layer == 4 else HEAD.with_name(f"surprisal_head_L{layer}.safetensors")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 or AMX): there a bf16 trunk runs about 1.6x
    faster than float32 with states at cosine 0.998 to float32's; elsewhere bf16 is emulated and no faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


class _CastEmbedding(nn.Module):
    """The scorer's (shared, float32) input embeddings, read out in the trunk's dtype."""

    def __init__(self, embed: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.embed, self.dtype = embed, dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embed(ids).to(self.dtype)


class SurprisalHead(nn.Module):
    """u_t ≈ MLP([h_{t-1}; h_t]): the full scorer's self-information from the trunk's states (n, d) -> (n,)."""

    def __init__(self, hidden: int, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * hidden, width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, prev: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([prev, cur], dim=-1))[..., 0]


def fingerprint(model) -> str:
    """A short hash of the scorer's input embeddings: a head is only valid for the weights it was trained on."""
    rows = model.get_input_embeddings().weight[:64].detach().float().contiguous()
    return hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:16]


def build_trunk(model, layers: int, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The base model of `model` cut after `layers` decoder layers: its `last_hidden_state` is
    `hidden_states[layers]` of the full model (transformers applies the final norm to the last entry only, so
    the trunk keeps it only when it keeps every layer). Every module is shared with `model` (no copy), except
    with another `dtype` than the model's: then the layers are copied in it (7 MB per SmolLM2 layer in bf16)."""
    base = getattr(model, "model", None)
    if base is None or not isinstance(getattr(base, "layers", None), nn.ModuleList):
        raise ValueError(f"the fast path needs a decoder model with model.layers; {type(model).__name__} has none")
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = layers
    with torch.device("meta"):  # no weights allocated: every child is replaced below
        trunk = type(base)(config)
    trunk.embed_tokens = base.embed_tokens
    trunk.rotary_emb = base.rotary_emb
    trunk.layers = nn.ModuleList(base.layers[:layers])
    if dtype != base.embed_tokens.weight.dtype:
        trunk.embed_tokens = _CastEmbedding(base.embed_tokens, dtype)
        trunk.layers = copy.deepcopy(trunk.layers).to(dtype)
    trunk.norm = base.norm if layers == len(base.layers) else nn.Identity()
    left = [n for n, t in [*trunk.named_parameters(), *trunk.named_buffers()] if t.is_meta]
    if left:
        raise ValueError(f"the fast path cannot cut {type(base).__name__}: {left[:3]} left unset")
    return trunk.eval()


def save_head(head: SurprisalHead, path: Path, meta: dict) -> None:
    from safetensors.torch import save_file

    weights = {k: v.contiguous() for k, v in head.state_dict().items()}
    save_file(weights, str(path), metadata={"gistify": json.dumps(meta)})


def load_head(path: Path = HEAD) -> tuple[SurprisalHead, dict]:
    """The shipped head and its metadata (scorer fingerprint, layer, how it was trained and scored)."""
    from safetensors import safe_open

    if not path.is_file():
        raise FileNotFoundError(f"no surprisal head at {path}; train one: python -m gistify_bench.train.surprisal")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["gistify"])
        weights = {k: f.get_tensor(k).float() for k in f.keys()}
    head = SurprisalHead(meta["hidden"], meta["width"])
    head.load_state_dict(weights)
    return head.eval(), meta


class FastPath:
    """The trunk and head for one scorer and layer: `window(x)` gives what `Scorer.stats` needs."""

    def __init__(self, model, layer: int, head_path: Path | None = None, dtype: torch.dtype = torch.float32):
        head, meta = load_head(head_path or head_file(layer))
        if meta["fingerprint"] != fingerprint(model) or meta["layer"] != layer:
            raise ValueError(
                f"the fast path has a surprisal head for layer {meta['layer']} of {meta['model']} only; "
                f"asked for layer {layer} of this scorer (train one: python -m gistify_bench.train.surprisal)"
            )
        self.head, self.meta = head, meta
        self.trunk = build_trunk(model, layer, dtype)

    def window(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """States (T, d) of the ids x (1, T) at the layer, and the predicted self-information (T-1,) of
        tokens 1..T-1."""
        h = self.trunk(input_ids=x).last_hidden_state[0].float()
        return h, self.head(h[:-1], h[1:])
