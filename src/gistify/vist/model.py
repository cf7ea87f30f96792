"""vist as one model: distant text -> line images -> frozen PP-OCRv6 -> Perceiver resampler -> the LLM reads the
tokens (cross-attention in some decoder layers, or a prefix); the proximal text goes to the LLM as text.
research/methods.md §3; the pieces are gistify.rendering, gistify.vist.{encoder,resampler,inject,pve}.

Images. The distant text is rendered with `Layout.line()` (one 48-px row per image, the encoder's own input
height, so it reads the pixels as drawn; 768 px = 96 encoder tokens, about 10 LLM tokens of prose per line), and
every `lines_per_image` consecutive lines are read by the resampler as one image of lines_per_image x 96 tokens,
like the paper's folded 224 x 224 image of 16 rows (§3.2): with 16 lines, one image holds about 150 LLM tokens
of prose, the paper's 146. The resampler gives `latents` tokens per image (the paper's 64) plus a CLS for PVE, so
the LLM reads about 150 / 64 = 2.3x fewer tokens than the text has, the paper's ratio. Greedy wrapping makes the
lines of a text that starts at a line start the same whether it is rendered alone or inside a longer text, so
features cached per article line (gistify_bench.vist_train) are exactly what inference computes.

Trained: the resampler, the cross-attention blocks (or the prefix projector) and PVE's visual head; frozen: the
encoder and the whole LLM. The token counts of the training corpus (for PVE's frequency masking) are saved with
the weights. Weights: `vist.safetensors` + `vist.json` (the card: configuration, how they were trained, what
they score held out) next to this file, written by `python -m gistify_bench.vist_train --ship`.

`compress(context, ...)` (also `gistify.compress(context, method="vist")`) splits a context into a distant part,
read through vist, and a proximal part kept as text; see its docstring for why the result is not a text.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gistify.method import check_choice
from gistify.rendering import Layout, render, row_spans
from gistify.result import Compressed
from gistify.vist.inject import OUT_INITS, CrossAttentionConfig, PrefixProjector, VistCrossAttention
from gistify.vist.resampler import PerceiverResampler, ResamplerConfig, flatten_images

WEIGHTS = Path(__file__).with_name("vist.safetensors")
INJECTS = ("xattn", "prefix")
TRAIN_COMMAND = "python -m gistify_bench.vist_train --ship"


class VistWeightsError(FileNotFoundError):
    """vist's trained weights are not where they were looked for; the message says how to make them."""


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


@dataclass(frozen=True)
class VistConfig:
    """Args:
    inject: how the LLM reads the tokens: "xattn" (cross-attention blocks, the paper's CEPE design) or "prefix".
    lines_per_image: encoder lines the resampler reads as one image (16: the paper's fold, ~150 LLM tokens).
    latents: tokens per image for the LLM (the paper's N = 64).
    dim: resampler width; None: the LLM's hidden size. Narrower is allowed: the cross-attention then copies the
        first `dim` input columns of the self-attention's k/v (TinyLlama's case in the paper).
    depth, heads, head_dim, ff_mult: the resampler's blocks (§3.8 for a 135M LLM: depth 2-3).
    xattn_every: a cross-attention block in every k-th decoder layer (layers k-1, 2k-1, ...); 1: every layer, the
        paper's placement (26M parameters on SmolLM2: too large to ship; 3 gives 10 blocks, 8M).
    out_init: the blocks' o_proj initialisation (gistify.vist.inject): "zero" starts as the plain LLM.
    features: the encoder features read ("neck" 120-d or "backbone" 384-d).
    local_latents: each latent reads only its own stretch of the image (ResamplerConfig.local; ours).
    font, font_size, width: the line layout (Layout.line()'s defaults).
    """

    inject: str = "xattn"
    lines_per_image: int = 16
    latents: int = 64
    dim: int | None = 384
    depth: int = 2
    heads: int = 8
    head_dim: int = 64
    ff_mult: int = 4
    xattn_every: int = 3
    out_init: str = "zero"
    features: str = "neck"
    local_latents: bool = False
    font: str = "DejaVuSans.ttf"
    font_size: int = 32
    width: int = 768

    def __post_init__(self):
        check_choice("VistConfig", "inject", self.inject, INJECTS)
        check_choice("VistConfig", "out_init", self.out_init, OUT_INITS)
        check_choice("VistConfig", "features", self.features, ("neck", "backbone"))
        for name in ("lines_per_image", "latents", "depth", "heads", "head_dim", "ff_mult", "xattn_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VistConfig.{name} must be a positive integer, got {value!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"VistConfig.dim must be a positive integer or None, got {self.dim!r}")

    def layout(self) -> Layout:
        return Layout.line(font=self.font, font_size=self.font_size, width=self.width)

    @property
    def tokens_per_line(self) -> int:
        return self.width // 8  # PP-OCRv6: one feature column per 8 px of a 48-px line

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VistConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Pages:
    """One text's encoder view, lines grouped into the resampler's images: features (P, lines_per_image x T, D)
    and mask (P, lines_per_image x T) bool, True where a token holds text."""

    features: torch.Tensor
    mask: torch.Tensor

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
    images (P_i per sample) for PVE."""

    tokens: torch.Tensor
    mask: torch.Tensor
    cls: torch.Tensor | None
    image_mask: torch.Tensor
    images: list[int]

    @property
    def visual_tokens(self) -> list[int]:
        """Per sample, the memory tokens the LLM reads (blank images excluded)."""
        return self.mask.sum(1).tolist()

    def roll(self, shift: int = 1) -> Memory:
        """Each sample gets another sample's memory (a control: does the model use the content?)."""
        return Memory(self.tokens.roll(shift, 0), self.mask.roll(shift, 0), None, self.image_mask, self.images)


class VistModel(nn.Module):
    """A frozen llama-family LLM reading distant text through vist.

    read(texts) -> [Pages]; memory([Pages]) -> Memory; logits / nll on token ids with a Memory; and for people:
    generate(distant_text, proximal_text), loss(distant_text, continuation), perplexity(...).
    """

    def __init__(self, lm: nn.Module, tokenizer: Any, config: VistConfig | None = None, encoder: Any = None):
        super().__init__()
        self.config = c = config or VistConfig()
        self.lm = lm.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.bos_token
        self._encoder = encoder
        hidden = lm.config.hidden_size
        dim = c.dim or hidden
        from gistify.vist.encoder import WIDTHS

        self.resampler = PerceiverResampler(
            ResamplerConfig(
                input_dim=WIDTHS[c.features],
                dim=dim,
                depth=c.depth,
                heads=c.heads,
                head_dim=c.head_dim,
                ff_mult=c.ff_mult,
                latents=c.latents,
                cls=True,
                max_tokens=c.lines_per_image * c.tokens_per_line,
                local=c.local_latents,
            )
        )
        layers = lm.config.num_hidden_layers
        if c.inject == "xattn":
            ids = tuple(range(c.xattn_every - 1, layers, c.xattn_every))
            self.xattn = VistCrossAttention(lm, CrossAttentionConfig(memory_dim=dim, out_init=c.out_init, layers=ids))
        else:
            self.prefix = PrefixProjector(dim, hidden)
        self.pve_head = nn.Linear(dim, hidden)  # §3.5: the CLS summary to the LLM's embedding width
        self.register_buffer("token_counts", torch.zeros(lm.config.vocab_size, dtype=torch.int64))
        self.register_buffer("samples", torch.zeros((), dtype=torch.int64))  # |S| of the corpus counted
        self.card: dict = {}  # how the loaded weights were trained (from_pretrained)
        self.trained_parts = ("resampler", "xattn" if c.inject == "xattn" else "prefix", "pve_head")

    # -- the encoder ------------------------------------------------------------------------------------------------

    @property
    def encoder(self):
        if self._encoder is None:
            from gistify.vist.encoder import EncoderConfig, TextImageEncoder

            self._encoder = TextImageEncoder(EncoderConfig(features=self.config.features))
        return self._encoder

    def read(self, texts: list[str], chunk_lines: int = 64) -> list[Pages]:
        """Render each text in lines, encode them (frozen; cached by content) and group them into images.

        A long text is rendered and encoded `chunk_lines` lines at a time, from row starts (the same rows as
        rendering it whole): its line images (~0.1 MB each) are never all held at once. Features are kept in
        float16 (46 kB a line in float32), as vist_train caches them."""
        from gistify.vist.encoder import WIDTHS

        c = self.config
        layout = c.layout()
        out = []
        for text in texts:
            spans = row_spans(text, layout)
            lines = max(1, len(spans))  # an empty text: one blank line
            # filled chunk by chunk: no copy of the whole text's features is ever made (float16, as training caches)
            t, d = c.tokens_per_line, WIDTHS[c.features]
            pages = blank_pages(lines, c.lines_per_image, t, d, torch.half)
            features, mask = pages.features.view(-1, t, d), pages.mask.view(-1, t)  # line by line
            for k in range(0, lines, chunk_lines):
                piece = spans[k : k + chunk_lines]
                r = render(text, layout, piece[0][0], piece[-1][1]) if piece else render(text, layout)
                if piece and [row.span for row in r.rows] != piece:
                    raise RuntimeError(f"rendering from a row start changed the rows at row {k}")  # a bug: say so
                e = self.encoder.encode(r)  # (lines, T, D)
                features[k : k + len(e.features)] = e.features
                mask[k : k + len(e.features)] = e.mask
            out.append(pages)
        return out

    # -- trainable parts --------------------------------------------------------------------------------------------

    def trained_state(self) -> dict[str, torch.Tensor]:
        state = {f"{p}.{k}": v for p in self.trained_parts for k, v in getattr(self, p).state_dict().items()}
        return state | {"token_counts": self.token_counts, "samples": self.samples}

    def load_trained(self, state: dict[str, torch.Tensor]) -> None:
        for part in self.trained_parts:
            prefix = part + "."
            sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            module = getattr(self, part)
            ref = module.state_dict()
            if sub.keys() != ref.keys():
                lost, extra = sorted(ref.keys() - sub.keys()), sorted(sub.keys() - ref.keys())
                raise ValueError(
                    f"vist weights do not fit this configuration ({part}: missing {lost[:3]}, unexpected {extra[:3]})"
                )
            module.load_state_dict({k: v.to(ref[k].dtype) for k, v in sub.items()})
        with torch.no_grad():
            self.token_counts.copy_(state["token_counts"].to(torch.int64))
            self.samples.copy_(state["samples"].to(torch.int64))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for part in self.trained_parts for p in getattr(self, part).parameters()]

    def set_token_counts(self, counts: torch.Tensor, samples: int) -> None:
        with torch.no_grad():
            self.token_counts.copy_(counts)
            self.samples.fill_(samples)

    def importance(self) -> torch.Tensor | None:
        """PVE's s_w per token, or None when no corpus was counted."""
        from gistify.vist.pve import importance

        return importance(self.token_counts, int(self.samples)) if int(self.samples) else None

    # -- forward ----------------------------------------------------------------------------------------------------

    def memory(self, pages: list[Pages], chunk_images: int = 4) -> Memory:
        """The resampled tokens of every sample's images. Images are resampled `chunk_images` at a time (each
        alone: the same result), so a long text's activations (~10 MB an image) are never all alive at once."""
        feats = pages[0].features if len(pages) == 1 else torch.cat([p.features for p in pages])
        mask = pages[0].mask if len(pages) == 1 else torch.cat([p.mask for p in pages])
        outs = [
            self.resampler(feats[i : i + chunk_images].float(), mask[i : i + chunk_images])
            for i in range(0, len(feats), chunk_images)
        ]
        cls = torch.cat([o.cls for o in outs]) if outs[0].cls is not None else None
        image_mask = torch.cat([o.image_mask for o in outs])
        images = [len(p) for p in pages]
        tokens, tmask = flatten_images(torch.cat([o.tokens for o in outs]), image_mask, images)
        return Memory(tokens, tmask, cls, image_mask, images)

    def reading(self, memory: Memory | None, rows: int | None = None):
        """A block within which the LLM reads `memory` through the cross-attention blocks (its one sample
        repeated to `rows` rows, for a batch that shares it); None: the plain LLM. Prefix mode has no such block:
        its tokens go into the input (PrefixProjector.inputs)."""
        if memory is None:
            return nullcontext()
        if self.config.inject != "xattn":
            raise ValueError("reading() needs inject='xattn'; with 'prefix' the memory is part of the input")
        tokens, mask = memory.tokens, memory.mask
        if rows is not None:
            tokens, mask = tokens.expand(rows, -1, -1), mask.expand(rows, -1)
        return self.xattn.attach(self.lm, tokens, mask)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory | None) -> torch.Tensor:
        """(B, T, V) next-token logits of the text `input_ids` reading `memory` (None: the plain LLM)."""
        if memory is None or self.config.inject == "xattn":
            with self.reading(memory):
                return self.lm(input_ids=input_ids, attention_mask=attention_mask).logits
        kw = self.prefix.inputs(self.lm, input_ids, memory.tokens, memory.mask, attention_mask)
        return self.lm(**kw).logits[:, -input_ids.shape[1] :]

    def nll(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        memory: Memory | None,
        scored: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per sample, the summed negative log-likelihood of the tokens `scored` (B, T) marks (default: every
        text token after the first) and how many there are: (B,), (B,)."""
        logits = self.logits(input_ids, attention_mask, memory)[:, :-1].float()
        targets = input_ids[:, 1:]
        use = attention_mask[:, 1:].bool() if scored is None else (scored[:, 1:] & attention_mask[:, 1:].bool())
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
        ce = ce.view(targets.shape) * use
        return ce.sum(1), use.sum(1)

    # -- saving and loading -----------------------------------------------------------------------------------------

    def save(self, path: str | Path, card: dict | None = None, dtype: torch.dtype = torch.bfloat16) -> Path:
        """Write the trained parts (floats as `dtype`) to `path` and the card (with the config) next to it."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # buffers (the resampler's feature statistics) stay float32: in bfloat16 a mean of 30 is off by 0.1
        buffers = {f"{p}.{k}" for p in self.trained_parts for k, _ in getattr(self, p).named_buffers()}
        state = {
            k: (v.float() if k in buffers else v.to(dtype))
            if v.is_floating_point()
            else (v.to(torch.int32) if k == "token_counts" else v)
            for k, v in self.trained_state().items()
        }
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
        full = {"config": self.config.to_dict(), "weights_dtype": str(dtype).removeprefix("torch."), **(card or {})}
        card_path(path).write_text(json.dumps(full, indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path | None = None,
        lm: nn.Module | None = None,
        tokenizer: Any = None,
        encoder: Any = None,
        dtype: torch.dtype = torch.float32,
    ) -> VistModel:
        """The shipped vist weights (or those vist_train wrote at `path`) on their LLM (default: the embedded
        SmolLM2, the one they were trained on). Raises VistWeightsError with the command that makes them."""
        from safetensors.torch import load_file

        path = Path(path) if path else WEIGHTS
        card = card_path(path)
        if not path.is_file() or not card.is_file():
            missing = path if not path.is_file() else card
            raise VistWeightsError(
                f"no vist weights at {missing}: train them with `{TRAIN_COMMAND}` (about 40 minutes on 2 CPU "
                "cores; it writes them next to gistify/vist/model.py), or pass the path of a vist.safetensors "
                "that vist_train wrote (with its vist.json beside it)"
            )
        info = json.loads(card.read_text())
        config = VistConfig.from_dict(info["config"])
        if lm is None:
            from gistify.models import load

            lm, tokenizer = load(info.get("llm"))
        model = cls(lm.to(dtype), tokenizer, config, encoder)
        model.load_trained(load_file(str(path)))
        model.card = info
        return model.eval()

    # -- for people -------------------------------------------------------------------------------------------------

    def _ids(self, texts: list[str], side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
        self.tokenizer.padding_side = side
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        return enc["input_ids"], enc["attention_mask"]

    @torch.no_grad()
    def generate(
        self,
        distant_text: str,
        proximal_text: str,
        max_new_tokens: int = 64,
        memory: Memory | None = None,
        chat: bool = False,
        **kwargs,
    ) -> str:
        """Continue `proximal_text` (read as text) with `distant_text` read through vist; greedy by default.

        chat: wrap the proximal text in the tokenizer's chat template as a user turn (an instruct LLM answering a
        question; vist itself was trained on plain continuation). memory: reuse a Memory (from `compress`).
        """
        if not proximal_text:
            raise ValueError("generate() needs a non-empty proximal_text (the prompt the LLM continues)")
        if chat:
            messages = [{"role": "user", "content": proximal_text}]
            proximal_text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        memory = memory if memory is not None else self.memory(self.read([distant_text]))
        ids, mask = self._ids([proximal_text], "left")
        kwargs = {"do_sample": False, "pad_token_id": self.tokenizer.pad_token_id, **kwargs}
        if self.config.inject == "xattn":
            with self.reading(memory):
                out = self.lm.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, **kwargs)
            new = out[0, ids.shape[1] :]
        else:
            kw = self.prefix.inputs(self.lm, ids, memory.tokens, memory.mask, mask)
            new = self.lm.generate(**kw, max_new_tokens=max_new_tokens, **kwargs)[0]
        return self.tokenizer.decode(new, skip_special_tokens=True)

    @torch.no_grad()
    def loss(self, distant_text: str | None, continuation: str, proximal_text: str = "") -> float:
        """Mean NLL (nats per token) of `continuation` after `proximal_text`, reading `distant_text` through vist
        (None: the plain LLM). With no proximal text, the first continuation token has nothing before it in the
        text and is not scored."""
        n_prox = len(self._ids([proximal_text])[0][0]) if proximal_text else 0
        ids, mask = self._ids([proximal_text + continuation])
        scored = torch.zeros_like(ids, dtype=torch.bool)
        scored[:, n_prox:] = True
        if ids.shape[1] - max(n_prox, 1) < 1:
            raise ValueError("loss() needs a continuation with a token to score")
        memory = None if distant_text is None else self.memory(self.read([distant_text]))
        total, count = self.nll(ids, mask, memory, scored)
        return float(total.sum() / count.sum())

    def perplexity(self, distant_text: str | None, continuation: str, proximal_text: str = "") -> float:
        return math.exp(self.loss(distant_text, continuation, proximal_text))


# -- gistify.compress(method="vist") -----------------------------------------------------------------------------


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
    **unsupported: Any,
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
    from gistify.budget import Budget
    from gistify.compression import check_text

    text = check_text(text)
    if model is not None and not isinstance(model, VistModel):
        raise ValueError(
            f"method 'vist' takes model=a VistModel (or weights=a vist.safetensors path), not {type(model).__name__}"
        )
    bad = {k: v for k, v in unsupported.items() if v not in (None, False, (), [])}
    if bad:
        raise ValueError(
            f"method 'vist' does not take {', '.join(sorted(bad))}: it drops nothing (the distant part is read as "
            "images), so protection and scorers do not apply; its parameters: proximal_tokens, model, weights"
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
