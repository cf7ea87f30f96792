"""Train the surprisal head of the scorer's fast path (docs/methods.md §1.2.2, gistify.text.fast).

    python -m gistify_bench.train.surprisal [--out DIR] [--ship]
    python -m gistify_bench.train.surprisal --max-tokens 4000 --epochs 2 --out /tmp/sh   # a smoke run

Inputs: the "train" articles of gistify_bench.data (no evaluation task reads them), read in the scorer's own
windows (1024 tokens after 128 of context). Per token t: the trunk's states h_{t-1}, h_t (the scorer's first
`layer` layers, exactly as the fast path runs them) and the target u_t = -log p(x_t | x_<t) of the full
float32 scorer. The head (gistify.text.fast.SurprisalHead) is fitted by mean squared error with Adam, keeping
the epoch with the lowest mean squared error on the "dev" articles (early stopping: it overfits the train
tokens within a few epochs), and scored on them: Pearson and Spearman correlation with the full model's u,
its mean absolute error, and, as the control, the same scores of the best constant and of unigram statistics
(u from token frequencies on the train articles). The targets are cached in DIR (default
./results/train/surprisal); DIR/surprisal_head.safetensors carries the scores in its metadata; --ship copies
it into the package.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gistify_bench.options import check, option

PROG = "gistify_bench.train.surprisal"


@dataclass
class SurprisalConfig:
    """The head's training settings (recorded in its metadata) and where the result goes."""

    layer: int = option(4, "the trunk's depth: reinforce's feature layer")
    width: int = option(64, "hidden width of the head's MLP (64 and 128 reached one dev error; 256 overfit sooner)")
    epochs: int = option(5, "most passes over the training tokens (the best on dev is kept)")
    batch: int = option(512, "tokens per step")
    lr: float = option(1e-3, "Adam's learning rate")
    max_tokens: int = option(0, "cap on training tokens (0: every train article)")
    seed: int = option(0, "initialisation and order")
    out: str | None = option(None, "folder of the head and the cached features (default ./results/train/surprisal)")
    ship: bool = option(False, "copy the head into the package (gistify.text.fast.head_file(layer))")

    def __post_init__(self):
        check(self)
        for name in ("layer", "width", "epochs", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.max_tokens < 0:
            raise ValueError("lr must be positive and max_tokens at least 0")


@torch.inference_mode()
def targets(scorer, texts: list[str], max_tokens: int = 0, progress: bool = False) -> list[torch.Tensor]:
    """The full float32 scorer's u_t of every token of each text read (up to `max_tokens` in all): the expensive
    part (30 layers and the LM head), cached apart from the trunk's states so that heads for other depths reuse it."""
    from gistify.progress import track

    out, total = [], 0
    for text in track(texts, len(texts), "targets", progress):
        out.append(
            torch.from_numpy(scorer.stats(text, layer=0).self_info)
        )  # layer 0: no states kept beyond the embeddings
        total += len(out[-1])
        if max_tokens and total >= max_tokens:
            break
    return out


@torch.inference_mode()
def features(scorer, trunk, texts: list[str], u_texts: list[torch.Tensor]) -> dict:
    """{"prev", "cur": (N, d) trunk states at t-1 and t, "target": (N,) full-model u_t, "ids": (N,) x_t} for the
    texts that `u_texts` (from `targets`) covers."""
    prev, cur, target, token_ids = [], [], [], []
    for text, u in zip(texts, u_texts):
        ids, _ = scorer.encode(text)
        bos = scorer.tokenizer.bos_token_id
        for s in range(0, len(ids), scorer.window):
            e = min(len(ids), s + scorer.window)
            lead = ids[max(0, s - scorer.context) : s] if s else [bos]
            h = trunk(input_ids=torch.tensor([lead + ids[s:e]])).last_hidden_state[0].float()  # (T, d)
            k = len(lead)
            prev.append(h[k - 1 : -1])
            cur.append(h[k:])
            target.append(u[s:e])
            token_ids.append(torch.tensor(ids[s:e]))
    return {"prev": torch.cat(prev), "cur": torch.cat(cur), "target": torch.cat(target), "ids": torch.cat(token_ids)}


def scores(pred: torch.Tensor, target: torch.Tensor) -> dict:
    """Pearson and Spearman correlation and mean absolute error of a prediction of u."""
    from scipy.stats import pearsonr, spearmanr

    p, t = pred.double().numpy(), target.double().numpy()
    return {
        "pearson": round(float(pearsonr(p, t)[0]), 4) if p.std() > 0 else 0.0,
        "spearman": round(float(spearmanr(p, t)[0]), 4) if p.std() > 0 else 0.0,
        "mae": round(float(np.abs(p - t).mean()), 4),
    }


def unigram(train_ids: torch.Tensor, vocab: int) -> torch.Tensor:
    """(vocab,) -log p(token) from add-one-smoothed counts: the control that needs no model at all."""
    counts = torch.bincount(train_ids, minlength=vocab).double() + 1
    return -(counts / counts.sum()).log().float()


def train(config: SurprisalConfig, folder: Path, show_progress: bool = False) -> tuple[object, dict]:
    from gistify.text.fast import SurprisalHead, build_trunk, fingerprint, native_bf16
    from gistify.text.pipeline import shared_scorer
    from gistify_bench.data import wikipedia

    torch.manual_seed(config.seed)
    scorer = shared_scorer(None)
    # the trunk as the fast path will run it on this machine (bf16 where the CPU has it)
    dtype = torch.bfloat16 if config.layer and native_bf16() else torch.float32
    trunk = build_trunk(scorer.model, config.layer, dtype)
    data = {}
    for split in ("train", "dev"):
        texts = list(wikipedia(split).values())
        cap = config.max_tokens if split == "train" else 0
        cache = folder / f"targets-{split}-{cap}.pt"
        if cache.is_file():
            u = torch.load(cache)
        else:
            u = targets(scorer, texts, cap, show_progress)
            torch.save(u, cache)
        data[split] = features(scorer, trunk, texts, u)
    tr, dev = data["train"], data["dev"]
    head = SurprisalHead(tr["cur"].shape[1], config.width)
    opt = torch.optim.Adam(head.parameters(), lr=config.lr)
    n = len(tr["target"])
    order = list(range(n))
    rng = random.Random(config.seed)
    curve, best = [], (float("inf"), None, 0)
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        rng.shuffle(order)
        idx = torch.tensor(order)
        total = 0.0
        for b in range(0, n, config.batch):
            i = idx[b : b + config.batch]
            loss = torch.nn.functional.mse_loss(head(tr["prev"][i], tr["cur"][i]), tr["target"][i])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(i)
        with torch.no_grad():
            dev_mse = float(torch.nn.functional.mse_loss(head(dev["prev"], dev["cur"]), dev["target"]))
        curve.append({"epoch": epoch + 1, "train_mse": round(total / n, 4), "dev_mse": round(dev_mse, 4)})
        print(json.dumps(curve[-1]), file=sys.stderr)
        if dev_mse < best[0]:
            best = (dev_mse, {k: v.clone() for k, v in head.state_dict().items()}, epoch + 1)
    head.load_state_dict(best[1])
    with torch.no_grad():
        pred = head(dev["prev"], dev["cur"])
    table = unigram(tr["ids"], scorer.model.config.vocab_size)
    meta = {
        "model": scorer.name,
        "fingerprint": fingerprint(scorer.model),
        "layer": config.layer,
        "hidden": int(tr["cur"].shape[1]),
        "trunk_dtype": str(dtype).removeprefix("torch."),
        "width": config.width,
        "settings": asdict(config) | {"out": None, "ship": None},
        "train_tokens": n,
        "dev_tokens": len(dev["target"]),
        "dev": {
            "head": scores(pred, dev["target"]),
            "unigram": scores(table[dev["ids"]], dev["target"]),
            "constant": scores(torch.full_like(dev["target"], float(tr["target"].median())), dev["target"]),
        },
        "curve": curve,
        "kept_epoch": best[2],
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return head, meta


def main(argv: list[str] | None = None) -> int:
    from gistify.text.fast import HEAD, head_file, save_head
    from gistify_bench.options import from_args, parser_for, resolve_out

    p = parser_for(SurprisalConfig, f"python -m {PROG}", __doc__.split("\n\n")[0])
    config = from_args(SurprisalConfig, p.parse_args(argv), p)
    folder = resolve_out(config.out, "train", "surprisal")
    folder.mkdir(parents=True, exist_ok=True)
    head, meta = train(config, folder, show_progress=sys.stderr.isatty())
    out = folder / HEAD.name
    save_head(head, out, meta)
    print(json.dumps({k: meta[k] for k in ("train_tokens", "dev_tokens", "dev")}, indent=2))
    print(f"written: {out}")
    if config.ship:
        shutil.copy(out, head_file(config.layer))
        print(f"shipped: {head_file(config.layer)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
