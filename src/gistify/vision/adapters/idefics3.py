"""SmolVLM and Idefics3 (transformers' Idefics3ForConditionalGeneration, SmolVLMForConditionalGeneration): a
SigLIP encoder, a connector (pixel shuffle by `scale_factor`, then a linear map into the LLM), a Llama LLM.

The processor splits an image into sub-images plus a global view; each one's P patches become N = P / s²
connector tokens (s = scale_factor: the pixel shuffle concatenates each s x s block of patches), with N
placeholders in the prompt. The reduction runs on those connector outputs, one sub-image at a time, grid
(√N, √N): the pixel shuffle forbids reducing before it. SigLIP has no [CLS] and SmolVLM no paired text tower,
so three context fields are analogues (docs/methods.md §2.5), each said so in the Reductions' notes:

- cls_attention: the mean attention each patch receives in SigLIP's last layer (over heads and all unpadded
  queries), summed over the s² patches each connector token gathers;
- keys: that layer's keys of those s² patches, concatenated as the pixel shuffle concatenates their states;
- patch_text / text (recover's question guidance): the connector tokens themselves and the mean LLM input
  embedding of the question (base.ANALOGUE_NOTE), instead of a CLIP text tower.

features = visual_states = the connector outputs; question_states are the question's LLM input embeddings;
llm_attention is scored at the input (base.FASTV_NOTE).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gistify.vision.adapters.base import PlaceholderAdapter, captured_inputs
from gistify.vision.base import VisualContext

CLS_NOTE = (
    "cls_attention is an analogue (docs/methods.md §2.5): SigLIP has no [CLS]; it is the mean attention each "
    "patch receives in the last encoder layer, summed over the patches each connector token gathers"
)
KEYS_NOTE = "keys are the last SigLIP layer's keys of each connector token's patches, concatenated (pixel shuffle)"


class Idefics3Adapter(PlaceholderAdapter):
    family = "SmolVLM / Idefics3"
    vision_inputs = ("pixel_values", "pixel_attention_mask")

    def language_model(self) -> nn.Module:
        return self.model.model.text_model

    def notes(self, needs: frozenset[str]) -> list[str]:
        return [n for field, n in (("cls_attention", CLS_NOTE), ("keys", KEYS_NOTE)) if field in needs]

    def encode(self, inputs: dict[str, Any], needs: frozenset[str]) -> list[VisualContext]:
        inner = self.model.model
        attention = inner.vision_model.encoder.layers[-1].self_attn
        with captured_inputs(attention) as seen:
            out = inner.get_image_features(inputs["pixel_values"], inputs.get("pixel_attention_mask"), return_dict=True)
        hidden = seen["hidden_states"]  # (images, P, C): the real (non-padding) sub-images, in prompt order
        features = torch.cat(out.pooler_output).view(len(hidden), -1, inner.config.text_config.hidden_size)
        n = features.shape[1]
        side = int(n**0.5)
        fields: dict[str, torch.Tensor] = {}
        if needs & {"cls_attention", "keys"}:
            shuffle = inner.connector.pixel_shuffle  # (images, P, c) -> (images, N, c * s²)
            scale = inner.connector.scale_factor
            keys = attention.k_proj(hidden)
            valid = _valid_patches(seen["attention_mask"], hidden)
            received = received_attention(attention.q_proj(hidden), keys, attention.num_heads, attention.scale, valid)
            fields["cls_attention"] = shuffle(received[..., None], scale).sum(-1)  # (images, N)
            fields["keys"] = shuffle(keys, scale)
        return [
            VisualContext(features=f, visual_states=f, grid=(side, side), **{name: v[i] for name, v in fields.items()})
            for i, f in enumerate(features)
        ]


def received_attention(q: torch.Tensor, k: torch.Tensor, heads: int, scale: float, valid: torch.Tensor) -> torch.Tensor:
    """(images, P): the attention each patch receives, averaged over heads and over the valid queries.

    q, k: (images, P, C) a layer's projections; valid: (images, P) bool, the unpadded patches. One image at a
    time: a (H, P, P) map of SmolVLM's 1024 patches is 50 MB in float32, a batch of sub-images many times that.
    """
    return torch.stack([_received(qi, ki, heads, scale, vi) for qi, ki, vi in zip(q, k, valid)])


def _received(q: torch.Tensor, k: torch.Tensor, heads: int, scale: float, valid: torch.Tensor) -> torch.Tensor:
    p = len(q)
    q = q.float().view(p, heads, -1).transpose(0, 1)  # (H, P, C/H)
    k = k.float().view(p, heads, -1).transpose(0, 1)
    scores = (q @ k.transpose(-1, -2)) * scale  # (H, P, P)
    weights = scores.masked_fill(~valid, -torch.inf).softmax(-1).mean(0)  # (P, P): rows are queries
    return weights[valid].mean(0)  # (P,)


def _valid_patches(mask: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
    """(images, P) bool from the mask SigLIP's attention got: None (no padding), or 4-D, bool (True: attend)
    or additive (0: attend); a bidirectional mask masks padded keys only, so its first query row says it all."""
    if mask is None:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    row = mask[:, 0, 0, :]
    return row if row.dtype == torch.bool else row == 0
