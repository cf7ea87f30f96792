"""vist's vision path distilled into the teacher's memory (issue 13, step 4).

    python -m gistify_bench.train.distill [--teacher DIR/teacher.safetensors] [--slots-per-line 4]
                                          [--steps 1500] [--e2e-steps 0] [--out DIR]

The teacher (gistify_bench.train.teacher) reads the frozen LLM's own layer-18 states of the distant text, one per
token. vist must read a memory made from pixels, with fewer tokens than the text. Here the memory is the teacher's
in vist's layout (gistify.vist.slots): every rendered line cut into `--slots-per-line` stretches, one memory token
per stretch, the mean of the states of the text tokens drawn in it, at the mean of their text positions. With 4
stretches of a line of about 10 tokens, the LLM reads about 2.5x fewer tokens than the text.

1. Regression (no LLM backward pass): a local Perceiver resampler (gistify.vist.resampler, `local`: latent j of an
   image of 16 lines reads the j-th stretch, and every latent reads the others) over the frozen PP-OCRv6 features
   of 16 lines is trained to output each stretch's pooled teacher state. Loss: the squared error of the two after
   the RMS normalisation and gain the first block applies to its memory (what its keys and values see), relative
   to the target's norm. The targets are computed once per train article, its states in 512-token chunks with
   256 tokens of overlap (each token sees at least 256 tokens before it).
2. End to end (`--e2e-steps`): the resampler and the teacher's blocks trained with the LM loss on train windows,
   half of them copy windows (the teacher's mix).

Held out (eval articles; the teacher's windows: 16 copy and 16 continuation windows): during the regression, its
error against the teacher's memory in vist's layout of the same windows; then the per-token NLL of the proximal
window with no memory; the teacher's full memory (one state per token); the teacher's memory in vist's layout;
the mean-pooled control (the LLM's input embeddings averaged per stretch: compression without any context or
vision); vist's vision memory; and, for the last three, another window's memory (the control that tells reading
from a bias); and the text tokens per memory token.

Writes DIR/distill.json and DIR/vist.safetensors with its card vist.json (VistModel.from_pretrained(path) loads
them: the resampler, the blocks, PVE's head untrained); DIR (--out) defaults to ./results/vist/distill.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from gistify_bench.options import check, default_out, option

PROG = "gistify_bench.train.distill"


@dataclass
class DistillConfig:
    """The distillation's settings and where its result goes."""

    teacher: str = option("", "the teacher's teacher.safetensors (default ./results/vist/teacher/r1/)")
    layer: int = option(18, "the teacher's layer (its --layer)")
    xattn_layers: str = option("18,19,20,21,22,23", "the teacher's blocks (its --xattn-layers)")
    distant_tokens: int = option(512, "most LLM tokens of a window's distant part")
    proximal_tokens: int = option(128, "a window's proximal part")
    slots_per_line: int = option(4, "memory tokens per rendered line (stretches of 96 / k encoder tokens)")
    lines_per_image: int = option(16, "lines the resampler reads as one image")
    depth: int = option(2, "resampler blocks")
    steps: int = option(1500, "regression steps")
    batch: int = option(8, "images per regression step")
    lr: float = option(5e-4, "regression learning rate (warm-up over 5% of the steps, then cosine)")
    e2e_steps: int = option(0, "end-to-end steps (LM loss through the LLM)")
    e2e_batch: int = option(4, "windows per end-to-end step")
    e2e_lr: float = option(1e-4, "end-to-end learning rate (resampler and blocks; gates x20)")
    copy: float = option(0.5, "share of copy windows in end-to-end batches")
    e2e_memory: str = option(
        "vision",
        "the memory trained end to end: vist's, or the mean-pooled control (input embeddings; the blocks only)",
        ("vision", "mean_embedding"),
    )
    eval_n: int = option(16, "held-out windows of each kind")
    eval_every: int = option(250, "regression steps between held-out errors")
    init: str | None = option(None, "a vist.safetensors of an earlier run to start from (resampler and blocks)")
    seed: int = option(0, "batches are a function of (seed, step)")
    threads: int = option(0, "torch threads (0: leave as is)")
    cache: str | None = option(None, "a vist trainer's --out folder (its features/ hold the articles' lines)")
    progress: bool = option(True, "show progress bars")
    out: str | None = option(None, "where distill.json and vist.safetensors go (default ./results/vist/distill)")

    def __post_init__(self):
        check(self)
        for name in ("slots_per_line", "lines_per_image", "depth", "batch", "e2e_batch", "eval_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps < 0 or self.e2e_steps < 0 or self.eval_every < 1 or min(self.lr, self.e2e_lr) <= 0:
            raise ValueError("steps and e2e_steps must be >= 0, eval_every >= 1, the learning rates positive")
        if 96 % self.slots_per_line:
            raise ValueError(f"slots_per_line must divide the 96 encoder tokens of a line, got {self.slots_per_line}")
        if not 0 <= self.copy <= 1:
            raise ValueError(f"copy must be in [0, 1], got {self.copy}")


# -- where each window's tokens sit among the slots ---------------------------------------------------------------


@dataclass
class Layout:
    """One distant text in vist's layout (Corpus.slots): the slot of each of its n tokens (n,), which slots of its
    images hold a token (count,) and their mean text position relative to the proximal window (count,)."""

    slots: np.ndarray
    filled: torch.Tensor
    positions: torch.Tensor

    @property
    def count(self) -> int:
        return len(self.filled)

    def pool(self, values: torch.Tensor) -> torch.Tensor:
        from gistify.vist.slots import pool_slots

        return pool_slots(values, self.slots, self.count)[0]


def stack(rows: list[torch.Tensor], layouts: list[Layout]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-window memories (count_b, D) -> the batch's (tokens (B, S, D), mask (B, S), positions (B, S))."""
    s = max(x.count for x in layouts)
    tokens = rows[0].new_zeros(len(rows), s, rows[0].shape[-1])
    mask = torch.zeros(len(rows), s, dtype=torch.bool)
    positions = torch.zeros(len(rows), s)
    for b, (row, lay) in enumerate(zip(rows, layouts)):
        tokens[b, : lay.count] = row
        mask[b, : lay.count] = lay.filled
        positions[b, : lay.count] = lay.positions
    return tokens, mask, positions


# -- the regression's data ----------------------------------------------------------------------------------------


@torch.no_grad()
def article_targets(teacher, corpus, article: int, k: int, chunk: int = 512, stride: int = 256):
    """The teacher's states of a whole article pooled per stretch: (lines x k, d) float16 and filled (lines x k,).
    States come from `chunk`-token pieces every `stride` tokens, each token's from a piece where it has at least
    chunk - stride tokens before it (or all of them)."""
    from gistify.vist.slots import pool_slots, token_slots

    lf = corpus.lines[article]
    enc = corpus.model.tokenizer(corpus.texts[article], add_special_tokens=False, return_offsets_mapping=True)
    ids = torch.tensor(enc["input_ids"], dtype=torch.int64)
    n = len(ids)
    states = torch.zeros(n, teacher.lm[0].config.hidden_size)
    starts = list(range(0, max(1, n - chunk + stride), stride))
    for i in range(0, len(starts), 4):
        group = starts[i : i + 4]
        pieces = [ids[s : s + chunk] for s in group]
        width = max(len(p) for p in pieces)
        batch = torch.zeros(len(pieces), width, dtype=torch.int64)
        mask = torch.zeros(len(pieces), width, dtype=torch.int64)
        for b, p in enumerate(pieces):
            batch[b, : len(p)], mask[b, : len(p)] = p, 1
        h = teacher.memory.states(batch, mask)
        for b, s in enumerate(group):
            keep = 0 if s == 0 else chunk - stride
            states[s + keep : s + len(pieces[b])] = h[b, keep : len(pieces[b])]
    slots = token_slots(np.array(enc["offset_mapping"]).reshape(-1, 2), lf.spans, lf.mask.sum(1), lf.mask.shape[1], k)
    pooled, filled = pool_slots(states, slots, len(lf) * k)
    return pooled.half(), filled


def _targets(config: DistillConfig, teacher, train) -> list:
    """Every train article's pooled teacher states (article_targets), cached next to the line features: they
    depend on the teacher's layer (not its blocks), the slots and the articles (~7 min on 2 cores)."""
    import hashlib

    from gistify.progress import progress_bar

    key = hashlib.sha256(json.dumps([config.layer, config.slots_per_line, *train.titles]).encode()).hexdigest()[:12]
    path = train.lines[0].path.parent / f"distill-targets-{key}.pt"
    if path.is_file():
        return torch.load(path)
    targets = []
    with progress_bar(len(train.texts), "targets", enabled=config.progress) as advance:
        for a in range(len(train.texts)):
            targets.append(article_targets(teacher, train, a, config.slots_per_line))
            advance()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(targets, path)
    return targets


class Images:
    """16-line images of a corpus's articles with their per-stretch targets: `batch(rng, n)` draws n images
    starting at any line (a window's images start at any line)."""

    def __init__(self, corpus, targets: list, per_image: int, k: int):
        self.corpus, self.targets, self.per_image, self.k = corpus, targets, per_image, k
        self.starts = [(a, j) for a, lf in enumerate(corpus.lines) for j in range(len(lf))]

    def image(self, a: int, j: int):
        lf, (target, filled) = self.corpus.lines[a], self.targets[a]
        end = min(j + self.per_image, len(lf))
        pages = lf.pages(j, end)  # one image, padded with masked empty lines
        t = torch.zeros(self.per_image * self.k, target.shape[1])
        f = torch.zeros(self.per_image * self.k, dtype=torch.bool)
        t[: (end - j) * self.k] = target[j * self.k : end * self.k].float()
        f[: (end - j) * self.k] = filled[j * self.k : end * self.k]
        return pages.features[0], pages.mask[0], t, f

    def batch(self, picks: list[tuple[int, int]]):
        return [torch.stack(x) for x in zip(*(self.image(a, j) for a, j in picks))]


def reader_gain(teacher) -> torch.Tensor:
    """(d,) the first block's memory RMSNorm gain: what its keys and values see of the memory."""
    block = teacher.xattn.blocks[0]
    norm = getattr(block, "memory_norm", None)
    return norm.weight.detach().float() if norm is not None else torch.ones(teacher.lm[0].config.hidden_size)


def regression_error(pred: torch.Tensor, target: torch.Tensor, filled: torch.Tensor, gain: torch.Tensor):
    """Relative squared error and mean cosine of pred and target (..., d) after RMS normalisation and `gain`, over
    the filled slots."""

    def seen(x):
        return gain * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    p, t = seen(pred), seen(target)
    w = filled.float()
    error = ((p - t).pow(2).sum(-1) * w).sum() / (t.pow(2).sum(-1) * w).sum().clamp(min=1e-9)
    cosine = (nn.functional.cosine_similarity(p, t, dim=-1) * w).sum() / w.sum().clamp(min=1)
    return error, cosine


# -- the run ------------------------------------------------------------------------------------------------------


def run(config: DistillConfig, lm=None, tokenizer=None, corpus: dict | None = None, encoder=None):
    """Distil (and evaluate): the result and the VistModel (its resampler and blocks trained). `encoder`: the
    line encoder (default PP-OCRv6)."""
    from gistify.progress import progress_bar
    from gistify.vist.config import VistConfig
    from gistify.vist.model import VistModel
    from gistify_bench.train.teacher import Teacher, TeacherConfig, _load_init, _table
    from gistify_bench.vist.corpus import Windowing, eval_windows, text_corpora, windows_for

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    if lm is None:
        from gistify.models import load

        lm, tokenizer = load()
    lm = lm.float().requires_grad_(False).eval()
    teacher_path = config.teacher or str(default_out("vist", "teacher", "r1", "teacher.safetensors"))
    teacher = Teacher(lm, TeacherConfig(layer=config.layer, xattn_layers=config.xattn_layers))
    _load_init(teacher, teacher_path)
    k, per_image = config.slots_per_line, config.lines_per_image
    # vist itself, in the teacher's reading layout: its resampler and blocks are what trains and what ships
    vist_config = VistConfig(
        lines_per_image=per_image,
        slots_per_line=k,
        dim=None,
        depth=config.depth,
        xattn_layers=TeacherConfig(xattn_layers=config.xattn_layers).block_layers(),
    )
    model = VistModel(lm, tokenizer, vist_config, encoder)
    model.xattn.load_state_dict(teacher.xattn.state_dict())
    teacher.xattn = model.xattn  # the teacher's arms and vist's read through the same blocks
    resampler = model.resampler
    shape = Windowing(config.distant_tokens, config.proximal_tokens)
    train, held = text_corpora(corpus, model, shape, config.cache)
    t0 = time.perf_counter()
    train.ensure(None)
    resampler.set_feature_stats(*train.feature_stats())
    if config.init:
        from safetensors.torch import load_file

        model.load_trained(load_file(config.init))
    targets = _targets(config, teacher, train) if config.steps else []
    print(f"targets in {time.perf_counter() - t0:.0f} s", flush=True)
    images = Images(train, targets, per_image, k)
    gain = reader_gain(teacher)

    # held-out windows: the teacher's
    erng = random.Random(f"teacher-{config.seed}")
    continuation = eval_windows(held, config.eval_n, config.seed)
    copies = [w.copied(erng) for w in eval_windows(held, config.eval_n, config.seed + 1)]
    embed = lm.get_input_embeddings()

    def memories(c, windows, batch, arms, states=None) -> dict:
        """The memories `arms` read for a batch of windows of corpus c ("teacher_slots" needs the batch's
        teacher states)."""
        layouts = [Layout(*c.slots(w)) for w in windows]
        dids, dmask = batch["distant"]
        n = dmask.sum(1).tolist()
        out = {}
        if "teacher_slots" in arms:
            out["teacher_slots"] = stack([lay.pool(states[b, : n[b]]) for b, lay in enumerate(layouts)], layouts)
        if "mean_embedding" in arms:
            with torch.no_grad():
                pooled = [lay.pool(embed(dids[b, : n[b]]).float()) for b, lay in enumerate(layouts)]
            out["mean_embedding"] = stack(pooled, layouts)
        if "vision" in arms:  # vist's own path: its memory of the pages, at the slots' positions
            memory = model.memory(batch["pages"])
            out["vision"] = (memory.tokens, memory.mask, memory.positions)
        return out, layouts

    held.ensure(continuation + copies)
    held_batches = []
    for kind, ws in (("copy", copies), ("continuation", continuation)):
        for i in range(0, len(ws), 8):
            b = held.batch(ws[i : i + 8])
            states = teacher.memory.states(*b["distant"])
            held_batches.append((kind, ws[i : i + 8], b, states))

    @torch.no_grad()
    def held_error() -> dict:
        """The regression's error on the held-out windows: vist's memory against the teacher's in vist's layout."""
        errors, cosines, weights = [], [], []
        for _, ws, b, states in held_batches:
            reads, _ = memories(held, ws, b, ("vision", "teacher_slots"), states)
            (vision, mask, _), (target, _, _) = reads["vision"], reads["teacher_slots"]
            error, cosine = regression_error(vision, target, mask, gain)
            errors.append(error.item())
            cosines.append(cosine.item())
            weights.append(mask.sum().item())
        total = sum(weights)
        return {
            "error": round(sum(e * w for e, w in zip(errors, weights)) / total, 4),
            "cosine": round(sum(c * w for c, w in zip(cosines, weights)) / total, 4),
        }

    # 1. regression
    curve = [{"step": 0, **held_error()}]
    print(json.dumps(curve[-1]), flush=True)
    opt = torch.optim.AdamW(resampler.parameters(), lr=config.lr, weight_decay=0.01)
    warmup = max(1, config.steps // 20)
    t1 = time.perf_counter()
    with progress_bar(config.steps, "regression", enabled=config.progress and config.steps > 0) as advance:
        for step in range(config.steps):
            scale = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / max(1, config.steps)))
            for group in opt.param_groups:
                group["lr"] = config.lr * scale
            picks = random.Random(f"{config.seed}-{step}").sample(images.starts, config.batch)
            feats, mask, target, filled = images.batch(picks)
            loss, _ = regression_error(resampler(feats, mask).tokens, target, filled, gain)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(resampler.parameters(), 1.0)
            opt.step()
            advance()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                curve.append({"step": step + 1, "train_loss": round(loss.item(), 4), **held_error()})
                print(json.dumps(curve[-1]), flush=True)
    regression_seconds = time.perf_counter() - t1

    @torch.no_grad()
    def evaluate(arms=("none", "teacher", "teacher_slots", "mean_embedding", "vision")) -> dict:
        per_window: dict[str, list[float]] = {}
        ratio = []
        for kind, ws, b, states in held_batches:
            reads, layouts = memories(held, ws, b, arms, states)
            ratio += [len(lay.slots) / max(1, int(lay.filled.sum())) for lay in layouts]
            results = {}
            if "none" in arms:
                results["none"] = teacher.read_nll(b, None)
            if "teacher" in arms:
                results["teacher_own"] = teacher.nll(b, "own", states)
                results["teacher_other"] = teacher.nll(b, "other", states)
            for arm in ("teacher_slots", "mean_embedding", "vision"):
                if arm in arms:
                    read = reads[arm]
                    results[f"{arm}_own"] = teacher.read_nll(b, read)
                    results[f"{arm}_other"] = teacher.read_nll(b, tuple(x.roll(1, 0) for x in read))
            for name, (total, count) in results.items():
                per_window.setdefault(f"{kind}_{name}", []).extend((total / count).tolist())
        table = _table(per_window)
        table["text_tokens_per_memory_token"] = round(sum(ratio) / len(ratio), 3)
        return table

    after_regression = evaluate()
    print(json.dumps({k: v["mean"] if isinstance(v, dict) else v for k, v in after_regression.items()}), flush=True)

    # 2. end to end
    e2e_curve, final = [], after_regression
    if config.e2e_steps:
        params = list(resampler.parameters()) if config.e2e_memory == "vision" else []
        params += list(teacher.xattn.parameters())
        gates = [b.gate for b in teacher.xattn.blocks if b.gate is not None]
        rest = [p for p in params if all(p is not g for g in gates)]
        groups = [{"params": rest, "peak": config.e2e_lr}, {"params": gates, "peak": config.e2e_lr * 20}]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.e2e_lr, weight_decay=0.0)
        warmup = max(1, config.e2e_steps // 20)
        with progress_bar(config.e2e_steps, "end to end", enabled=config.progress) as advance:
            for step in range(config.e2e_steps):
                for group in opt.param_groups:
                    group["lr"] = group["peak"] * min(1.0, (step + 1) / warmup)
                windows = windows_for(train, step, 0, config.e2e_batch, config.seed, config.copy)
                batch = train.batch(windows)
                reads, _ = memories(train, windows, batch, (config.e2e_memory,))
                total, count = teacher.read_nll(batch, reads[config.e2e_memory])
                loss = total.sum() / count.sum()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                advance()
                e2e_curve.append({"step": step + 1, "loss": round(loss.item(), 4)})
        final = evaluate(("none", "teacher_slots", "mean_embedding", "vision"))
        print(json.dumps({k: v["mean"] if isinstance(v, dict) else v for k, v in final.items()}), flush=True)

    return {
        "command": command(config),
        "config": asdict(config),
        "teacher": teacher_path,
        "held_out_windows": {"copy": len(copies), "continuation": len(continuation)},
        "regression_seconds": round(regression_seconds),
        "seconds": round(time.perf_counter() - t0),
        "regression": curve,
        "after_regression": after_regression,
        "end_to_end": e2e_curve,
        "final": final,
        "gates": [round(math.tanh(b.gate.item()), 4) for b in teacher.xattn.blocks if b.gate is not None],
    }, model


def command(config: DistillConfig) -> str:
    """The command line that reruns `config` (where it writes and how many threads aside)."""
    from gistify_bench.options import rerun_command

    return rerun_command(PROG, config)


def parse(argv: list[str] | None = None) -> DistillConfig:
    from gistify_bench.options import parse_config

    return parse_config(DistillConfig, PROG, __doc__, argv)


def main(argv=None) -> int:
    from gistify_bench.options import resolve_out

    config = parse(argv)
    result, model = run(config)
    out = resolve_out(config.out, "vist", "distill")
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.json").write_text(json.dumps(result, indent=2) + "\n")
    card = {"trained_by": result["command"], "held_out": result["final"], "llm": None}
    model.save(out / "vist.safetensors", card, dtype=torch.float32)  # VistModel.from_pretrained(out / ...)
    print(json.dumps(result["final"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
