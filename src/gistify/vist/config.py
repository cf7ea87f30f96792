"""vist's configuration, the files its weights live in, and the error raised when they are missing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from gistify.method import check_choice
from gistify.rendering import Layout
from gistify.vist.inject import OUT_INITS

WEIGHTS = Path(__file__).with_name("vist.safetensors")
INJECTS = ("xattn", "prefix")
TRAIN_COMMAND = "python -m gistify_bench.train.vist --ship"


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
    xattn_layers: the decoder layers that get a block, named (overrides xattn_every): the teacher's 18-23, where
        SmolLM2 reads earlier context (docs/methods.md §3.10).
    slots_per_line: None: the paper's memory (`latents` tokens per image, each reading the whole image, at
        positions right before the text). k: one memory token per k-th of a line (the resampler's `local`
        latents, lines_per_image x k per image; `latents` is ignored), at the mean text position of the tokens
        drawn there, and none where no token is (gistify.vist.slots; docs/methods.md §3.11).
    out_init: the blocks' o_proj initialisation (gistify.vist.inject).
    memory_norm, gate, rope: the reader's memory normalisation, tanh gate and rotary positions
        (gistify.vist.inject.CrossAttentionConfig; a card written before they existed loads without them).
    features: the encoder features read ("neck" 120-d or "backbone" 384-d).
    local_latents: each latent reads only its own stretch of the image (ResamplerConfig.local; ours).
    context_layers: blocks of a small causal transformer over a text's memory tokens after the resampler
        (gistify.vist.context; ours): each token reads the tokens before it across lines and images, as the
        teacher's states do; 0: none (the resampler's output is the memory).
    context_window: the most earlier memory tokens each one reads there.
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
    xattn_layers: tuple[int, ...] | None = None
    slots_per_line: int | None = None
    out_init: str = "copy"
    memory_norm: bool = True
    gate: float | None = 0.0
    rope: bool = True
    features: str = "neck"
    local_latents: bool = False
    context_layers: int = 0
    context_window: int = 256
    font: str = "DejaVuSans.ttf"
    font_size: int = 32
    width: int = 768

    def __post_init__(self):
        check_choice("VistConfig", "inject", self.inject, INJECTS)
        check_choice("VistConfig", "out_init", self.out_init, OUT_INITS)
        check_choice("VistConfig", "features", self.features, ("neck", "backbone"))
        counts = (
            "lines_per_image",
            "latents",
            "depth",
            "heads",
            "head_dim",
            "ff_mult",
            "xattn_every",
            "context_window",
        )
        for name in (*counts, "context_layers"):
            value, least = getattr(self, name), 0 if name == "context_layers" else 1
            if not isinstance(value, int) or value < least:
                raise ValueError(f"VistConfig.{name} must be an integer >= {least}, got {value!r}")
        if self.dim is not None and (not isinstance(self.dim, int) or self.dim < 1):
            raise ValueError(f"VistConfig.dim must be a positive integer or None, got {self.dim!r}")
        if self.xattn_layers is not None:
            if not self.xattn_layers or not all(isinstance(x, int) and x >= 0 for x in self.xattn_layers):
                raise ValueError(f"VistConfig.xattn_layers must be layer indices, got {self.xattn_layers!r}")
            object.__setattr__(self, "xattn_layers", tuple(self.xattn_layers))  # a card's list
        k = self.slots_per_line
        if k is not None and (not isinstance(k, int) or k < 1 or self.tokens_per_line % k):
            raise ValueError(
                f"VistConfig.slots_per_line must divide the line's {self.tokens_per_line} encoder tokens, got {k!r}"
            )

    @property
    def memory_tokens_per_image(self) -> int:
        """The resampler's latents per image (the CLS aside)."""
        return self.latents if self.slots_per_line is None else self.lines_per_image * self.slots_per_line

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
        legacy = {} if "gate" in d else {"memory_norm": False, "gate": None, "rope": False}  # cards before issue 13
        return cls(**(legacy | {k: v for k, v in d.items() if k in names}))
