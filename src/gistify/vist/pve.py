"""PVE, Probability-informed Visual Enhancement: vist's contrastive loss between what the resampler made of an
image and the LLM's own embeddings of the text drawn on it, with the frequent tokens masked (docs/methods.md
§3.5).

Per sample i:
- visual side: the mean over its images (those holding text) of the resampler's CLS output, through a trainable
  linear head to the LLM's width (§3.5: the widths differ);
- text side: the mean of the frozen LLM input embeddings E_LLM[x_j] over the positions j of the encoder-side
  tokens x (the text that was rendered) left unmasked.

Frequency masking (FM): each token w has an importance s_w = log(|S| / (1 + count(w))), counted with the LLM's
tokenizer over the training corpus (|S| training samples); ⌈ratio x T⌉ positions of each sample are masked, drawn
without replacement with weights softmax(-s_w / T_fm), so frequent tokens ("the", ",", " of") are masked far
more often and the text feature is carried by the rare, content-bearing ones. `random` draws the positions
uniformly (the paper's RM ablation), `lowest` masks the ratio x T least important positions deterministically
(§3.8's variant), `none` masks nothing.

The loss is InfoNCE, visual -> text (Eq. 1, τ = 0.07, cosine similarities). Negatives are the other samples of
the batch and, because a CPU batch is small, a queue of text features from earlier batches (MoCo-style; §3.9).
The text side is a frozen function of the text, so a queued feature is as current as a fresh one: the queue only
adds negatives. Windows of the same article that overlap share text: they are not negatives of each other (in the
batch or in the queue), so the loss never pushes apart two views of the same words.

Axes: B samples, T encoder-side text positions, V vocabulary, d LLM width, Q queue length.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gistify.method import check_choice

MASKS = ("frequency", "random", "lowest", "none")


@dataclass(frozen=True)
class PVEConfig:
    """Args:
    weight: of the PVE loss in L = L_LM + weight x L_PVE (the paper: 1; 0 turns PVE off).
    temperature: τ of the InfoNCE (0.07).
    mask: how the text side is masked: "frequency" (the paper's FM), "random", "lowest", "none".
    ratio: fraction of positions masked (0.5; the paper's ablation: 0.3 and 0.7 are slightly worse).
    mask_temperature: T_fm of the sampling weights softmax(-s_w / T_fm).
    queue: text features kept from earlier batches as extra negatives (0: in-batch negatives only).
    """

    weight: float = 1.0
    temperature: float = 0.07
    mask: str = "frequency"
    ratio: float = 0.5
    mask_temperature: float = 1.0
    queue: int = 256

    def __post_init__(self):
        check_choice("PVEConfig", "mask", self.mask, MASKS)
        if not self.weight >= 0:
            raise ValueError(f"PVEConfig.weight must be >= 0, got {self.weight!r}")
        if not 0 <= self.ratio < 1:
            raise ValueError(f"PVEConfig.ratio must be in [0, 1), got {self.ratio!r}")
        for name in ("temperature", "mask_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PVEConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not isinstance(self.queue, int) or self.queue < 0:
            raise ValueError(f"PVEConfig.queue must be an integer >= 0, got {self.queue!r}")


# -- token frequencies --------------------------------------------------------------------------------------------


def token_counts(texts: Iterable[str], tokenizer, vocab_size: int) -> torch.Tensor:
    """(V,) int64: how often each token occurs in `texts`, tokenized with the LLM's tokenizer (no special tokens)."""
    counts = torch.zeros(vocab_size, dtype=torch.int64)
    for text in texts:
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.int64)
        if len(ids):
            counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size]
    return counts


def importance(counts: torch.Tensor, samples: int) -> torch.Tensor:
    """(V,) float32: s_w = log(|S| / (1 + count(w))); high for rare tokens."""
    return math.log(max(samples, 1)) - torch.log1p(counts.double()).float()


def mask_positions(
    ids: torch.Tensor,
    valid: torch.Tensor,
    scores: torch.Tensor | None,
    config: PVEConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, T) bool, True = masked (left out of the text feature). ids (B, T), valid (B, T) bool (False: padding);
    scores (V,) the importance s_w (needed by "frequency" and "lowest").

    Each sample masks ⌈ratio x n⌉ of its n valid positions, and always leaves at least one unmasked.
    """
    masked = torch.zeros_like(valid, dtype=torch.bool)
    if config.mask == "none" or config.ratio == 0:
        return masked
    if config.mask in ("frequency", "lowest") and scores is None:
        raise ValueError(f"mask {config.mask!r} needs the token importances (token counts of the training corpus)")
    for b in range(ids.shape[0]):
        where = valid[b].nonzero().squeeze(1)
        n = len(where)
        k = min(math.ceil(config.ratio * n), n - 1)
        if k <= 0:
            continue
        if config.mask == "random":
            pick = torch.randperm(n, generator=generator)[:k]
        else:
            s = scores[ids[b, where]].float()
            if config.mask == "lowest":
                pick = torch.argsort(s, stable=True)[:k]
            else:
                weights = torch.softmax(-s / config.mask_temperature, dim=0).double()
                pick = torch.multinomial(weights, k, replacement=False, generator=generator)
        masked[b, where[pick]] = True
    return masked


def text_features(embedding: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, d): the mean of the frozen LLM embeddings `embedding` (V, d) of `ids` (B, T) over `keep` (B, T)."""
    with torch.no_grad():
        e = F.embedding(ids, embedding.detach()).float()  # (B, T, d)
        w = keep.float().unsqueeze(-1)
        return (e * w).sum(1) / w.sum(1).clamp(min=1)


def visual_summary(cls: torch.Tensor, image_mask: torch.Tensor, images_per_sample: list[int]) -> torch.Tensor:
    """(B, D): per sample, the mean of its images' CLS outputs `cls` (sum M_i, D) over the images with text
    (all of them if none has)."""
    out, start = [], 0
    for m in images_per_sample:
        c, keep = cls[start : start + m], image_mask[start : start + m]
        out.append(c[keep].mean(0) if keep.any() else c.mean(0))
        start += m
    return torch.stack(out)


# -- the contrastive loss -----------------------------------------------------------------------------------------


def overlaps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(len(a), len(b)) bool: keys (n, 3) = (source, start, end) share a source and overlap in [start, end)."""
    same = a[:, None, 0] == b[None, :, 0]
    return same & (a[:, None, 1] < b[None, :, 2]) & (b[None, :, 1] < a[:, None, 2])


class FeatureQueue:
    """The last `size` text features (FIFO), with each one's key (source, start, end) so that a sample's own text
    (another window over the same lines) is never its negative. Its state goes into checkpoints."""

    def __init__(self, size: int, dim: int):
        self.size, self.dim = size, dim
        self.features = torch.zeros(size, dim)
        self.keys = torch.full((size, 3), -1, dtype=torch.int64)
        self.filled = 0  # entries in use
        self.head = 0  # next slot to write

    def __len__(self) -> int:
        return self.filled

    def push(self, features: torch.Tensor, keys: torch.Tensor) -> None:
        for f, k in zip(features.detach().float()[-self.size :], keys[-self.size :]):
            self.features[self.head], self.keys[self.head] = f, k
            self.head = (self.head + 1) % self.size
            self.filled = min(self.filled + 1, self.size)

    def negatives(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The queued features (Q, d) and a (B, Q) bool mask of those that may be negatives of samples `keys`."""
        feats, qkeys = self.features[: self.filled], self.keys[: self.filled]
        return feats, ~overlaps(keys, qkeys)

    def state_dict(self) -> dict:
        return {"features": self.features.clone(), "keys": self.keys.clone(), "filled": self.filled, "head": self.head}

    def load_state_dict(self, state: dict) -> None:
        self.features, self.keys = state["features"].clone(), state["keys"].clone()
        self.size, self.dim = self.features.shape
        self.filled, self.head = int(state["filled"]), int(state["head"])


def pve_loss(
    visual: torch.Tensor,
    text: torch.Tensor,
    temperature: float = 0.07,
    keys: torch.Tensor | None = None,
    queue: FeatureQueue | None = None,
) -> torch.Tensor:
    """InfoNCE visual -> text (Eq. 1): -mean_i log softmax_k(cos(v_i, t_k) / τ)[i] over the batch's texts and the
    queue's. visual (B, d), text (B, d); keys (B, 3) (source, start, end) drop the negatives that overlap a
    sample's own text (in the batch and in the queue)."""
    v, t = F.normalize(visual.float(), dim=-1), F.normalize(text.float(), dim=-1)
    logits = v @ t.T / temperature  # (B, B)
    b = len(v)
    if keys is not None:
        same = overlaps(keys, keys) & ~torch.eye(b, dtype=torch.bool)
        logits = logits.masked_fill(same, float("-inf"))
    if queue is not None and len(queue):
        feats, ok = queue.negatives(keys if keys is not None else torch.full((b, 3), -2, dtype=torch.int64))
        extra = (v @ F.normalize(feats, dim=-1).T / temperature).masked_fill(~ok, float("-inf"))
        logits = torch.cat([logits, extra], dim=1)
    return F.cross_entropy(logits, torch.arange(b))
