"""LLaVA-1.5 (transformers' LlavaForConditionalGeneration): CLIP ViT, 2-layer MLP projector, Llama/Vicuna LLM.

Where the reduction runs: on the CLIP features as they enter the projector (Recoverable Compression's hook
point, docs/methods.md §2.1): `vision_feature_layer`'s hidden states ([CLS] dropped under the "default" strategy,
kept as a token under "full"), one image of N patches at a time; the projector then maps the K' tokens left
(merged ones included) into the LLM. What each context field is here:

- features: those hidden states (N, D); grid: (√N, √N) when [CLS] is dropped and the patches are square;
- cls_attention: the last encoder layer's [CLS]->patch attention, one head over the full width, computed from
  that layer's q_proj / k_proj (gistify.vision.ops.cls_attention; the reference codes hook the same
  projections); under "full", [CLS]'s own weight comes first;
- keys: that layer's keys of the tokens;
- patch_text / text (recover's question guidance): with a `TextTower`, CLIP's visual_projection of the last
  layer's patch states (no post-LayerNorm, as the reference code; docs/methods.md §2.4 #3) and the EOS-pooled,
  projected text_embeds of the user's question only (chat template, system prompt and LLaVA's answer-format
  instruction stripped; §2.4 #1, #2). LlavaForConditionalGeneration's tower is a CLIPVisionModel, which has no
  visual_projection: the TextTower brings the one of the CLIP checkpoint it comes from. Without a text tower,
  the §2.5 analogue in the LLM's space (base.ANALOGUE_NOTE), said so in the notes;
- question_states / visual_states: the question's LLM input embeddings / the projector's outputs;
- llm_attention: base.PlaceholderAdapter.llm_attention (scored at the input, see base.FASTV_NOTE).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gistify.vision.adapters.base import PlaceholderAdapter, Question, captured_inputs
from gistify.vision.base import VisualContext
from gistify.vision.ops import cls_attention


@dataclass
class TextTower:
    """A CLIP text tower, its tokenizer, and the visual projection of the vision tower it is paired with.

    Args:
        model: a CLIPModel or CLIPTextModelWithProjection (anything with `.text_model` and `.text_projection`).
        tokenizer: its tokenizer (CLIP's BPE).
        visual_projection: the paired vision tower's projection (D -> Dt), e.g. CLIPModel.visual_projection or
            CLIPVisionModelWithProjection.visual_projection.
    """

    model: nn.Module
    tokenizer: Any
    visual_projection: nn.Module

    @classmethod
    def load(cls, source: Any) -> TextTower:
        """A TextTower from a CLIP checkpoint path or id (CLIPModel; its vision encoder is dropped), a CLIPModel
        instance (its tokenizer loaded from the same place), or a TextTower."""
        from transformers import AutoTokenizer, CLIPModel

        if isinstance(source, TextTower):
            return source
        if isinstance(source, (str, os.PathLike)):
            model = CLIPModel.from_pretrained(source)
            model.vision_model = None  # only its visual_projection is used: the VLM's own tower gives the states
            return cls(model.eval(), AutoTokenizer.from_pretrained(source), model.visual_projection)
        if isinstance(source, CLIPModel):
            try:
                tokenizer = AutoTokenizer.from_pretrained(source.name_or_path)
            except (OSError, ValueError) as e:
                raise ValueError(
                    f"could not load the tokenizer of this CLIPModel ({e}); pass "
                    "gistify.vision.adapters.llava.TextTower(model, tokenizer, model.visual_projection)"
                ) from None
            return cls(source, tokenizer, source.visual_projection)
        raise ValueError(
            "text_tower must be a CLIP checkpoint path or id, a CLIPModel, or a "
            "gistify.vision.adapters.llava.TextTower "
            f"(a CLIPTextModelWithProjection with its tokenizer and the paired visual_projection), got "
            f"{type(source).__name__}"
        )

    @property
    def width(self) -> int:
        return self.model.text_projection.out_features

    @torch.no_grad()
    def embed(self, text: str) -> torch.Tensor:
        """(Dt,) CLIP's text_embeds of `text`: EOS-pooled and projected, at most 77 tokens (CLIP's context)."""
        limit = min(77, self.model.text_model.config.max_position_embeddings)
        enc = self.tokenizer(text, truncation=True, max_length=limit, return_tensors="pt")
        device = self.model.text_projection.weight.device
        pooled = self.model.text_model(
            input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)
        ).pooler_output
        return self.model.text_projection(pooled)[0]


class LlavaAdapter(PlaceholderAdapter):
    family = "LLaVA-1.5"
    vision_inputs = ("pixel_values", "image_sizes", "vision_feature_layer", "vision_feature_select_strategy")

    def __init__(self, model: nn.Module, text_tower: Any = None, tokenizer: Any = None):
        vision = model.config.vision_config
        if vision.model_type != "clip_vision_model":
            raise ValueError(
                f"the {self.family} adapter reads a CLIP vision tower ([CLS] attention, its projection); this "
                f"model's is {vision.model_type}"
            )
        super().__init__(model, text_tower, tokenizer)

    def load_text_tower(self, text_tower: Any) -> TextTower:
        tower = TextTower.load(text_tower)
        width = self.model.config.vision_config.hidden_size
        proj = tower.visual_projection
        if proj.in_features != width or proj.out_features != tower.width:
            raise ValueError(
                f"the text tower's visual_projection maps {proj.in_features} -> {proj.out_features} but the VLM's "
                f"CLIP states are {width}-wide and its text embeddings {tower.width}-wide: use the CLIP checkpoint "
                "the VLM's vision tower comes from (LLaVA-1.5: openai/clip-vit-large-patch14-336)"
            )
        return tower

    def language_model(self) -> nn.Module:
        return self.model.model.language_model

    def to_llm(self, ctx: VisualContext, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.model.multi_modal_projector(tokens)

    def encode(self, inputs: dict[str, Any], needs: frozenset[str]) -> list[VisualContext]:
        if inputs.get("image_sizes") is not None:
            raise ValueError(
                f"the {self.family} adapter takes one fixed-size image per pixel_values row, not image_sizes"
            )
        config = self.model.config
        layer, strategy = inputs.get("vision_feature_layer"), inputs.get("vision_feature_select_strategy")
        layer = config.vision_feature_layer if layer is None else layer  # 0 is a layer
        strategy = strategy or config.vision_feature_select_strategy
        tower = self.model.model.vision_tower
        attention = getattr(tower, "vision_model", tower).encoder.layers[-1].self_attn  # older CLIP nests it
        with captured_inputs(attention) as seen:
            # the model's own call, so that the visual_states are exactly what the unmodified model reads
            out = self.model.model.get_image_features(
                pixel_values=inputs["pixel_values"],
                vision_feature_layer=layer,
                vision_feature_select_strategy=strategy,
                return_dict=True,
            )
        first = 1 if strategy == "default" else 0  # [CLS] is token 0 of CLIP's sequence
        layers = [layer] if isinstance(layer, int) else layer
        features = torch.cat([out.hidden_states[i][:, first:] for i in layers], dim=-1)  # (images, N, D)
        fields: dict[str, torch.Tensor] = {}
        if needs & {"cls_attention", "keys"}:
            hidden = seen["hidden_states"]  # (images, 1 + P, C): the last layer's input, after its layer norm
            q, k = attention.q_proj(hidden), attention.k_proj(hidden)
            attn = torch.stack([cls_attention(qi, ki) for qi, ki in zip(q, k)])  # (images, P)
            if not first:  # "full": [CLS] is a visual token too; its own weight is what the patches leave
                attn = torch.cat([1 - attn.sum(1, keepdim=True), attn], dim=1)
            fields.update(cls_attention=attn, keys=k[:, first:])
        if self.text_tower is not None and needs & {"text", "patch_text"}:
            fields["patch_text"] = self.text_tower.visual_projection(out.last_hidden_state[:, first:])
        n = features.shape[1]
        side = int(n**0.5)
        grid = (side, side) if first and side * side == n else None
        return [
            VisualContext(features=f, visual_states=v, grid=grid, **{name: value[i] for name, value in fields.items()})
            for i, (f, v) in enumerate(zip(features, out.pooler_output))
        ]

    def text_context(self, ctx: VisualContext, question: Question) -> tuple[dict[str, torch.Tensor], str | None]:
        if self.text_tower is None:
            return super().text_context(ctx, question)
        text = self.question_text(question)
        return {"text": self.text_tower.embed(text).to(ctx.features.device)}, None
