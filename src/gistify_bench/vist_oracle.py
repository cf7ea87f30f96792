"""Can the LLM learn to read through vist's cross-attention at all? A probe with a perfect memory.

    python -m gistify_bench.vist_oracle [--steps 200] [--lr 1e-3] [--copy 1.0] [--threads N] [--out DIR]

vist's memory goes through a frozen OCR encoder and a resampler before the LLM reads it; when vist does not read
(README, "Results: vist"), the fault may be either side. This probe removes the vision side: the memory is the
LLM's own (frozen) input embeddings of the distant tokens, one memory token per text token, through a trainable
linear map to vist's memory width plus a learned position embedding (so it holds every token, in order: nothing is
compressed or misread). Only that map and the same cross-attention blocks vist trains (VistConfig's defaults:
every third layer, o_proj zero-initialised, the LLM frozen) learn, on vist_train's windows of the train articles
(`--copy 1.0`: all copy windows, whose proximal window repeats a passage of the distant part, so reading is all
there is to learn). Every `--eval-every` steps, and at the end, the per-token NLL of held-out copy windows (eval
articles) with each window's own memory and with another window's: reading shows as the first well below the
second (perfect reading of a repeated passage would take it far below 1 nat).

Results: DIR/oracle.json (the curve, the command); default DIR docs/results/vist.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from torch import nn

from gistify_bench.vist_train import Corpus, default_dir, eval_windows, windows_for
from gistify_bench.vist_train import parser as train_parser


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


def run(args, lm=None, tokenizer=None, corpus: dict | None = None) -> dict:
    from gistify.progress import progress_bar
    from gistify.vist.config import VistConfig
    from gistify.vist.model import VistModel

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    if lm is None:
        from gistify.models import load

        lm, tokenizer = load()
    if corpus is None:
        from gistify_bench.data import wikipedia

        corpus = {"train": wikipedia("train"), "eval": wikipedia("eval")}
    config = VistConfig(dim=args.dim, xattn_every=args.xattn_every)
    model = VistModel(lm.to(getattr(torch, args.llm_dtype)), tokenizer, config)
    oracle = OracleMemory(lm.get_input_embeddings(), model.xattn.memory_dim, 2 * args.distant_tokens)
    # the line features are never used here, only the windows' text: the records vist_train cached give the lines
    shape = train_parser().parse_args(
        ["--distant-tokens", str(args.distant_tokens), "--proximal-tokens", str(args.proximal_tokens)]
    )
    folder = Path(args.cache or default_dir()) / "features"
    train = Corpus(corpus["train"], model, model.encoder, folder, shape, "train")
    held = Corpus(corpus["eval"], model, model.encoder, folder, shape, "eval")
    rng = random.Random(f"oracle-{args.seed}")
    held_windows = [w.copied(rng) for w in eval_windows(held, args.eval_n, args.seed)]
    params = [*model.xattn.parameters(), *oracle.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr)
    warmup = max(1, args.steps // 20)

    held_batches = [held.batch(held_windows[i : i + 8]) for i in range(0, len(held_windows), 8)]  # made once

    @torch.no_grad()
    def evaluate(step: int) -> dict:
        """Per-token NLL of the held-out copy windows, own memory and another window's."""
        out = {"step": step}
        for key, shuffle in (("own", False), ("shuffled", True)):
            total, count = map(sum, zip(*(copy_nll(model, oracle, b, shuffle) for b in held_batches)))
            out[key] = round(float(total / count), 4)
        return out

    curve, t0 = [evaluate(0)], time.perf_counter()
    with progress_bar(args.steps, "oracle", enabled=args.progress) as advance:
        for step in range(args.steps):
            for group in opt.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / warmup)
            total, count = copy_nll(
                model, oracle, train.batch(windows_for(train, step, 0, args.batch, args.seed, args.copy))
            )
            loss = total / count
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            advance()
            if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
                curve.append(evaluate(step + 1) | {"train_loss": round(loss.item(), 4)})
                print(json.dumps(curve[-1]), flush=True)
    return {
        "command": "python -m gistify_bench.vist_oracle "
        + " ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)}"
            for k in ("steps", "lr", "batch", "copy", "dim", "xattn_every", "seed")
        ),
        "held_out_copy_windows": len(held_windows),
        "seconds": round(time.perf_counter() - t0),
        "curve": curve,
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.vist_oracle", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--steps", type=int, default=200)
    a("--lr", type=float, default=1e-3)
    a("--batch", type=int, default=8)
    a("--copy", type=float, default=1.0, help="share of copy windows in each batch")
    a("--dim", type=int, default=384, help="memory width (vist's resampler width)")
    a("--xattn-every", type=int, default=3, help="a cross-attention block every k decoder layers (vist's default)")
    a("--distant-tokens", type=int, default=512)
    a("--proximal-tokens", type=int, default=128)
    a("--llm-dtype", choices=["bfloat16", "float32"], default="bfloat16")
    a("--eval-n", type=int, default=32, help="held-out copy windows")
    a("--eval-every", type=int, default=25)
    a("--seed", type=int, default=0)
    a("--threads", type=int, default=0)
    a("--cache", help="a vist_train folder whose features/ hold the articles' line records (default its own)")
    a("--progress", action=argparse.BooleanOptionalAction, default=True)
    a("--out", default="docs/results/vist")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    result = run(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "oracle.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["curve"][-1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
