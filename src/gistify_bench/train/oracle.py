"""Can the LLM learn to read through vist's cross-attention at all? A probe with a perfect memory.

    python -m gistify_bench.train.oracle [--steps 200] [--lr 1e-3] [--copy 1.0] [--threads N] [--out DIR]

vist's memory goes through a frozen OCR encoder and a resampler before the LLM reads it; when vist does not read
(README, "Results: vist"), the fault may be either side. This probe removes the vision side: the memory is the
LLM's own (frozen) input embeddings of the distant tokens, one memory token per text token, through a trainable
linear map to vist's memory width plus a learned position embedding (so it holds every token, in order: nothing is
compressed or misread). Only that map and the same cross-attention blocks vist trains (VistConfig's defaults:
every third layer, o_proj zero-initialised, the LLM frozen) learn, on vist's training windows of the train
articles (gistify_bench.vist.corpus; `--copy 1.0`: all copy windows, whose proximal window repeats a passage of
the distant part, so reading is all there is to learn). Every `--eval-every` steps, and at the end, the per-token
NLL of held-out copy windows (eval articles) with each window's own memory and with another window's: reading
shows as the first well below the second (perfect reading of a repeated passage would take it far below 1 nat).

Settings: OracleConfig. Results: DIR/oracle.json (the curve, the command); DIR (--out) defaults to ./results/vist,
the vist benchmarks' folder, whose report shows it.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass

import torch
from torch import nn

from gistify_bench.device import check_device, to_device, use_device
from gistify_bench.options import check, option
from gistify_bench.vist.corpus import Windowing, eval_windows, text_corpora, windows_for

PROG = "gistify_bench.train.oracle"


@dataclass
class OracleConfig:
    """The probe's settings and where its result goes."""

    steps: int = option(200, "optimizer steps")
    lr: float = option(1e-3, "peak learning rate (linear warm-up over the first 5% of the steps)")
    batch: int = option(8, "windows per batch")
    copy: float = option(1.0, "share of copy windows in each batch")
    dim: int = option(384, "memory width (vist's resampler width)")
    xattn_every: int = option(3, "a cross-attention block every k decoder layers (vist's default)")
    distant_tokens: int = option(512, "most LLM tokens of the distant part")
    proximal_tokens: int = option(128, "the proximal window")
    llm_dtype: str = option("bfloat16", "the frozen LLM's dtype", ("bfloat16", "float32"))
    eval_n: int = option(32, "held-out copy windows")
    eval_every: int = option(25, "steps between held-out evaluations")
    seed: int = option(0, "batches are a function of (seed, step)")
    threads: int = option(0, "torch threads (0: leave as is)")
    device: str = option("cpu", "where steps and evaluations run: cpu, cuda or cuda:N (gistify_bench.device)")
    cache: str | None = option(
        None,
        "a vist trainer's --out folder whose features/ hold the articles' line records (default ./results/train/vist)",
    )
    progress: bool = option(True, "show a progress bar")
    out: str | None = option(None, "where oracle.json goes (default ./results/vist)")

    def __post_init__(self):
        check(self)
        check_device(self.device)
        for name in ("steps", "batch", "dim", "xattn_every", "distant_tokens", "proximal_tokens", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.copy <= 1 or self.lr <= 0:
            raise ValueError("copy must be in [0, 1] and lr positive")


class OracleMemory(nn.Module):
    """Token ids (B, T) -> memory (B, T, D): the frozen LLM input embeddings through a trainable linear map, plus a
    learned embedding of each token's position in the distant part."""

    def __init__(self, embedding: nn.Embedding, memory_dim: int, max_tokens: int):
        super().__init__()
        self.embedding = embedding
        self.proj = nn.Linear(embedding.embedding_dim, memory_dim)
        self.position = nn.Parameter(torch.randn(max_tokens, memory_dim) * 0.02)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            e = self.embedding(ids).float()
        return self.proj(e) + self.position[: ids.shape[1]]


def copy_nll(model, oracle: OracleMemory, batch: dict, shuffle: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed NLL and token count (VistModel.nll's: every proximal token after the first) of a Corpus batch,
    each window reading its own oracle memory (with `shuffle`, the next window's)."""
    dids, dmask = batch["distant"]
    memory, mask = oracle(dids), dmask.bool()
    if shuffle:
        memory, mask = memory.roll(1, 0), mask.roll(1, 0)
    ids, attention = batch["ids"]
    with model.xattn.attach(model.lm, memory, mask):  # raw tensors: this memory is not a resampled Memory
        total, count = model.nll(ids, attention, None)
    return total.sum(), count.sum()


def run(config: OracleConfig, lm=None, tokenizer=None, corpus: dict | None = None) -> dict:
    from gistify.progress import progress_bar
    from gistify.vist.config import VistConfig
    from gistify.vist.model import VistModel

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = use_device(config.device)
    if lm is None:
        from gistify.models import load

        lm, tokenizer = load()
    lm = lm.to(device)
    vist_config = VistConfig(dim=config.dim, xattn_every=config.xattn_every)
    model = VistModel(lm.to(getattr(torch, config.llm_dtype)), tokenizer, vist_config)
    oracle = OracleMemory(lm.get_input_embeddings(), model.xattn.memory_dim, 2 * config.distant_tokens)
    train, held = text_corpora(corpus, model, Windowing(config.distant_tokens, config.proximal_tokens), config.cache)
    rng = random.Random(f"oracle-{config.seed}")
    held_windows = [w.copied(rng) for w in eval_windows(held, config.eval_n, config.seed)]
    params = [*model.xattn.parameters(), *oracle.parameters()]
    opt = torch.optim.AdamW(params, lr=config.lr)
    warmup = max(1, config.steps // 20)

    held_batches = [to_device(held.batch(held_windows[i : i + 8]), device) for i in range(0, len(held_windows), 8)]

    @torch.no_grad()
    def evaluate(step: int) -> dict:
        """Per-token NLL of the held-out copy windows, own memory and another window's."""
        out = {"step": step}
        for key, shuffle in (("own", False), ("shuffled", True)):
            total, count = map(sum, zip(*(copy_nll(model, oracle, b, shuffle) for b in held_batches)))
            out[key] = round(float(total / count), 4)
        return out

    curve, t0 = [evaluate(0)], time.perf_counter()
    with progress_bar(config.steps, "oracle", enabled=config.progress) as advance:
        for step in range(config.steps):
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / warmup)
            total, count = copy_nll(
                model,
                oracle,
                to_device(train.batch(windows_for(train, step, 0, config.batch, config.seed, config.copy)), device),
            )
            loss = total / count
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            advance()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                curve.append(evaluate(step + 1) | {"train_loss": round(loss.item(), 4)})
                print(json.dumps(curve[-1]), flush=True)
    return {
        "command": f"python -m {PROG} "
        + " ".join(
            f"--{k.replace('_', '-')} {getattr(config, k)}"
            for k in ("steps", "lr", "batch", "copy", "dim", "xattn_every", "seed")
        ),
        "held_out_copy_windows": len(held_windows),
        "seconds": round(time.perf_counter() - t0),
        "curve": curve,
    }


def parse(argv: list[str] | None = None) -> OracleConfig:
    from gistify_bench.options import from_args, parser_for

    p = parser_for(OracleConfig, f"python -m {PROG}", __doc__.split("\n")[0])
    return from_args(OracleConfig, p.parse_args(argv), p)


def main(argv=None) -> int:
    from gistify_bench.options import resolve_out

    config = parse(argv)
    result = run(config)
    out = resolve_out(config.out, "vist")
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["curve"][-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
