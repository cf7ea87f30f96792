"""Qwen2.5-VL (transformers' Qwen2_5_VLForConditionalGeneration): where the visual tokens are, what a method reads
about them, and the M-RoPE position ids of the shortened prompt.

The visual tokens are the PatchMerger's outputs. The vision tower embeds 14 px patches and runs blocks of window
attention (full attention in a few, `fullatt_block_indexes`) over the patches permuted into windows; the merger
turns each 2 x 2 group of patches into one LLM token and undoes the permutation. An image with image_grid_thw
(t, h, w) so gives N = t * h/2 * w/2 tokens, row-major on an (h/2, w/2) grid, and the prompt holds one
<|image_pad|> placeholder per token. The LLM reads 3-D M-RoPE positions (`get_rope_index`): text tokens count
up; an image's tokens sit at (s, s + row, s + col) with s the position after the text before it; the text after
it resumes at s + max(h/2, w/2). Decode steps continue at the prompt's max position + 1 (`rope_deltas`).

The rewrite is PlaceholderAdapter's (base.py): one vision pass, one Reduction per image, a shortened left-padded
prompt whose K'_i placeholders receive the reduced tokens through `mm_encoder_outputs`. What this family adds:
- `encode`: the model's own `get_image_features`, with a pre-hook on the last vision block's attention that keeps
  its input, from which the keys and the attention each patch receives are recomputed (that block returns no
  attention weights) and mapped from window order to the tokens' raster order;
- `build_inputs`: position ids (3, B, S'), always. They are columns of the positions the unmodified model gives
  the full prompt: kept tokens keep their original 3-D positions, and the text keeps its own, so it still resumes
  at the original max + 1 (what token pruning on Qwen2-VL does in the literature). The extra tokens a Reduction
  appends (merged centres, aggregate tokens) take the positions of the raster slots that follow the last kept
  one, which no kept token holds (the image's last slot again where the raster runs out), so they stay inside
  the image's range. `rope_deltas` becomes (max position + 1) - shortened length per sample, so that a decode
  step that gives no position ids (manual decoding from `session.inputs`) continues where the unmodified model
  would; `generate` carries the explicit position ids forward itself.

Analogues (the tower has no [CLS] and there is no paired text tower; docs/methods.md §2.5), said in the notes:
- cls_attention: the attention each token's 4 patches receive together in the last vision block, averaged over
  its heads and over all the queries of their attention segment: the whole image when that block has full
  attention, as in the released checkpoints (then it sums to 1 over the image's tokens, as [CLS] attention over
  the patches does), their window otherwise;
- keys: that block's keys before RoPE (so that their similarity is about content, not place), averaged over the
  4 patches;
- text guidance (base.py's default): `text` = the question's mean LLM input embedding, `patch_text` = the visual
  tokens after the merger, which live in that input space.

Shapes: S patches of all images (window order inside the tower), C the tower's width, G = S / 4 merge groups,
N_i an image's tokens, D' the LLM's width, B samples, S / S' the prompt's length before / after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch

from gistify.vision.adapters.base import PlaceholderAdapter
from gistify.vision.adapters.prompt import locate_images
from gistify.vision.base import Reduction, VisualContext

if TYPE_CHECKING:
    from gistify.vision.session import Session

# What a user should know about this family's signals; added to the notes of the reductions that read them.
NOTES = {
    "cls_attention": "qwen2_5_vl has no [CLS]: cls_attention is an analogue (docs/methods.md §2.5), the "
    "attention each token's 4 patches receive together in the vision tower's last block (mean over heads and "
    "queries)",
    "keys": "qwen2_5_vl: keys are the last vision block's keys before RoPE, averaged over each token's 4 patches",
}
POSITION_NOTE = (
    "qwen2_5_vl: kept tokens keep their M-RoPE positions and the text keeps its own; tokens a method appends take "
    "the positions of the raster slots after the image's last kept one"
)


class Qwen2_5_VLAdapter(PlaceholderAdapter):
    """Qwen2.5-VL: the PatchMerger's outputs are the visual tokens; M-RoPE positions are kept, not renumbered."""

    family: ClassVar[str] = "Qwen2.5-VL"
    vision_inputs: ClassVar[tuple[str, ...]] = ("pixel_values",)

    def language_model(self):
        return self.model.model.language_model

    def install(self, session: Session) -> None:
        super().install(session)
        # build_inputs sets the cached rope_deltas for the shortened prompts; the block ends with the model's own
        session.patch(self.model.model, "rope_deltas", self.model.model.rope_deltas)

    # -- the vision side -------------------------------------------------------------------------------------

    def encode(self, inputs: dict[str, Any], needs: frozenset[str]) -> list[VisualContext]:
        if inputs.get("pixel_values_videos") is not None:
            raise ValueError("gistify.reduce reduces Qwen2.5-VL's images; calls with videos are not supported yet")
        grid_thw = inputs.get("image_grid_thw")
        if grid_thw is None:
            raise ValueError("Qwen2.5-VL's pixel_values need their image_grid_thw: pass what the processor returns")
        visual = self.model.model.visual
        want_block = bool(needs & {"keys", "cls_attention"})
        features, block = encode_images(self.model, inputs["pixel_values"], grid_thw, want_block)
        sizes = [len(f) for f in features]
        extra = [{} for _ in features]
        if block is not None:
            keys, received = block_stats(visual, block, "cls_attention" in needs)
            order = window_order(visual, grid_thw)
            unit = visual.spatial_merge_unit
            for e, k in zip(extra, to_raster(keys, order, unit).split(sizes)):
                e["keys"] = k.to(features[0].dtype)  # the mean key of the token's patches
            if received is not None:  # what the token's patches receive together: sums to 1 over an image
                for e, a in zip(extra, (to_raster(received, order, unit) * unit).split(sizes)):
                    e["cls_attention"] = a
        merge = visual.spatial_merge_size
        grids = [(h // merge, w // merge) if t == 1 else None for t, h, w in grid_thw.tolist()]
        return [VisualContext(features=x, visual_states=x, grid=g, **e) for x, g, e in zip(features, grids, extra)]

    def notes(self, needs: frozenset[str]) -> list[str]:
        return [*(NOTES[n] for n in sorted(needs & NOTES.keys())), POSITION_NOTE]

    # -- the shortened prompt --------------------------------------------------------------------------------

    def build_inputs(self, inputs: dict[str, Any], index: torch.Tensor, features: list[torch.Tensor], reductions=None):
        """base.py's inputs, plus M-RoPE position ids (3, B, S') taken from the full prompt's, and rope_deltas."""
        out = super().build_inputs({k: v for k, v in inputs.items() if k != "position_ids"}, index, features)
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        mask = torch.ones_like(ids) if mask is None else mask
        full = self.full_positions(inputs, mask)  # (3, B, S)
        source = position_sources(ids, mask, self.image_token_id, reductions)
        column = source.gather(1, index.clamp_min(0))  # (B, S'): whose position each new column takes
        positions = full.gather(2, column[None].expand(3, -1, -1))
        positions = positions.masked_fill(index[None] < 0, 1)  # padding: any position, it is masked out
        out["position_ids"] = positions
        real = out["attention_mask"].bool()
        # decode positions are (tokens so far - 1) + delta: the first new token sits at the prompt's max + 1
        top = positions.masked_fill(~real[None], -1).amax(dim=(0, 2))  # (B,)
        self.model.model.rope_deltas = (top + 1 - real.sum(1)).unsqueeze(1)
        return out

    def full_positions(self, inputs: dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        """(3, B, S) the positions the unmodified model gives the full prompt: the user's, or get_rope_index's
        when the call has mm_token_type_ids (as the processor returns), or 1-D ones (the model's fallback)."""
        given = inputs.get("position_ids")
        ids = inputs["input_ids"]
        if given is not None:
            return given[-3:] if given.ndim == 3 else given[None].expand(3, -1, -1)
        types = inputs.get("mm_token_type_ids")
        if types is not None:
            positions, _ = self.model.model.get_rope_index(
                ids, types, image_grid_thw=inputs["image_grid_thw"], attention_mask=mask
            )
            return positions
        text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        return text[None].expand(3, -1, -1)


# -- the vision pass ------------------------------------------------------------------------------------------


def encode_images(model, pixel_values: torch.Tensor, grid_thw: torch.Tensor, want_block: bool):
    """The model's own vision pass. Returns the merger outputs per image, (N_i, D') in raster order, and (when
    `want_block`) the input of the last block's attention: {"hidden": (S, C), "cu_seqlens", "rope": (cos, sin)}."""
    visual = model.model.visual
    captured: dict[str, Any] = {}

    def keep_input(module, args, kwargs):
        captured["hidden"] = args[0] if args else kwargs["hidden_states"]  # (S, C), window order, normed
        captured["cu_seqlens"] = kwargs["cu_seqlens"]  # this block's attention segments
        captured["rope"] = kwargs["position_embeddings"]  # (cos, sin), each (S, head_dim)

    handle = visual.blocks[-1].attn.register_forward_pre_hook(keep_input, with_kwargs=True) if want_block else None
    try:
        out = model.model.get_image_features(pixel_values, image_grid_thw=grid_thw, return_dict=True)
    finally:
        if handle is not None:
            handle.remove()
    return list(out.pooler_output), (captured if want_block else None)


def block_stats(visual, block: dict, want_attention: bool, budget: int = 2**26):
    """From the last block's attention input: its keys before RoPE (S, C), and (if `want_attention`) the
    attention each patch receives (S,), the mean over heads and over the queries of its attention segment; both
    in the tower's window order. The attention maps are computed a chunk of queries at a time, about `budget`
    scores each (a large image's full map would take GBs)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    attn = visual.blocks[-1].attn
    h = block["hidden"]
    s = len(h)
    q, k, _ = attn.qkv(h).reshape(s, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)  # (S, H, hd) each
    keys = k.reshape(s, -1)
    if not want_attention:
        return keys, None
    q, k = apply_rotary_pos_emb_vision(q, k, *block["rope"])  # as the block attends
    received = torch.zeros(s, device=h.device)
    bounds = block["cu_seqlens"].tolist()
    for a, b in zip(bounds[:-1], bounds[1:]):
        qs, ks = q[a:b].transpose(0, 1).float(), k[a:b].transpose(0, 1).float()  # (H, n, hd)
        total = torch.zeros(b - a, device=h.device)
        chunk = max(1, budget // (attn.num_heads * (b - a)))
        for i in range(0, b - a, chunk):
            total += torch.softmax(qs[:, i : i + chunk] @ ks.transpose(1, 2) * attn.scaling, dim=-1).sum(dim=(0, 1))
        received[a:b] = total / (attn.num_heads * (b - a))
    return keys, received


def window_order(visual, grid_thw: torch.Tensor) -> torch.Tensor:
    """(G,) the tower's window permutation of the merge groups: row i of the block states (in runs of 4 patches)
    belongs to merge group window_index[i], counted in raster order over all images."""
    from transformers.vision_utils import get_vision_window_index

    index, _ = get_vision_window_index(grid_thw, visual.spatial_merge_size, visual.window_size, visual.patch_size)
    return index


def to_raster(x: torch.Tensor, window_index: torch.Tensor, unit: int) -> torch.Tensor:
    """Per-patch values x (S, ...) in window order -> their mean over each merge group (G, ...) in raster order,
    the order of the merger's outputs and of the placeholders (the merger undoes the permutation the same way)."""
    groups = x.reshape(len(x) // unit, unit, *x.shape[1:]).mean(dim=1)
    return groups[torch.argsort(window_index.to(x.device))]


# -- positions ------------------------------------------------------------------------------------------------


def extra_positions(n: int, last_slot: int, n_extra: int) -> torch.Tensor:
    """(n_extra,) the raster slots whose positions a Reduction's appended tokens take: those after the last kept
    slot (`last_slot`, -1 when none is kept), none of which is kept; the last slot again once the raster runs out."""
    return torch.clamp(torch.arange(n_extra) + last_slot + 1, max=n - 1)


def position_sources(
    ids: torch.Tensor,
    mask: torch.Tensor,
    image_token_id: int,
    reductions: list[Reduction] | None,
) -> torch.Tensor:
    """(B, S) for each column of the full prompt, the column whose position it takes once shortened.

    base.py's `shorten` keeps the first K'_i placeholders of image i; the j-th of them holds the reduced token j,
    so it takes the position of kept slot j, or for an appended token that of `extra_positions`. Every other
    column keeps its own. Without reductions (the scoring pass on the full prompt) every column keeps its own.
    """
    source = torch.arange(ids.shape[1], device=ids.device).repeat(len(ids), 1)
    if reductions is None:
        return source
    spans = locate_images(ids, mask, image_token_id, [r.n_in for r in reductions])
    for span, red in zip(spans, reductions):
        slots = torch.cat([red.kept, extra_positions(red.n_in, _last(red.kept), red.n_out - len(red.kept))])
        source[span.sample, span.positions[: red.n_out]] = span.positions[slots.to(span.positions.device)]
    return source


def _last(kept: torch.Tensor) -> int:
    return int(kept[-1]) if len(kept) else -1
