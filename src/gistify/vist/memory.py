"""What vist's LLM reads: the encoder's lines grouped into the resampler's images (Pages), and the resampled
tokens of a batch (Memory). Shapes: P images, T encoder tokens per line, D feature width, B samples, S memory
tokens per sample."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Pages:
    """One text's encoder view, lines grouped into the resampler's images: features (P, lines_per_image x T, D)
    and mask (P, lines_per_image x T) bool, True where a token holds text. With one memory token per stretch of
    a line (VistConfig.slots_per_line): `filled` (P x N,) bool, the stretches that hold a text token, and
    `positions` (P x N,) their mean text position relative to the text that follows (gistify.vist.slots)."""

    features: torch.Tensor
    mask: torch.Tensor
    filled: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.features.shape[0]


def blank_pages(lines: int, per_image: int, tokens: int, width: int, dtype: torch.dtype = torch.float32) -> Pages:
    """Room for `lines` lines of (tokens, width) features, `per_image` lines per image (at least one image), all
    zero and masked; fill line i through `features.view(-1, tokens, width)[i]` and `mask.view(-1, tokens)[i]`."""
    p = max(1, math.ceil(lines / per_image))
    return Pages(
        torch.zeros(p, per_image * tokens, width, dtype=dtype), torch.zeros(p, per_image * tokens, dtype=torch.bool)
    )


def group_lines(features: torch.Tensor, mask: torch.Tensor, per_image: int) -> Pages:
    """Lines (n, T, D), (n, T) -> Pages of `per_image` lines each, the last padded with masked empty lines. No
    lines gives one empty (fully masked) image."""
    n, t, d = features.shape
    pages = blank_pages(n, per_image, t, d, features.dtype)
    pages.features.view(-1, t, d)[:n] = features
    pages.mask.view(-1, t)[:n] = mask.bool()
    return pages


@dataclass
class Memory:
    """What the LLM reads for a batch: tokens (B, S, D) and mask (B, S) bool (the flattened resampler output of
    each sample's images, blank images and padding masked); cls (sum P_i, D), image_mask (sum P_i,) and
    images (P_i per sample) for PVE; positions (B, S) the tokens' text positions (None: right before the text)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    cls: torch.Tensor | None
    image_mask: torch.Tensor
    images: list[int]
    positions: torch.Tensor | None = None

    @property
    def visual_tokens(self) -> list[int]:
        """Per sample, the memory tokens the LLM reads (blank images excluded)."""
        return self.mask.sum(1).tolist()

    def roll(self, shift: int = 1) -> Memory:
        """Each sample gets another sample's memory (a control: does the model use the content?)."""
        positions = None if self.positions is None else self.positions.roll(shift, 0)
        return Memory(
            self.tokens.roll(shift, 0), self.mask.roll(shift, 0), None, self.image_mask, self.images, positions
        )
