"""The adapter of gistify's own small VLM (gistify_bench.vlm.GistVLM), whose code reads any number of visual tokens.

GistVLM has one seam for reducers, `token_reducer`: set for the block, it receives the encoder features of a
batch (B, N = 196, 155) and returns each image's tokens before the projector, as recover's reference reduces
CLIP's features before LLaVA's projector. The context each method asks for:
- cls_attention / keys: the trained attention probe's weights and keys (the analogue of CLIP's [CLS] attention
  that docs/methods.md §2.5 gives for towers without [CLS], like SigLIP's MAP-head probe);
- patch_text / text: the probe's text-aligned patch values and the question head's embedding of the prompt,
  trained contrastively together (the analogue of CLIP's visual_projection and text tower);
- visual_states / question_states: the projected tokens and the prompt's LLM input embeddings (reinforce);
- llm_attention: FastV's signal, from a pass of SmolLM2's first layers over the full sequence.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from gistify.vision.adapters.base import FASTV_NOTE, QUESTION_NOTE, Adapter, last_token_attention
from gistify.vision.base import VisualContext

if TYPE_CHECKING:
    from gistify.vision.session import Session

PROBE_NOTE = (
    "cls_attention and keys are the analogue of docs/methods.md §2.5 (EfficientNet has no [CLS]): the "
    "weights and keys of GistVLM's trained attention-pooling probe"
)
TEXT_NOTE = (
    "text guidance uses GistVLM's contrastively trained probe values (patch_text) and question head (text), the "
    "analogue of CLIP's visual_projection and text tower"
)


class GistVLMAdapter(Adapter):
    family = "gistify small VLM"

    def install(self, session: Session) -> None:
        def reducer(features: torch.Tensor, x) -> list[torch.Tensor]:
            contexts, notes = self.contexts(features, x, session.method)
            reductions = session.reduce_images(contexts, list(range(len(features))), len(features), notes)
            return [r.tokens for r in reductions]

        session.patch(self.model, "token_reducer", reducer)

    def contexts(self, features: torch.Tensor, x, method) -> tuple[list[VisualContext], list[str]]:
        """One VisualContext per image of the batch (features: (B, N, 155)) with what `method` reads, and the
        notes for the user."""
        model, fields, notes = self.model, {}, []
        needs = frozenset(method.required())
        with torch.no_grad():
            if needs & {"cls_attention", "keys", "patch_text"}:
                fields["cls_attention"], fields["keys"], fields["patch_text"], _ = model.probe(features)
                notes.append(PROBE_NOTE)
            if "text" in needs:
                fields["text"] = model.question_embedding(x.input_ids, x.attention_mask)
                notes.append(TEXT_NOTE)
            if needs & {"visual_states", "question_states"}:
                fields["visual_states"] = model.project(features)
            if "llm_attention" in needs:
                fields["llm_attention"] = self.llm_attention(features, x, method.attention_layer())
                notes.append(FASTV_NOTE)
            if "question_states" in needs:  # (M_b, D') the prompt's LLM input embeddings, padding dropped
                embed = model.lm.get_input_embeddings()
                questions = [embed(ids[m.bool()]).float() for ids, m in zip(x.input_ids, x.attention_mask)]
                notes.append(QUESTION_NOTE)
        contexts = []
        for b in range(len(features)):
            ctx = {name: value[b].float() for name, value in fields.items()}
            if "question_states" in needs:
                ctx["question_states"] = questions[b]
            contexts.append(VisualContext(features[b], grid=_grid(features.shape[1]), **ctx))
        return contexts, notes

    def llm_attention(self, features: torch.Tensor, x, layer: int) -> torch.Tensor:
        """(B, N): the attention the last prompt token pays each visual token at LLM layer `layer` (FastV's K),
        every visual token read."""
        layers = self.model.lm.model.layers
        if not 0 <= layer < len(layers):
            raise ValueError(f"the LLM has {len(layers)} layers; layer {layer} does not exist")
        model, n = self.model, features.shape[1]
        reducer, model.token_reducer = model.token_reducer, None  # the full sequence, for this pass only
        try:
            embeds, mask, positions = model.sequence(replace(x, features=features))  # encoded once already
        finally:
            model.token_reducer = reducer
        row = last_token_attention(
            layers[layer].self_attn,
            lambda: model.lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=False),
        )
        # Left-padded rows: each sample's visual tokens start at its first real position.
        starts = (mask == 0).sum(1)
        return torch.stack([row[b, s : s + n] for b, s in enumerate(starts.tolist())])


def _grid(n: int) -> tuple[int, int]:
    side = int(round(n**0.5))
    return (side, side)
