"""Prompt surgery shared by the placeholder adapters: where each image's placeholder tokens sit, the index of a
shortened left-padded prompt, gathering per-token inputs at it, restoring the user's prompt in generate's output,
and the question read back as text. Shapes: B samples, S prompt length, S' after shortening, N an image's tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch


@dataclass
class ImageSpan:
    """Where one image's placeholders sit: its sample and its N positions in that sample's row."""

    sample: int
    positions: torch.Tensor  # (N,) long


def locate_images(ids: torch.Tensor, mask: torch.Tensor, image_token_id: int, counts: list[int]) -> list[ImageSpan]:
    """Split the batch's placeholders (row-major, unmasked ones) into consecutive runs of counts[i] tokens, one
    per image in the order the vision side returned them; each run must lie in one sample."""
    placeholders = ((ids == image_token_id) & mask.bool()).nonzero()  # (P, 2): sample, position, row-major
    if len(placeholders) != sum(counts):
        raise ValueError(
            f"the prompt holds {len(placeholders)} image tokens but its images give {sum(counts)} visual tokens "
            f"({len(counts)} images): build the inputs with the model's own processor"
        )
    spans, start = [], 0
    for n in counts:
        run = placeholders[start : start + n]
        if run[0, 0] != run[-1, 0]:
            raise ValueError("an image's placeholder tokens span two samples: build the inputs with the processor")
        spans.append(ImageSpan(int(run[0, 0]), run[:, 1]))
        start += n
    return spans


def shorten(ids: torch.Tensor, mask: torch.Tensor, spans: list[ImageSpan], kept: list[int]) -> torch.Tensor:
    """(B, S') long: for each position of the shortened, left-padded prompt, the original position it copies
    (-1 for padding). Each image keeps the first kept[i] of its placeholders (they are identical tokens; the
    features decide what they hold); every other unmasked token stays."""
    keep = mask.bool().clone()
    for span, k in zip(spans, kept):
        keep[span.sample, span.positions[k:]] = False
    rows = [row.nonzero()[:, 0] for row in keep]
    width = max(len(r) for r in rows)
    index = torch.full((len(ids), width), -1, dtype=torch.long, device=ids.device)
    for b, r in enumerate(rows):
        index[b, width - len(r) :] = r
    return index


def take(x: torch.Tensor, index: torch.Tensor, fill: int | float) -> torch.Tensor:
    """x (B, S, ...) gathered at index (B, S') along dim 1; positions where index is -1 get `fill`."""
    safe = index.clamp_min(0).view(*index.shape, *([1] * (x.ndim - 2))).expand(*index.shape, *x.shape[2:])
    out = x.gather(1, safe)
    pad = (index < 0).view(*index.shape, *([1] * (x.ndim - 2)))
    return out.masked_fill(pad, fill)


def columns(index: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) long: the inverse of `shorten`'s index, where each original position went (-1: dropped)."""
    column = torch.full((len(index), width), -1, dtype=torch.long, device=index.device)
    rows, cols = (index >= 0).nonzero(as_tuple=True)
    column[rows, index[rows, cols]] = cols
    return column


def restore_prompt(out, original: torch.Tensor, short_len: int):
    """generate's output with the short prompt replaced by the user's input_ids (repeated as generate repeats
    each sample for num_return_sequences)."""
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    prompt = original.repeat_interleave(len(sequences) // len(original), dim=0)
    sequences = torch.cat([prompt, sequences[:, short_len:]], dim=1)
    if isinstance(out, torch.Tensor):
        return sequences
    out.sequences = sequences
    return out


# -- the question as text ------------------------------------------------------------------------------------

# Answer-format instructions that LLaVA's evaluation prompts append to the question (docs/methods.md §2.4 #1).
FORMAT_SUFFIXES = (
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "Answer with the option letter from the given choices directly.",
    "Please answer yes or no.",
)
_USER = re.compile(r"(?:^|\n|\s)(?:USER|User|user|Human|HUMAN)\s*:?\s*\n?")
_ASSISTANT = re.compile(r"\s*(?:ASSISTANT|Assistant|assistant|GPT|gpt)\s*:?\s*$")


def clean_question(text: str) -> str:
    """The user's question from a decoded prompt tail: after the last user-role marker, without the reply's
    role marker at the end or LLaVA's answer-format instruction (docs/methods.md §2.4 #1)."""
    users = list(_USER.finditer(text))
    if users:
        text = text[users[-1].end() :]
    text = _ASSISTANT.sub("", text)
    for suffix in FORMAT_SUFFIXES:
        text = text.replace(suffix, "")
    return " ".join(text.split())
