"""`gistify.compress(context, method="vist")`: a context split into a distant part read through vist (as images)
and a proximal part kept as text. See `compress` for why the result is not a text."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gistify.budget import Budget
from gistify.method import check_text
from gistify.rendering import render
from gistify.result import Compressed
from gistify.vist.config import WEIGHTS
from gistify.vist.memory import Memory
from gistify.vist.model import VistModel


@dataclass
class VistCompressed(Compressed):
    """A context split into a distant part read through vist and a proximal part kept as text.

    This is not a compressed *text*: `text` is only the proximal part (what the LLM reads as text), `kept_spans`
    its span; the distant part (`distant_spans`) is not dropped but read as `visual_tokens` resampled image
    tokens that only this VistModel's LLM can read (`memory`). `tokens_out` counts what that LLM reads: visual
    tokens + proximal text tokens. Use `r.generate(prompt)` to ask the LLM; `r.text` alone loses the distant part.
    """

    distant_spans: list[tuple[int, int]] = field(default_factory=list)
    visual_tokens: int = 0
    proximal_tokens: int = 0
    images: int = 0
    memory: Memory | None = field(default=None, repr=False)
    model: VistModel | None = field(default=None, repr=False)

    @property
    def dropped_spans(self) -> list[tuple[int, int]]:
        """Nothing is dropped: the spans outside both the proximal and the distant part (whitespace at the cut)."""
        covered = sorted(self.kept_spans + self.distant_spans)
        out, pos = [], 0
        for s, e in covered:
            if s > pos:
                out.append((pos, s))
            pos = max(pos, e)
        if pos < len(self.source):
            out.append((pos, len(self.source)))
        return out

    def generate(self, prompt: str | None = None, max_new_tokens: int = 64, **kwargs) -> str:
        """The LLM's continuation of proximal text + `prompt` (e.g. the question), reading the distant part."""
        if self.model is None:
            raise ValueError("this result holds no model")
        proximal = self.text + (prompt or "")
        return self.model.generate("", proximal, max_new_tokens, memory=self.memory, **kwargs)

    def to_dict(self, include_source: bool = False) -> dict[str, Any]:
        d = super().to_dict(include_source)
        d.update(
            distant_spans=[list(s) for s in self.distant_spans],
            visual_tokens=self.visual_tokens,
            proximal_tokens=self.proximal_tokens,
            images=self.images,
        )
        return d


_SHARED: dict[str, VistModel] = {}


def _shared(weights: str | Path | None) -> VistModel:
    key = str(weights or WEIGHTS)
    if key not in _SHARED:
        _SHARED[key] = VistModel.from_pretrained(weights)
    return _SHARED[key]


def _line_starts(model: VistModel, text: str) -> np.ndarray:
    """Character offset at which each rendered line of `text` starts (blank rows included)."""
    r = render(text, model.config.layout())
    return np.array([row.span[0] for row in r.rows], dtype=np.int64)


def compress(
    text: str,
    question: str | None = None,
    *,
    keep: float | None = None,
    tokens: int | None = None,
    proximal_tokens: int | None = None,
    model: VistModel | None = None,
    weights: str | Path | None = None,
    tokenizer: Any = "scorer",
) -> VistCompressed:
    """Split `text` into a distant part read through vist and a proximal part (its last tokens) kept as text.

    Without a budget, the proximal part is the last `proximal_tokens` tokens (default: the window vist was
    trained with). With `keep` / `tokens`, it is the longest tail such that visual tokens + proximal tokens fit
    the budget: text is read exactly, so it gets all the budget the images leave. vist's ratio is fixed by its
    training (~64 tokens per image of ~150 text tokens): a budget below what the whole context costs as images
    cannot be met; the result then reads everything as images and a note says so. The question is not used to
    compress (vist reads everything); ask it with `r.generate(question)`. Tokens are counted with the LLM's
    tokenizer (the only one whose tokens vist's LLM reads).
    """
    text = check_text(text)
    if model is not None and not isinstance(model, VistModel):
        raise ValueError(
            f"method 'vist' takes model=a VistModel (or weights=a vist.safetensors path), not {type(model).__name__}"
        )
    if tokenizer != "scorer":
        raise ValueError("method 'vist' counts tokens with its own LLM's tokenizer; leave `tokenizer` unset")
    budget = Budget(keep=keep, tokens=tokens) if (keep is not None or tokens is not None) else None
    model = model or _shared(weights)
    t0 = time.perf_counter()
    enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = np.array([a for a, _ in enc["offset_mapping"]], dtype=np.int64)
    n = len(starts)
    trained = model.card.get("training", {}).get("proximal_tokens", 128)
    c = model.config
    notes = []
    target = budget.target(n) if budget else n
    if budget is None or target >= n:
        p = min(n, proximal_tokens or trained) if budget is None else n
        if budget is not None and budget.keep != 1:
            notes.append(f"the budget ({budget}) is not below the text's {n} tokens: all of it is read as text")
    else:
        # p proximal tokens: the distant part is text[:starts[n - p]]; its lines are the whole text's lines that
        # start before the cut (greedy wrapping), so one rendering prices every split.
        lines = _line_starts(model, text)
        cut = np.append(starts, len(text))[n - np.arange(n + 1)]  # cut[p]: the distant part's end for p
        n_lines = np.searchsorted(lines, cut, side="left")
        n_lines = np.maximum(n_lines, (cut > 0).astype(np.int64))
        visual = np.where(cut > 0, np.ceil(n_lines / c.lines_per_image) * c.latents, 0)
        fits = np.flatnonzero(np.arange(n + 1) + visual <= target)
        p = int(fits.max()) if len(fits) else 0
        if not len(fits):
            notes.append(
                f"the budget of {target} tokens is below what the whole context costs as images "
                f"(~{int(visual[0])} tokens at {c.latents} per image of {c.lines_per_image} lines): all of it is "
                "read as images"
            )
    split = int(np.append(starts, len(text))[n - p]) if p < n else 0
    distant, proximal = text[:split], text[split:]
    if distant.strip():
        memory = model.memory(model.read([distant]))
        visual_tokens = int(memory.visual_tokens[0])
        images = int(memory.image_mask.sum())
    else:
        memory, visual_tokens, images, split, proximal = None, 0, 0, 0, text
    n_prox = len(model.tokenizer(proximal, add_special_tokens=False)["input_ids"]) if proximal else 0
    notes.append(
        f"not a text: the first {split} characters are read by {model.config.inject} from {visual_tokens} visual "
        f"tokens ({images} images) that only this VistModel can read (r.memory, r.generate); r.text is the "
        f"proximal part, {n_prox} text tokens. tokens_out = visual + proximal tokens."
    )
    if question:
        notes.append("the question is not used to compress (vist reads all of the context); ask r.generate(question)")
    held = model.card.get("held_out", {}).get("nll_per_token", {})
    if memory is not None and "shuffled" in held and held["shuffled"] - held["vist"] < 0.01:
        notes.append(
            f"these weights do not read the memory's content: held out, another text's memory scores as well "
            f"(NLL {held['vist']:.3f} with its own, {held['shuffled']:.3f} with another's), so the distant part is "
            "in effect not read; see the card (vist.json)"
        )
    return VistCompressed(
        text=proximal,
        source=text,
        kept_spans=[(split, len(text))] if proximal else [],
        tokens_in=n,
        tokens_out=visual_tokens + n_prox,
        target_tokens=target,
        budget=str(budget) if budget else f"proximal_tokens={p}",
        method="vist",
        params={"inject": c.inject, "latents": c.latents, "lines_per_image": c.lines_per_image, "proximal": p},
        tokenizer=getattr(model.tokenizer, "name_or_path", "") or type(model.tokenizer).__name__,
        seconds=time.perf_counter() - t0,
        notes=notes,
        distant_spans=[(0, split)] if split else [],
        visual_tokens=visual_tokens,
        proximal_tokens=n_prox,
        images=images,
        memory=memory,
        model=model,
    )
