"""vist's training settings: one dataclass, validated; the command line maps its flags onto it."""

from __future__ import annotations

from dataclasses import dataclass

from gistify.vist.config import VistConfig
from gistify.vist.pve import PVEConfig
from gistify_bench.device import check_device
from gistify_bench.options import check, option
from gistify_bench.vist.corpus import Windowing

PROG = "gistify_bench.train.vist"


@dataclass
class VistTrainConfig:
    """Everything a run depends on. Defaults are the paper's where it states them, else ours (docs/methods.md §3.6,
    §3.9)."""

    steps: int = option(150, "optimizer steps")
    batch: int = option(8, "windows per micro-batch (PVE's in-batch negatives)")
    accum: int = option(1, "micro-batches per step (the queue carries negatives across them)")
    lr: float = option(3e-4, "peak learning rate (the paper's)")
    warmup: float = option(0.04, "warm-up, as a fraction of the steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    clip: float = option(1.0, "gradient norm clip")
    distant_tokens: int = option(512, "most LLM tokens of the distant part (T_e)")
    proximal_tokens: int = option(128, "the proximal window, read as text (T_d)")
    inject: str = option("xattn", "how the LLM reads the memory", ("xattn", "prefix"))
    latents: int = option(64, "tokens per image for the LLM")
    lines_per_image: int = option(16, "rendered lines per image")
    dim: int = option(384, "resampler width (0: the LLM's)")
    depth: int = option(2, "resampler blocks")
    heads: int = option(8, "resampler attention heads")
    head_dim: int = option(64, "resampler attention head width")
    xattn_every: int = option(3, "a cross-attention block every k decoder layers (1: all)")
    out_init: str = option("copy", "cross-attention o_proj init", ("copy", "normal", "zero"))
    features: str = option("neck", "which encoder features", ("neck", "backbone"))
    local: bool = option(False, "each latent reads only its own stretch of the image (ours)")
    pve: bool = option(True, "the PVE loss (--no-pve: LM loss only)")
    pve_weight: float = option(1.0, "w of L_PVE")
    mask: str = option("frequency", "which distant tokens PVE masks", ("frequency", "random", "lowest", "none"))
    mask_ratio: float = option(0.5, "share of the distant tokens PVE masks")
    temperature: float = option(0.07, "PVE's InfoNCE temperature")
    queue: int = option(256, "queued text features (extra PVE negatives)")
    copy: float = option(
        0.0,
        "share of copy windows per batch (the proximal window is a passage of the distant part: a reading "
        "curriculum; held-out numbers are on real continuations)",
    )
    llm_dtype: str = option("bfloat16", "the frozen LLM's dtype", ("bfloat16", "float32"))
    export_dtype: str = option("bfloat16", "dtype of the saved weights", ("bfloat16", "float32"))
    articles: int = option(0, "use only the first N train articles (0: all)")
    eval_n: int = option(48, "held-out windows")
    save_every: int = option(10, "steps between checkpoints")
    log_every: int = option(5, "steps between log lines")
    stop_after: float = option(0.0, "save a checkpoint and stop after this many minutes (0: run to the end)")
    stop_at_step: int = option(0, "save a checkpoint and stop after this step (0: run to the end)")
    threads: int = option(0, "torch threads (0: leave as is)")
    device: str = option("cpu", "where steps and evaluations run: cpu, cuda or cuda:N (gistify_bench.device)")
    seed: int = option(0, "batches and masks are a function of (seed, step)")
    progress: bool = option(True, "show a progress bar")
    out: str | None = option(
        None, "features, checkpoints, log, weights and card (default ./results/train/vist)", type=str
    )
    ship: bool = option(False, "copy the weights and card into the package (gistify.vist.config.WEIGHTS)")

    def __post_init__(self):
        check(self)
        positive = ("steps", "batch", "accum", "distant_tokens", "proximal_tokens", "latents", "lines_per_image")
        for name in positive + ("depth", "heads", "head_dim", "xattn_every", "save_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup", "copy", "mask_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        check_device(self.device)
        for name in ("dim", "articles", "eval_n", "stop_after", "stop_at_step", "threads", "queue"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0 or self.temperature <= 0:
            raise ValueError("lr and temperature must be positive")

    @property
    def windowing(self) -> Windowing:
        return Windowing(self.distant_tokens, self.proximal_tokens)

    def model_config(self) -> VistConfig:
        return VistConfig(
            inject=self.inject,
            lines_per_image=self.lines_per_image,
            latents=self.latents,
            dim=self.dim or None,
            depth=self.depth,
            heads=self.heads,
            head_dim=self.head_dim,
            xattn_every=self.xattn_every,
            out_init=self.out_init,
            features=self.features,
            local_latents=self.local,
        )

    def pve_config(self) -> PVEConfig:
        return PVEConfig(
            weight=self.pve_weight if self.pve else 0.0,
            temperature=self.temperature,
            mask=self.mask,
            ratio=self.mask_ratio,
            queue=self.queue,
        )

    def command(self) -> str:
        """The command that reproduces the run (its card records it)."""
        flags = [f"--steps {self.steps}", f"--batch {self.batch}", f"--accum {self.accum}", f"--lr {self.lr}"]
        flags += [f"--distant-tokens {self.distant_tokens}", f"--proximal-tokens {self.proximal_tokens}"]
        flags += [f"--inject {self.inject}", f"--latents {self.latents}", f"--lines-per-image {self.lines_per_image}"]
        flags += [f"--xattn-every {self.xattn_every}", f"--out-init {self.out_init}", f"--dim {self.dim}"]
        flags += ["--pve" if self.pve else "--no-pve", f"--mask {self.mask}", f"--mask-ratio {self.mask_ratio}"]
        flags += [f"--queue {self.queue}", f"--copy {self.copy}", f"--llm-dtype {self.llm_dtype}"]
        flags += [f"--seed {self.seed}"]
        flags += [f"--articles {self.articles}"] if self.articles else []
        flags += ["--local"] if self.local else []
        return f"python -m {PROG} " + " ".join(flags)
