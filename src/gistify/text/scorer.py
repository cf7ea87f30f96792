"""The scorer LM: per-token statistics of a text from one causal LM, in windows of bounded memory.

Text methods that need a model (selfinfo, reinforce) ask the scorer for `TokenStats`: each token's
character offset, its self-information -log p(x_t | x_<t) (Selective Context; docs/methods.md §1.2 step 5) and
its hidden state at a shallow layer (the node features of docs/methods.md §1.2 step 1).

Long texts are read in windows of `window` tokens, each preceded by `context` tokens of the text before it
so that early tokens of a window are still predicted in context. Memory is bounded by the window, not the
text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gistify.progress import track


@dataclass
class TokenStats:
    starts: np.ndarray  # (n,) int64: first character of each scorer token
    self_info: np.ndarray  # (n,) float32: -log p(token | preceding text), in nats
    hidden: torch.Tensor  # (n, d) float32: hidden states at the scorer's feature layer


@dataclass
class Scorer:
    """A causal LM and its tokenizer, used to score tokens. Load the embedded default with `Scorer.load()`."""

    model: Any
    tokenizer: Any
    window: int = 1024
    context: int = 128
    label: str | None = None  # how results name it; default: the model's name or path
    head: Path | None = None  # the fast path's surprisal head (gistify.text.fast); default: the layer's shipped one
    _cache: dict = field(default_factory=dict, repr=False)
    _fast: dict = field(default_factory=dict, repr=False)  # (layer, dtype) -> gistify.text.fast.FastPath, built once
    _no_fast: dict = field(default_factory=dict, repr=False)  # layer -> why it cannot be built, found once

    @classmethod
    def load(cls, name_or_path: str | None = None) -> Scorer:
        from gistify import models

        model, tokenizer = models.load(name_or_path)
        return cls(model, tokenizer, label=name_or_path or models.DEFAULT_MODEL)

    @property
    def name(self) -> str:
        return self.label or getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__

    def encode(self, text: str) -> tuple[list[int], np.ndarray]:
        """The scorer's token ids of `text` (no special tokens) and each token's first character offset."""
        backend = self.tokenizer.backend_tokenizer
        enc = backend.encode(text, add_special_tokens=False)
        return enc.ids, np.array([a for a, _ in enc.offsets], dtype=np.int64)

    def __post_init__(self):
        if self.window < 1 or self.context < 1:
            raise ValueError(f"Scorer needs window >= 1 and context >= 1, got {self.window} and {self.context}")

    def _check_layer(self, layer: int) -> None:
        n = self.model.config.num_hidden_layers
        if not 0 <= layer <= n:
            raise ValueError(f"layer {layer} does not exist: the scorer {self.name} has layers 0 (embeddings) to {n}")

    def forget(self) -> None:
        """Drop the cached statistics (benchmarks time the forward pass every run)."""
        self._cache.clear()

    def fast_path_missing(self, layer: int) -> str | None:
        """Why the fast path cannot run at `layer` for this scorer (no head trained for it), or None if it can."""
        if layer not in self._no_fast and not any(k[0] == layer for k in self._fast):  # read the head file once
            try:
                self._fast_path(layer)
            except (ValueError, FileNotFoundError) as e:
                self._no_fast[layer] = str(e)
        return self._no_fast.get(layer)

    def _fast_path(self, layer: int, fast: bool | str = True):
        from gistify.text.fast import FastPath

        dtype = torch.bfloat16 if fast == "bfloat16" else torch.float32
        if (layer, dtype) not in self._fast:
            self._fast[layer, dtype] = FastPath(self.model, layer, self.head, dtype)
        return self._fast[layer, dtype]

    def _window(self, x: torch.Tensor, layer: int, fast: bool | str) -> tuple[torch.Tensor, torch.Tensor]:
        """States (T, d) at `layer` of the ids x (1, T), and the self-information (T-1,) of tokens 1..T-1:
        from the full model, or from the fast path (its first `layer` layers and a surprisal head)."""
        if fast:
            return self._fast_path(layer, fast).window(x)
        out = self.model(input_ids=x, output_hidden_states=True)
        rows = torch.arange(x.shape[1] - 1)  # logits at position p predict token p+1
        return out.hidden_states[layer][0].float(), _surprisal(out.logits[0], rows, x[0, 1:])

    @torch.inference_mode()
    def stats(self, text: str, layer: int = 2, progress: bool = False, fast: bool | str = False) -> TokenStats:
        """Self-information and layer-`layer` hidden states of every token of `text` (cached per text).
        `fast`: the first `layer` layers only and a trained surprisal head (gistify.text.fast), in float32
        (True) or with the layers in bf16 ("bfloat16")."""
        self._check_layer(layer)
        key = (text, layer, fast)
        if key in self._cache:
            return self._cache[key]
        ids, starts = self.encode(text)
        n = len(ids)
        bos = self.tokenizer.bos_token_id
        self_info = np.zeros(n, dtype=np.float32)
        hidden = torch.zeros(n, self.model.config.hidden_size)
        windows = range(0, n, self.window)
        for s in track(windows, len(windows), "scoring", progress, unit="windows"):
            e = min(n, s + self.window)
            lead = ids[max(0, s - self.context) : s] if s else ([bos] if bos is not None else [])
            h, u = self._window(torch.tensor([lead + ids[s:e]]), layer, fast)
            k = len(lead)
            # window token j sits at position k + j; u[i] is the self-information of position i + 1.
            first = 0 if k else 1  # with no lead (no BOS), the very first token has no prediction
            self_info[s + first : e] = u[k + first - 1 :].numpy()
            if not k and n > 1:
                self_info[0] = float(self_info[1:e].mean())  # neutral: neither kept nor dropped for it
            hidden[s:e] = h[k:]
        result = TokenStats(starts=starts, self_info=self_info, hidden=hidden)
        self._cache.clear()  # keep one text: methods on the same text share one forward pass
        self._cache[key] = result
        return result

    @torch.inference_mode()
    def embed(self, text: str, layer: int = 2, fast: bool | str = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (m, d) at `layer` and self-information (m,) of a short text (a question), read on
        its own after BOS (truncated to one window)."""
        self._check_layer(layer)
        ids, _ = self.encode(text)
        ids = ids[: self.window]
        bos = self.tokenizer.bos_token_id
        lead = [bos] if bos is not None else []
        h, info = self._window(torch.tensor([lead + ids]), layer, fast)
        k = len(lead)
        u = torch.zeros(len(ids))
        u[1 - k :] = info  # token j sits at position k + j; info[i] is position i + 1's
        if not k and len(ids) > 1:
            u[0] = u[1:].mean()
        return h[k:], u


def _surprisal(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-log softmax(logits[rows])[targets], without materialising a second (len, vocab) tensor."""
    out = torch.empty(len(rows))
    for c in range(0, len(rows), 256):  # chunks bound the (chunk, vocab) temporaries
        picked = logits[rows[c : c + 256]].float()
        out[c : c + 256] = torch.logsumexp(picked, dim=-1) - picked.gather(1, targets[c : c + 256, None])[:, 0]
    return out
