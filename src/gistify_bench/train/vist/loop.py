"""Train vist (gistify.vist.model): the training loop, with progress, checkpoints and resumption.

    python -m gistify_bench.train.vist [--steps 150] [--batch 8] [--inject xattn|prefix] [--no-pve]
                                       [--mask frequency|random|lowest|none] [--out DIR] [--ship]

Settings: gistify_bench.train.vist.config.VistTrainConfig. Data: the Wikipedia "train" articles (gistify_bench.data);
the held-out numbers come from "eval" articles, never trained on. Articles, their cached line features (in
DIR/features) and the windows a sample can be are gistify_bench.vist.corpus's. The resampler standardises the
features with their per-channel mean and standard deviation over the train articles' text tokens (saved with
the weights; gistify.vist.resampler says why: without it every run collapsed to one memory).

Loss (docs/methods.md §3.5-3.6): L = L_LM + w * L_PVE. L_LM is the next-token cross-entropy of the proximal window
with the distant part as memory. L_PVE is InfoNCE between the mean CLS output of a sample's images (through a linear
head) and the mean frozen LLM input embedding of its distant tokens, half of them masked, frequent tokens first
(token counts over the train articles with the LLM's tokenizer, saved with the weights); negatives are the
batch's and a queue of earlier batches' (--queue), overlapping windows excluded. The LLM and the encoder are
frozen; the resampler, the cross-attention blocks (or the prefix projector) and PVE's head train. AdamW
(0.9, 0.999, 1e-8), warm-up 4% then cosine, as the paper. --copy P (ours, not the paper's) makes a share P of
each batch copy windows: the proximal window is a passage of the distant part itself, which the LLM can predict
only by reading the memory (a reading curriculum, like ICAE's autoencoding); their loss is logged apart ("copy")
and the held-out numbers are on real continuations (plus copy windows of the eval articles, "copy_*").

Checkpoints go to DIR every --save-every steps (trained parts, optimizer, queue, history); rerunning the same
command resumes from the last one, and batches and masks depend only on (seed, step), so a resumed run is the run
it continues. At the end, held-out per-token NLL on --eval-n windows of eval articles, four ways: the LLM on the
proximal window alone (no distant context), with vist's memory, with another window's memory (a control: a gain
that survives shuffling is style, not content), and with the distant text itself in the window (the ceiling).
Weights (bfloat16, < 30 MB) and a card json go to DIR (--out, default ./results/train/vist); only --ship copies
them into the package (gistify.vist.config.WEIGHTS: src/gistify/vist/vist.{safetensors,json}).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch

from gistify.progress import track
from gistify.vist.config import WEIGHTS, card_path
from gistify.vist.model import VistModel
from gistify.vist.pve import FeatureQueue, PVEConfig, mask_positions, pve_loss, text_features, token_counts
from gistify_bench.device import on_cpu, to_device, use_device
from gistify_bench.options import default_out
from gistify_bench.train.vist.config import VistTrainConfig
from gistify_bench.vist.corpus import Corpus, eval_windows, windows_for
from gistify_bench.vist.heldout import evaluate


def _mean(history: list[dict]) -> dict:
    """The mean of each loss over `history` (keys every entry has)."""
    keys = [k for k in history[0] if all(k in h for h in history)] if history else []
    return {k: round(sum(h[k] for h in history) / len(history), 4) for k in keys}


# -- one step -------------------------------------------------------------------------------------------------------


def step_loss(model: VistModel, batch: dict, pve: PVEConfig, queue: FeatureQueue | None, generator, scores,
              base: bool = False):  # fmt: skip
    """L_LM (+ w L_PVE) of one batch: (loss, {"lm": ..., "pve": ..., "pve_acc": ...}); with `base`, also the
    plain LLM's loss on the same windows ("base": what vist must beat)."""
    memory = model.memory(batch["pages"])
    ids, mask = batch["ids"]
    total, count = model.nll(ids, mask, memory)
    lm = total.sum() / count.sum()
    copy = batch["copy"]
    info = {"lm": (total[~copy].sum() / count[~copy].sum()).item()} if (~copy).any() else {}
    if copy.any():  # logged apart: on copy windows the loss falls only if the memory is read
        info["copy"] = (total[copy].sum() / count[copy].sum()).item()
    if base:
        with torch.no_grad():
            b_total, _ = model.nll(ids, mask, None)
        real = ~copy if (~copy).any() else copy
        info["base"] = (b_total[real].sum() / count[real].sum()).item()
    loss = lm
    if pve.weight > 0:
        from gistify.vist.pve import visual_summary

        dids, dmask = batch["distant"]
        valid = dmask.bool()
        masked = mask_positions(dids, valid, scores, pve, generator)
        text = text_features(model.lm.get_input_embeddings().weight, dids, valid & ~masked)
        visual = model.pve_head(visual_summary(memory.cls, memory.image_mask, memory.images))
        lp = pve_loss(visual, text, pve.temperature, batch["keys"], queue)
        with torch.no_grad():
            sims = torch.nn.functional.normalize(visual.float(), dim=-1) @ torch.nn.functional.normalize(text, dim=-1).T
            info["pve_acc"] = (sims.argmax(1) == torch.arange(len(sims))).float().mean().item()
        info["pve"] = lp.item()
        loss = lm + pve.weight * lp
        if queue is not None:
            queue.push(text, batch["keys"])
    return loss, info


# -- the command ----------------------------------------------------------------------------------------------------


def schedule(step: int, steps: int, warmup: float) -> float:
    """The learning-rate factor at `step`: linear warm-up over `warmup` of the steps (at least 10 steps, at most
    half of them: Adam's first steps move every weight by about lr at once), then cosine to 0."""
    w = min(max(10, round(warmup * steps)), max(1, steps // 2))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


def train(config: VistTrainConfig, lm=None, tokenizer=None, encoder=None, corpus: dict | None = None) -> dict:
    """Run (or resume) the training `config` describes; returns the card. lm / tokenizer default to the embedded
    SmolLM2, encoder to PP-OCRv6, corpus ({"train": {title: text}, "eval": {...}}) to the Wikipedia splits."""
    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = use_device(config.device)
    out = Path(config.out or default_out("train", "vist"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"

    def log(msg: str) -> None:
        print(msg, flush=True)
        with (out / "train.log").open("a") as f:
            f.write(msg + "\n")

    if lm is None:
        from gistify.models import load

        lm, tokenizer = load()
    if corpus is None:
        from gistify_bench.data import wikipedia

        corpus = {"train": wikipedia("train"), "eval": wikipedia("eval")}
    if set(corpus["train"]) & set(corpus["eval"]):
        raise ValueError("the train and eval articles overlap")
    train_texts = dict(list(corpus["train"].items())[: config.articles or None])
    dtype = getattr(torch, config.llm_dtype)
    model = VistModel(lm.to(dtype).to(device), tokenizer, config.model_config(), encoder)
    encoder = model.encoder
    pve = config.pve_config()
    data = Corpus(train_texts, model, encoder, out / "features", config.windowing, "train")
    if not data.windows:
        raise ValueError("no training window fits: articles shorter than --distant-tokens / 2 + --proximal-tokens")
    counts = token_counts(data.texts, tokenizer, lm.config.vocab_size)
    model.set_token_counts(counts, len(data.windows))
    log(f"train: {len(data.texts)} articles, {len(data.windows)} windows, {int(counts.sum())} tokens counted")
    data.ensure(None, log)
    model.resampler.set_feature_stats(*data.feature_stats())

    params = model.trainable_parameters()
    log(f"trainable parameters: {sum(p.numel() for p in params) / 1e6:.2f} M ({config.inject})")
    opt = torch.optim.AdamW(params, lr=config.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, config.steps, config.warmup))
    queue = FeatureQueue(pve.queue, lm.config.hidden_size) if pve.weight > 0 and pve.queue else None
    start, history = 0, []
    keys = ("steps", "batch", "accum", "lr", "warmup", "distant_tokens", "proximal_tokens", "articles", "seed", "copy")
    run = {k: getattr(config, k) for k in keys}  # what a resumed run must share with the one it continues
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False, map_location="cpu")  # it may resume on another device
        if ck["config"] != model.config.to_dict() or ck["pve"] != dataclasses.asdict(pve) or ck["run"] != run:
            raise ValueError(f"{ckpt_path} is from another configuration; use another --out or delete it")
        model.load_trained(ck["trained"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if queue is not None and ck["queue"] is not None:
            queue.load_state_dict(ck["queue"])
        start, history = ck["step"], ck["history"]
        log(f"resumed at step {start} of {config.steps}")
    scores = model.importance()
    model.train()
    t0 = time.perf_counter()
    end = min(config.steps, config.stop_at_step) if config.stop_at_step else config.steps
    for step in track(range(start, end), end - start, "train", enabled=config.progress):
        opt.zero_grad()
        infos = []
        for micro in range(config.accum):
            batch = to_device(
                data.batch(windows_for(data, step, micro, config.batch, config.seed, config.copy)), device
            )
            g = torch.Generator().manual_seed((config.seed * 1_000_003 + step * 1009 + micro) % 2**31)
            logged = (step + 1) % config.log_every == 0 and micro == 0  # the plain LLM's loss, for the log
            loss, info = step_loss(model, batch, pve, queue, g, scores, base=logged)
            (loss / config.accum).backward()
            infos.append(info)
        torch.nn.utils.clip_grad_norm_(params, config.clip)
        opt.step()
        sched.step()
        history.append({k: sum(i[k] for i in infos) / len(infos) for k in infos[-1]})
        if "base" in infos[0]:
            history[-1]["lm_gain"] = infos[0]["base"] - infos[0].get("lm", infos[0].get("copy"))  # logged micro-batch
        done = step + 1
        if config.stop_after and time.perf_counter() - t0 >= 60 * config.stop_after:
            end = done  # out of time: save below and stop
        if done % config.log_every == 0 or done == config.steps:
            recent = history[-config.log_every :]
            avg = {k: sum(h[k] for h in recent) / len(recent) for k in recent[-1] if k not in ("base", "lm_gain")}
            if "lm_gain" in history[-1]:
                avg["gain_vs_plain_llm"] = history[-1]["lm_gain"]
            per = (time.perf_counter() - t0) / (done - start)
            log(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in avg.items()) + f" ({per:.1f} s/step)")
        if done % config.save_every == 0 or done == end:
            state = {
                "trained": on_cpu(model.trained_state()),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "queue": queue.state_dict() if queue is not None else None,
                "step": done,
                "history": history,
                "config": model.config.to_dict(),
                "pve": dataclasses.asdict(pve),
                "run": run,
            }
            torch.save(state, ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)
        if done == end:
            break
    if end < config.steps:
        log(f"stopped after step {end} of {config.steps}; rerun the command to resume")
        return {"stopped": end}

    held = Corpus(corpus["eval"], model, encoder, out / "features", config.windowing, "eval")
    windows = eval_windows(held, config.eval_n, config.seed)
    held.ensure(windows, log)
    results = evaluate(model, held, windows) if windows else {}
    if results:
        rng = random.Random(f"copy-{config.seed}")
        copies = evaluate(model, held, [w.copied(rng) for w in windows], text=False)
        results |= {f"copy_{k}": v for k, v in copies.items() if k in ("base", "vist", "shuffled")}
        results["vist_gain"] = round(results["base"] - results["vist"], 4)
        if "shuffled" in results:
            results["content_gain"] = round(results["shuffled"] - results["vist"], 4)
        results["ceiling_gain"] = round(results["base"] - results["text"], 4)
    log(f"held-out NLL per token (eval articles): {json.dumps(results)}")
    first, last = history[: config.log_every], history[-config.log_every :]
    card = {
        "model": f"vist: PP-OCRv6 lines (frozen) -> Perceiver resampler -> {config.inject} into "
        f"{getattr(lm.config, '_name_or_path', '') or type(lm).__name__} (frozen)",
        "llm": None,  # the embedded default; from_pretrained loads it
        "training": {
            "data": f"Wikipedia train split, {len(data.texts)} articles, {len(data.windows)} windows",
            "steps": config.steps,
            "batch": config.batch * config.accum,
            "lr": config.lr,
            "distant_tokens": config.distant_tokens,
            "proximal_tokens": config.proximal_tokens,
            "llm_dtype": config.llm_dtype,
            "copy_windows": config.copy,
            "pve": dataclasses.asdict(pve),
            "loss_first": _mean(first),
            "loss_last": _mean(last),
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "held_out": {"split": "Wikipedia eval articles", "nll_per_token": results},
        "command": config.command(),
    }
    weights = model.save(out / "vist.safetensors", card, getattr(torch, config.export_dtype))
    size = weights.stat().st_size / 2**20
    log(f"weights: {weights} ({size:.1f} MB)" + (" -- over 30 MB: too large to ship" if size > 30 else ""))
    if config.ship:
        shutil.copy(weights, WEIGHTS)
        shutil.copy(card_path(weights), card_path(WEIGHTS))
        log(f"shipped to {WEIGHTS.parent}")
    return json.loads(card_path(weights).read_text())


def parser():
    from gistify_bench.options import parser_for
    from gistify_bench.train.vist.config import PROG

    return parser_for(VistTrainConfig, f"python -m {PROG}", __doc__.split("\n")[0])


def parse(argv: list[str] | None = None) -> VistTrainConfig:
    """The config of a command line (`python -m gistify_bench.train.vist ...`)."""
    from gistify_bench.options import from_args

    p = parser()
    return from_args(VistTrainConfig, p.parse_args(argv), p)


def main(argv: list[str] | None = None) -> int:
    from gistify_bench.options import resolve_out

    config = parse(argv)
    config.out = str(resolve_out(config.out))
    card = train(config)
    if "held_out" in card:
        print(json.dumps(card["held_out"]["nll_per_token"]))
    return 0
