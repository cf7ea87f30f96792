"""Train the small VLM (gistify_bench.vlm): one command, with progress and resumption.

    python -m gistify_bench.train.vlm [--steps 600] [--out DIR] [--ship]
    python -m gistify_bench.train.vlm --data scenes [--lora-rank 16 --positions] [--stop-after MIN] [--ship]
    python -m gistify_bench.train.vlm --data scenes --init W.safetensors [--asked-only] [--relevance] ...
    python -m gistify_bench.train.vlm --out DIR --export W.safetensors | --check N   # the last checkpoint's

Settings: VLMTrainConfig. `--data easyvqa` (the shipped gistvlm weights) trains on easy-vqa's "train" split
(gistify_bench.vlm.vqa); `--data scenes` on generated question-dependent images (gistify_bench.vlm.scenes:
"scenes" and "labels", half and half, from a pool of --pool images per task whose encoder features are computed
once and cached in DIR), shipped as gistvlm-scenes. Two stages, the encoder and the LLM frozen:
1. align: the attention probe and the question head, contrastively: image level (multi-positive InfoNCE: a text
   such as "what is the blue shape?" matches every blue image of the batch) and region level (a composite's
   question against its cells, the asked quadrant's cells positive). Minutes: it reads cached encoder features.
   It does not touch what stage 2 trains; stage 2 reads it only through the relevance channel (--relevance).
2. answer: the projector and a rank-8 LoRA on SmolLM2's q/v projections (cross-entropy of the answer tokens),
   on easy-vqa questions and four-object composites half and half, with SmolLM2 run in bfloat16 (the CPU's
   bf16 units halve the time); SmolLM2's own weights stay frozen.
Checkpoints (trained weights, optimizer, step; batches are a function of (seed, step), so the step is the data
position) go to DIR (--out, default ./results/train/vlm) every --save-every steps and when --stop-after MINUTES
have passed; rerunning the same command resumes from the last one (other settings: an error). At the end the
held-out accuracy on the "test" split of the data's tasks is measured and written with the weights to DIR; only
`--ship` copies both into the package (src/gistify_bench/vlm/gistvlm[-scenes].{safetensors,json}, which
GistVLM.from_pretrained loads). `--init` starts a fresh run from exported weights (stage 1 skipped);
`--asked-only` trains on the asked object's tokens alone (the ground-truth control's input); `--check N` scores the
last checkpoint on N dev questions per task without touching the test split.
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
from gistify_bench.options import check, default_out, option, rerun_command
from gistify_bench.train.checkpoint import Checkpoint
from gistify_bench.vlm import scenes, vqa
from gistify_bench.vlm.model import LORA_TARGETS, WEIGHTS, GistVLM, VLMInputs, contrastive_loss, quadrant_cells

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
    data: str = option("easyvqa", "easyvqa (singles and composites) or scenes (generated scenes and labels)",
                       choices=("easyvqa", "scenes"))  # fmt: skip
    pool: int = option(3000, "generated training images per task (--data scenes), encoded once and cached")
    lora_rank: int = option(8, "rank of the LLM's LoRA")
    lora_targets: str = option(",".join(LORA_TARGETS), "the LLM's attention projections given a LoRA, comma-separated")
    positions: bool = option(False, "append position channels to the visual tokens (gistify_bench.vlm.model)")
    relevance: bool = option(False, "append a relevance channel: how well each token matches the question by the "
                             "stage-1 heads (gistify_bench.vlm.model.GistVLM.relevance_channel)")  # fmt: skip
    asked_only: bool = option(False, "--data scenes: the LLM reads only the asked object's tokens (the ground-truth "
                              "control's input): whether it learns to read, apart from finding")  # fmt: skip
    init: str | None = option(None, "a fresh run starts from these weights (a --export file, same LoRA): stage 1 "
                              "is skipped; a position or relevance channel they lack joins at 0")  # fmt: skip
    heads: str | None = option(None, "with --init: stage 1's probe and question head from these weights instead "
                               "(e.g. another run's, aligned on other data)")  # fmt: skip
    out: str | None = option(None, "checkpoints, log and the trained weights (default ./results/train/vlm)")
    ship: bool = option(False, "copy the weights and card into the package (gistify_bench/vlm/)")
    stop_after: float = option(0.0, "minutes; save and stop after the step that passes them (0: no limit)")
    stop_at_step: int = option(0, "save and stop after this step (0: run to --steps)")
    threads: int = option(0, "torch threads (0: torch's default)")
    device: str = option("cpu", "cpu or cuda")

    def __post_init__(self):
        check(self)
        targets = self.lora_targets.split(",")
        if not targets or not set(targets) <= {"q_proj", "k_proj", "v_proj", "o_proj"}:
            raise ValueError(f"lora_targets must name q_proj, k_proj, v_proj or o_proj, got {self.lora_targets!r}")
        for name in ("steps", "batch", "eval_n", "save_every", "pool", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("init", "heads"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise ValueError(f"{name}: no weights at {getattr(self, name)} (write them with --export PATH)")
        if self.heads and not self.init:
            raise ValueError("heads goes with init: a fresh run without --init trains its own stage 1")
        if self.asked_only and self.data != "scenes":
            raise ValueError("asked_only needs --data scenes: only the generated tasks know the asked object's cells")
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
    loss = 0.0
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
        loss = align_step(opt, image_level, region_loss(patch_text, text, where[crows], temperature), step, log)
    return loss


def region_loss(patch_text: torch.Tensor, text: torch.Tensor, where: torch.Tensor, temperature) -> torch.Tensor:
    """Grounding: each question (text (b, 128)) against its image's cells (patch_text (b, 196, 128)), the target
    distribution `where` (b, 196) uniform over the asked object's cells."""
    logits = temperature * torch.einsum("bnd,bd->bn", F.normalize(patch_text, dim=-1), F.normalize(text, dim=-1))
    return -(where * logits.log_softmax(-1)).sum(-1).mean()


def align_step(opt, image_level: torch.Tensor, region_level: torch.Tensor, step: int, log) -> float:
    loss = image_level + region_level
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % 100 == 0:
        log(f"align step {step}: image-level {image_level.item():.3f}, region-level {region_level.item():.3f}")
    return loss.item()


def align_scenes(model: GistVLM, data: dict, steps: int, batch: int, seed: int, log) -> float:
    """Stage 1 on generated data (`data`: task -> (examples, cached features)): the region-level term of `align`
    with the asked object's cells as the positives, and an image-level term (each question against the batch's
    images, its own image and those asked the same question positive)."""
    items = [(task, i) for task, (examples, _) in data.items() for i in range(len(examples))]
    scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))
    params = [*model.probe.parameters(), *model.question_head.parameters(), scale]
    opt = torch.optim.AdamW(params, lr=5e-3, weight_decay=0.01)
    rng = random.Random(seed)
    loss = 0.0
    for step in track(range(steps), steps, "align", enabled=True):
        rows = rng.sample(items, min(batch, len(items)))
        examples = [data[t][0][i] for t, i in rows]
        feats = torch.stack([data[t][1][i] for t, i in rows]).float()
        _, _, patch_text, pooled = model.probe(feats)
        qids, qmask = model.prompt_ids([e.question for e in examples])
        text = model.question_embedding(qids, qmask)
        temperature = scale.exp().clamp(max=100)
        same = torch.tensor([[a.question == b.question and a.answer == b.answer for b in examples] for a in examples])
        image_level = contrastive_loss(pooled, text, same, temperature)
        where = torch.stack([e.target.float() for e in examples])
        loss = align_step(opt, image_level, region_loss(patch_text, text, where / where.sum(1, keepdim=True),
                                                        temperature), step, log)  # fmt: skip
    return loss


def scene_pool(model: GistVLM, task: str, n: int, seed: int, out: Path, log) -> tuple[list, torch.Tensor]:
    """The first n "train" examples of a generated task (images dropped) and their encoder features (n, 196, 155)
    in bfloat16, cached in `out` chunk by chunk (an interrupted encoding resumes at its last chunk)."""
    from dataclasses import replace

    examples = scenes.examples(task, "train", n, seed=seed)
    chunks, size = [], 500
    for j in range(0, n, size):
        path = out / "features" / f"{task}-seed{seed}-{j}-{min(n, j + size)}.pt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            device = next(model.encoder.parameters()).device
            part = [
                model.encoder(model.pixels([e.image for e in examples[k : k + 50]]).to(device))
                .flatten(2)
                .transpose(1, 2)
                for k in range(j, min(n, j + size), 50)
            ]
            torch.save(torch.cat(part).to("cpu", torch.bfloat16), path.with_suffix(".tmp"))
            path.with_suffix(".tmp").replace(path)
            log(f"encoded {task} train images {j}..{min(n, j + size) - 1}")
        chunks.append(torch.load(path))
    return [replace(e, image=None) for e in examples], torch.cat(chunks)


def scene_batch(data: dict, step: int, batch: int, seed: int) -> tuple[list, torch.Tensor]:
    """Batch `step` of generated data: the tasks in turn, items drawn from the pools by (seed, step)."""
    rng = random.Random(f"{seed}-{step}")
    tasks = sorted(data)
    rows = [(tasks[k % len(tasks)], rng.randrange(len(data[tasks[k % len(tasks)]][0]))) for k in range(batch)]
    return [data[t][0][i] for t, i in rows], torch.stack([data[t][1][i] for t, i in rows])


def asked_cells(examples: list):
    """A token reducer that keeps each example's asked object's cells (its `target`): the ground-truth control."""
    return lambda feats, _: [f[e.target.to(f.device)] for f, e in zip(feats, examples)]


def answer_batch(model: GistVLM, examples: list, features: torch.Tensor | None = None, asked_only: bool = False):
    """Mean cross-entropy of the answer tokens " {answer}\\n" after the prompt, teacher-forced. `features`: the
    examples' encoder tokens when cached (then their images are not read); `asked_only`: each example's visual
    tokens cut to the asked object's cells (its `target`), as the ground-truth control reads them."""
    if features is None:
        x = model.inputs([e.image for e in examples], [e.question for e in examples])
    else:
        ids, mask = model.prompt_ids([e.question for e in examples])
        x = VLMInputs(torch.empty(0), ids, mask, model.with_positions(features.float()))
    device = model.lm.get_input_embeddings().weight.device
    targets = [
        torch.tensor(model.tokenizer(f" {e.answer}\n", add_special_tokens=False)["input_ids"], device=device)
        for e in examples
    ]
    if asked_only:  # reducers act through this seam too (gistify.reduce sets it); none is set in training
        model.token_reducer = asked_cells(examples)
    try:
        embeds, mask, positions = model.sequence(x, extra=targets)
    finally:
        model.token_reducer = None
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


def accuracy(model: GistVLM, examples: list, batch: int = 16, asked_only: bool = False) -> float:
    """The share answered right; `asked_only`: reading only each example's asked object's tokens."""
    right = 0
    for j in range(0, len(examples), batch):
        part = examples[j : j + batch]
        if asked_only:
            model.token_reducer = asked_cells(part)
        try:
            preds = model.answer([e.image for e in part], [e.question for e in part])
        finally:
            model.token_reducer = None
        right += sum(vqa.correct(p, e.answer) for p, e in zip(preds, part))
    return right / len(examples)


def train(config: VLMTrainConfig) -> dict | None:
    """Run (or resume) the training; the card of the trained weights, or None when it stopped early to resume."""
    from safetensors.torch import save_file

    from gistify.models import load

    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    out = Path(config.out or default_out("train", "vlm"))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpoint(out / "checkpoint.pt", config, config.stop_after, config.stop_at_step, config.save_every)
    for name in ("ship", "eval_n"):  # what happens after the last step, not what the steps compute
        ckpt.settings.pop(name)
    log_path = out / "train.log"

    def log(msg: str) -> None:
        print(msg, flush=True)
        with log_path.open("a") as f:
            f.write(msg + "\n")

    lm, tok = load()
    targets = tuple(config.lora_targets.split(","))
    model = GistVLM(lm.to(torch.bfloat16), tok, lora_rank=config.lora_rank, lora_targets=targets,
                    positions=config.positions, relevance=config.relevance).to(config.device)  # fmt: skip
    lora = list(model.lora_parameters().values())
    trained = [w for part in model.answer_parts() for w in getattr(model, part).parameters()]
    groups = [{"params": trained}, {"params": lora, "lr": config.lora_lr}]
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=0.0)
    start, history, align_loss = 0, [], None
    state = ckpt.load()
    if state is not None:
        model.load_trained(state["trained"])
        opt.load_state_dict(state["optimizer"])
        start, history, align_loss = state["step"], state["history"], state["align_loss"]
        log(f"resumed at step {start} of {config.steps}")
    elif config.init:  # a fresh run from earlier weights: their stage 1 (probe, question head) is kept
        from safetensors.torch import load_file

        weights = {k: v.float() for k, v in load_file(config.init).items()}
        if config.heads:
            stage1 = {k: v.float() for k, v in load_file(config.heads).items() if k.startswith(("probe.", "question_"))}
            weights = {k: v for k, v in weights.items() if not k.startswith(("probe.", "question_"))} | stage1
        # a channel the weights lack keeps its start (zero; the gate's own start), so the projector reads as trained
        model.load_trained(weights, missing_ok=tuple(p for p in model.answer_parts() if p != "projector"))
        align_loss = float("nan")  # not None: a resumed run must not redo stage 1 either
        log(f"started from {config.init}, stage 1 from {config.heads or 'the same'} (not trained again)")
    data = None
    if config.data == "scenes":
        data = {t: scene_pool(model, t, config.pool, config.seed, out, log) for t in scenes.TASKS}
    if align_loss is None or config.realign:
        if data is None:
            align_loss = align(model, config.align_steps, 128, config.seed, log)
        else:
            align_loss = align_scenes(model, data, config.align_steps, 128, config.seed, log)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * min(s, config.steps) / config.steps))
    )
    for _ in range(start):
        sched.step()
    t0 = time.perf_counter()
    for step in track(range(start, config.steps), config.steps - start, "answer", enabled=True):
        if data is None:
            loss = answer_batch(model, training_examples(step, config.batch, config.seed))
        else:
            loss = answer_batch(model, *scene_batch(data, step, config.batch, config.seed), config.asked_only)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        if (step + 1) % 10 == 0:
            recent = sum(history[-10:]) / 10
            log(f"step {step + 1}: loss {recent:.3f} ({(time.perf_counter() - t0) / (step + 1 - start):.2f} s/step)")
        done, stop = step + 1 == config.steps, ckpt.stop(step + 1)
        if (step + 1) % config.save_every == 0 or done or stop:
            ckpt.save({
                "trained": model.trained_state(), "optimizer": opt.state_dict(), "step": step + 1,
                "history": history, "align_loss": align_loss,
            })  # fmt: skip
        if stop and not done:
            log(f"stopped after step {step + 1} of {config.steps}; rerun the same command to resume")
            return None
    model.eval()
    tasks = ("easyvqa", "easyvqa-4") if data is None else scenes.TASKS
    held_out = {task: accuracy(model, eval_examples(task, config.eval_n)) for task in tasks}
    log(f"held-out accuracy (test split, n={config.eval_n} each): {held_out}")
    name = "gistvlm" if data is None else "gistvlm-scenes"
    card = {
        "model": "GistVLM: EfficientNet-Lite0 (frozen, ImageNet) -> MLP projector -> SmolLM2-135M-Instruct "
        f"(frozen; LoRA rank {config.lora_rank} on {', '.join(targets)})"
        + ("; 16 position channels per visual token" if config.positions else ""),
        "visual_tokens": 196,
        "data": "easy-vqa 1.0 train images 0-3599: its questions and four-object composites, half and half"
        if data is None
        else f"gistify_bench.vlm.scenes train split, seed {config.seed}: {config.pool} scenes and {config.pool} "
        "labels images, half and half",
        "align": {
            "steps": config.align_steps,
            "batch": 128,
            "final_loss": None if math.isnan(align_loss) else round(align_loss, 4),  # nan: stage 1 came with --init
            "init": config.init,
        },
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
        "command": rerun_command(PROG, config),
    }
    save_file({k: v.contiguous().cpu() for k, v in model.trained_state().items()}, out / f"{name}.safetensors")
    (out / f"{name}.json").write_text(json.dumps(card, indent=2) + "\n")
    if config.ship:
        weights = WEIGHTS.with_name(f"{name}.safetensors")
        shutil.copy(out / f"{name}.safetensors", weights)
        shutil.copy(out / f"{name}.json", weights.with_suffix(".json"))
        log(f"shipped to {weights.parent}")
    return card


def eval_examples(task: str, n: int) -> list:
    """The held-out questions the card reports (the benchmark's: test split, seed 1)."""
    if task in scenes.TASKS:
        return scenes.examples(task, "test", n, seed=1)
    return vqa.examples(task, "test", n, seed=1)


def check_dev(checkpoint: Path, n: int) -> dict:
    """The checkpoint's accuracy on the first n dev questions of each task it trains on (seed 1), with its step; a
    run trained on the asked object's tokens is also scored reading only them."""
    import tempfile

    state = _read(checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        _save_weights(state, Path(tmp) / "weights.safetensors")
        model = GistVLM.from_pretrained(Path(tmp) / "weights.safetensors", dtype=torch.bfloat16)
    step, settings = state["step"], state["settings"]
    source, tasks = (scenes, scenes.TASKS) if settings.get("data") == "scenes" else (vqa, ("easyvqa", "easyvqa-4"))
    out = {"step": step, "split": "dev", "n": n}
    for t in tasks:
        examples = source.examples(t, "dev", n, seed=1)
        out[t] = accuracy(model, examples)
        if settings.get("asked_only"):  # what it was trained to read, beside all tokens
            out[f"{t} (asked object's tokens only)"] = accuracy(model, examples, asked_only=True)
    return out


def _read(checkpoint: Path) -> dict:
    if not checkpoint.is_file():
        raise SystemExit(f"no checkpoint at {checkpoint}: train first (or give the run's --out)")
    return torch.load(checkpoint, weights_only=False)


def _save_weights(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state["trained"].items()}, path)


def export(checkpoint: Path, path: Path) -> int:
    """The trained weights of a checkpoint in bfloat16 at `path` (what a later run or the benchmark loads); its step."""
    state = _read(checkpoint)
    _save_weights(state, path)
    return state["step"]


def main(argv=None) -> int:
    from gistify_bench.options import from_args, parser_for, resolve_out

    p = parser_for(VLMTrainConfig, f"python -m {PROG}", __doc__.split("\n")[0])
    p.add_argument("--export", metavar="PATH", help="write the run's last checkpoint's weights (bfloat16) to PATH, "
                   "loadable by GistVLM.from_pretrained, and exit")  # fmt: skip
    p.add_argument("--check", type=int, metavar="N", help="the run's last checkpoint's accuracy on N dev questions "
                   "per task (a progress check that leaves the test split alone), and exit")  # fmt: skip
    args = p.parse_args(argv)
    if args.check is not None and args.check < 1:
        p.error("--check needs N >= 1")
    if args.export or args.check:
        out = resolve_out(args.out, "train", "vlm", announce=False)
        if args.export:
            print(f"step {export(out / 'checkpoint.pt', Path(args.export))}: {args.export}")
        if args.check:
            print(json.dumps(check_dev(out / "checkpoint.pt", args.check)))
        return 0
    config = from_args(VLMTrainConfig, args, p)
    config.out = str(resolve_out(config.out, "train", "vlm"))
    card = train(config)
    if card is not None:
        print(json.dumps(card["held_out_accuracy"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
