"""Where each LLM token of the distant text sits among vist's memory slots (issue 13, step 4; docs/methods.md §3.11).

A rendered line is 96 encoder tokens wide (768 px); with `slots_per_line` k it is cut into k stretches of 96 / k
encoder tokens, and the local resampler (ResamplerConfig.local, 16 lines x k = the image's latents) gives one
memory token per stretch. A text token belongs to the stretch its middle character is drawn in. The x of a
character is taken proportionally to its offset in the line between the line's start and the end of its drawn
text (the encoder mask's length): an approximation of the font's advance widths that is off by a fraction of a
stretch at worst.

The same assignment serves both sides of the distillation: the teacher memory in vist's layout (the LLM's hidden
states of the tokens of one stretch, averaged: the target the resampler is trained to produce), and the positions
the LLM reads the vision memory at (the mean text position of a stretch's tokens: RoPE for the memory keys, so the
LLM knows which line and which image come first). A stretch that holds no token's middle is masked.

Axes: n text tokens, L lines, k slots per line (slot index = line x k + stretch).
"""

from __future__ import annotations

import numpy as np
import torch


def token_slots(
    offsets: np.ndarray, spans: np.ndarray, drawn: np.ndarray, tokens_per_line: int, slots_per_line: int
) -> np.ndarray:
    """The slot of each text token: (n,) int64 in [0, L x k).

    offsets (n, 2): each token's characters (start, end) in the text; spans (L, 2): each line's characters, in
    order, in the same text; drawn (L,): how many encoder tokens of each line hold text (the rest is blank);
    tokens_per_line: encoder tokens per line (96). A token between lines (a newline, a space the wrap dropped)
    belongs to the end of the line before it."""
    offsets, spans = np.asarray(offsets, dtype=np.float64), np.asarray(spans, dtype=np.int64)
    if len(spans) == 0:
        raise ValueError("token_slots needs at least one line")
    middle = offsets.mean(1) if len(offsets) else np.zeros(0)
    line = np.clip(np.searchsorted(spans[:, 0], middle, side="right") - 1, 0, len(spans) - 1)
    start, end = spans[line, 0], spans[line, 1]
    fraction = np.clip((middle - start) / np.maximum(end - start, 1), 0.0, 1.0)
    width = np.asarray(drawn, dtype=np.float64)[line]
    # in encoder tokens from the line's left edge; a token at the very end is in the last drawn token
    x = np.minimum(fraction * width, np.maximum(width - 0.5, 0.0))
    stretch = np.minimum((x * slots_per_line / tokens_per_line).astype(np.int64), slots_per_line - 1)
    return line * slots_per_line + stretch


def pool_slots(values: torch.Tensor, slots: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean of `values` (n, ...) over the tokens of each slot: (count, ...) and which slots hold any (count,)."""
    slots = torch.as_tensor(slots, dtype=torch.int64, device=values.device)
    flat = values.reshape(len(values), -1).float()
    total = flat.new_zeros(count, flat.shape[1]).index_add_(0, slots, flat)
    n = torch.bincount(slots, minlength=count)[:count].to(flat.dtype)
    pooled = total / n.clamp(min=1)[:, None]
    return pooled.view(count, *values.shape[1:]), n > 0


def text_slots(
    tokenizer, text: str, spans: np.ndarray, drawn: np.ndarray, tokens_per_line: int, slots_per_line: int, count: int
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """A distant text's n tokens among `count` slots (whole images: count >= lines x k): each token's slot (n,),
    which slots hold a token (count,) bool and their mean text position (count,) float, the text's last token at
    -1 (the text the LLM reads comes right after it). spans / drawn: the text's rendered lines, as token_slots."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.array(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    n = len(offsets)
    if len(spans) == 0:  # an empty text: nothing is drawn, no slot holds a token
        return np.zeros(0, dtype=np.int64), torch.zeros(count, dtype=torch.bool), torch.zeros(count)
    slots = token_slots(offsets, spans, drawn, tokens_per_line, slots_per_line)
    positions, filled = pool_slots(torch.arange(n, dtype=torch.float32)[:, None] - n, slots, count)
    return slots, filled, positions[:, 0]
