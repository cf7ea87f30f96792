"""Train the small VLM (gistify_bench.vlm): one command, with progress and resumption.

    python -m gistify_bench.train.vlm [--steps 600] [--out DIR] [--ship]

Settings: VLMTrainConfig. Two stages, both on the "train" split of easy-vqa (gistify_bench.vlm.vqa), the encoder
and the LLM frozen:
1. align: the attention probe and the question head, contrastively: image level (multi-positive InfoNCE: a text
   such as "what is the blue shape?" matches every blue image of the batch) and region level (a composite's
   question against its cells, the asked quadrant's cells positive). Minutes: it reads cached encoder features.
   It does not touch what stage 2 trains, and stage 2 does not read it.
2. answer: the projector and a rank-8 LoRA on SmolLM2's q/v projections (cross-entropy of the answer tokens),
   on easy-vqa questions and four-object composites half and half, with SmolLM2 run in bfloat16 (the CPU's
   bf16 units halve the time); SmolLM2's own weights stay frozen.
Checkpoints go to DIR (--out, default ./results/train/vlm) every --save-every steps; rerunning the command resumes
from the last one. At the end the held-out accuracy on the "test" split (single images and composites) is measured
and written with the weights to DIR; only `--ship` copies both into the package
(src/gistify_bench/vlm/gistvlm.{safetensors,json}, which GistVLM.from_pretrained loads).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gistify.progress import track
from gistify_bench.options import check, default_out, option
from gistify_bench.vlm import vqa
from gistify_bench.vlm.model import CARD, WEIGHTS, GistVLM, contrastive_loss, quadrant_cells

PROG = "gistify_bench.train.vlm"


@dataclass
class VLMTrainConfig:
    """The small VLM's training settings and where its results go."""

    steps: int = option(600, "projector steps (batches)")
    batch: int = option(8, "questions per batch")
    lr: float = option(1e-3, "projector learning rate")
    lora_lr: float = option(5e-4, "learning rate of the LLM's LoRA")
    align_steps: int = option(600, "stage 1 (probe and question head) steps")
    eval_n: int = option(300, "held-out questions per task")
    save_every: int = option(25, "steps between checkpoints")
    realign: bool = option(False, "redo stage 1 even when resuming after it")
    seed: int = option(0, "batches are a function of (seed, step)")
    out: str | None = option(None, "checkpoints, log and the trained weights (default ./results/train/vlm)")
    ship: bool = option(False, "copy the weights and card into the package (gistify_bench/vlm/)")

    def __post_init__(self):
        check(self)
        for name in ("steps", "batch", "eval_n", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.align_steps < 0 or self.lr <= 0 or self.lora_lr <= 0:
            raise ValueError("align_steps must be >= 0 and the learning rates positive")


TEMPLATES = {  # text -> which attributes it names (colour, shape); every text names at least one
    "what is the {c} shape?": (True, False),
    "is there a {c} shape?": (True, False),
    "what color is the {s}?": (False, True),
    "does the image contain a {s}?": (False, True),
    "a {c} {s}": (True, True),
}


def align(model: GistVLM, steps: int, batch: int, seed: int, log, n_composites: int = 1000) -> float:
    """Stage 1: train the probe and the question head on cached encoder features of train images, with two
    contrastive terms:
    - image level (single images): a text matches every image with the attributes it names;
    - region level (composites): the question's embedding against every cell of its image, the cells of the
      quadrant holding the object it names being the positives (a grounding loss, as region-text pretraining
      does). Image-level pairs alone left the cells a question points at barely above chance (dev: 36% of the
      top-10 cells in the asked quadrant, chance 25%; with the region term 62%).
    """
    attrs = vqa.attributes("train")
    ids = sorted(attrs)
    pix = torch.cat([model.pixels([vqa.image("train", i) for i in ids[j : j + 256]]) for j in range(0, len(ids), 256)])
    feats = torch.cat([model.encode(pix[j : j + 128]) for j in range(0, len(pix), 128)])  # (n, 196, 155)
    comps = vqa.composites("train", n_composites, seed=seed + 1)
    cfeats = torch.cat([model.encode(model.pixels([e.image for e in comps[j : j + 100]])) for j in
                        range(0, len(comps), 100)])  # fmt: skip
    cids, cmask = model.prompt_ids([e.question for e in comps])
    cells = quadrant_cells()
    where = torch.stack([(cells == e.target).float() for e in comps])
    where = where / where.sum(1, keepdim=True)  # (n_composites, 196): uniform over the asked quadrant
    scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    params = [*model.probe.parameters(), *model.question_head.parameters(), scale]
    opt = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.01)
    rng = random.Random(seed)
    templates = list(TEMPLATES)
    loss = torch.tensor(0.0)
    for step in track(range(steps), steps, "align", enabled=True):
        rows = rng.sample(range(len(ids)), batch)
        texts, named = [], []
        for r in rows:
            t = rng.choice(templates)
            c, s = attrs[ids[r]]
            texts.append(t.format(c=c, s=s))
            named.append((c if TEMPLATES[t][0] else None, s if TEMPLATES[t][1] else None))
        # match[t, b]: image b has every attribute text t names
        match = torch.tensor(
            [[all(x is None or x == y for x, y in zip(n, attrs[ids[b]])) for b in rows] for n in named]
        )
        _, _, _, pooled = model.probe(feats[rows])
        qids, qmask = model.prompt_ids(texts)
        temperature = scale.exp().clamp(max=100)
        image_level = contrastive_loss(pooled, model.question_embedding(qids, qmask), match, temperature)
        crows = rng.sample(range(len(comps)), batch // 4)
        _, _, patch_text, _ = model.probe(cfeats[crows])  # (b, 196, 128)
        text = model.question_embedding(cids[crows], cmask[crows])  # (b, 128)
        logits = temperature * torch.einsum("bnd,bd->bn", F.normalize(patch_text, dim=-1), F.normalize(text, dim=-1))
        region_level = -(where[crows] * logits.log_softmax(-1)).sum(-1).mean()
        loss = image_level + region_level
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log(f"align step {step}: image-level {image_level.item():.3f}, region-level {region_level.item():.3f}")
    return loss.item()


def answer_batch(model: GistVLM, examples: list) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens " {answer}\\n" after the prompt, teacher-forced."""
    x = model.inputs([e.image for e in examples], [e.question for e in examples])
    targets = [torch.tensor(model.tokenizer(f" {e.answer}\n", add_special_tokens=False)["input_ids"]) for e in examples]
    embeds, mask, positions = model.sequence(x, extra=targets)
    logits = model.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).logits  # (B, L, V)
    # Rows are left-padded, so each row's targets are its last len(t) positions, predicted one step earlier.
    losses = [torch.nn.functional.cross_entropy(logits[i, -len(t) - 1 : -1].float(), t) for i, t in enumerate(targets)]
    return torch.stack(losses).mean()


def training_examples(step: int, batch: int, seed: int) -> list:
    """Batch `step`: half easy-vqa questions, half composites, drawn from the train split deterministically (so
    a resumed run sees the batches an uninterrupted one would)."""
    rng = random.Random(f"{seed}-{step}")
    rows = vqa.questions("train")
    half = batch // 2
    singles = [rng.choice(rows) for _ in range(half)]
    out = [vqa.Example(vqa.image("train", i), q, a, "single") for q, a, i in singles]
    return out + [vqa.composite("train", rng) for _ in range(batch - half)]


def accuracy(model: GistVLM, examples: list, batch: int = 16) -> float:
    right = 0
    for j in range(0, len(examples), batch):
        part = examples[j : j + batch]
        preds = model.answer([e.image for e in part], [e.question for e in part])
        right += sum(vqa.correct(p, e.answer) for p, e in zip(preds, part))
    return right / len(examples)


def train(config: VLMTrainConfig) -> dict:
    from safetensors.torch import save_file

    from gistify.models import load

    torch.manual_seed(config.seed)
    out = Path(config.out or default_out("train", "vlm"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "checkpoint.pt"
    log_path = out / "train.log"

    def log(msg: str) -> None:
        print(msg, flush=True)
        with log_path.open("a") as f:
            f.write(msg + "\n")

    lm, tok = load()
    model = GistVLM(lm.to(torch.bfloat16), tok)
    lora = list(model.lora_parameters().values())
    groups = [{"params": model.projector.parameters()}, {"params": lora, "lr": config.lora_lr}]
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.0)
    start, history, align_loss = 0, [], None
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        model.load_trained(ck["trained"])
        opt.load_state_dict(ck["optimizer"])
        start, history, align_loss = ck["step"], ck["history"], ck["align_loss"]
        log(f"resumed at step {start} of {config.steps}")
    if align_loss is None or config.realign:
        align_loss = align(model, config.align_steps, 128, config.seed, log)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps))
    )
    for _ in range(start):
        sched.step()
    t0 = time.perf_counter()
    for step in track(range(start, config.steps), config.steps - start, "answer", enabled=True):
        loss = answer_batch(model, training_examples(step, config.batch, config.seed))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        if (step + 1) % 10 == 0:
            recent = sum(history[-10:]) / 10
            log(f"step {step + 1}: loss {recent:.3f} ({(time.perf_counter() - t0) / (step + 1 - start):.2f} s/step)")
        if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
            state = {
                "trained": model.trained_state(),
                "optimizer": opt.state_dict(),
                "step": step + 1,
                "history": history,
                "align_loss": align_loss,
            }
            torch.save(state, ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)
    model.eval()
    held_out = {
        task: accuracy(model, vqa.examples(task, "test", config.eval_n, seed=1)) for task in ("easyvqa", "easyvqa-4")
    }
    log(f"held-out accuracy (test split, n={config.eval_n} each): {held_out}")
    card = {
        "model": "GistVLM: EfficientNet-Lite0 (frozen, ImageNet) -> MLP projector -> SmolLM2-135M-Instruct "
        "(frozen; LoRA rank 8 on q_proj, v_proj)",
        "visual_tokens": 196,
        "data": "easy-vqa 1.0 train images 0-3599: its questions and four-object composites, half and half",
        "align": {"steps": config.align_steps, "batch": 128, "final_loss": round(align_loss, 4)},
        "answer": {
            "steps": config.steps,
            "batch": config.batch,
            "lr": config.lr,
            "lora_lr": config.lora_lr,
            "llm_dtype": "bfloat16",
            "loss_first10": round(sum(history[:10]) / 10, 4),
            "loss_last10": round(sum(history[-10:]) / 10, 4),
        },
        "held_out_accuracy": {"split": "test", "n": config.eval_n, **held_out},
        "command": f"python -m {PROG} --steps {config.steps} --batch {config.batch} --seed {config.seed} "
        f"--lr {config.lr} --lora-lr {config.lora_lr}",
    }
    save_file({k: v.contiguous() for k, v in model.trained_state().items()}, out / "gistvlm.safetensors")
    (out / "gistvlm.json").write_text(json.dumps(card, indent=2) + "\n")
    if config.ship:
        shutil.copy(out / "gistvlm.safetensors", WEIGHTS)
        shutil.copy(out / "gistvlm.json", CARD)
        log(f"shipped to {WEIGHTS.parent}")
    return card


def main(argv=None) -> int:
    from gistify_bench.options import from_args, parser_for, resolve_out

    p = parser_for(VLMTrainConfig, f"python -m {PROG}", __doc__.split("\n")[0])
    config = from_args(VLMTrainConfig, p.parse_args(argv))
    config.out = str(resolve_out(config.out, "train", "vlm"))
    card = train(config)
    print(json.dumps(card["held_out_accuracy"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
