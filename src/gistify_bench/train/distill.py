"""vist's vision path distilled into the teacher's memory (issue 13, step 4; issue 24).

    python -m gistify_bench.train.distill [--teacher FILE] [--steps 1500] [--e2e-steps 0] [--out DIR]
                                          [--resume] [--stop-after MINUTES]

The teacher (gistify_bench.train.teacher) reads the frozen LLM's own layer-18 states of a window's distant text,
one per token. vist must read a memory made from pixels, with fewer tokens than the text. Here the memory is the
teacher's in vist's layout (gistify.vist.slots): every rendered line cut into `--slots-per-line` stretches, one
memory token per stretch, the mean of the states of the text tokens drawn in it, at the mean of their text
positions. With 4 stretches of a line of about 10 tokens, the LLM reads about 2.5x fewer tokens than the text.

1. Regression (no LLM pass): vist's resampler (local latents: latent j of an image of 16 lines reads the j-th
   stretch, and every latent reads the others), then `--context-layers` blocks of a causal transformer over the
   window's memory tokens (gistify.vist.context: each token reads the ones before it, as the states it learns
   did), are trained to output each stretch's pooled teacher state. One target everywhere: the states of the
   window's distant text alone, exactly what the teacher reads and what the held-out error scores (issue 24: the
   earlier run trained on states computed with 256+ tokens of article context before each token, a target the
   vision path cannot see; `target_mismatch` in the result measures how far apart the two are). The data: the
   train articles tiled twice by windows (`pool_windows`), their targets computed once and cached. Loss (`--loss`):
   the squared error after the RMS normalisation and gain the first block applies to its memory, relative to the
   target's norm ("states"), or the error of what every block reads of it, its keys and values ("kv").
   The learning rate is constant after a warm-up (`--schedule constant`), so the run length is chosen from the
   held-out curve, not ended by the schedule; "cosine" is the earlier schedule.
2. End to end (`--e2e-steps`): the LM loss on train windows (a share `--copy` of copy windows), plus
   `--e2e-kl` times the KL divergence from the teacher's reading of its own memory in vist's layout to vist's:
   a signal per token of what reading should give. The blocks stay frozen (`--e2e-blocks frozen`): end to end
   they learned to ignore the memory (issue 24: the gates closed), so only the vision path moves and the reader
   the teacher trained stays what it was. The frozen LLM runs in bfloat16 during training steps
   (`--train-dtype`), in float32 for every evaluation.

Held out (eval articles; the teacher's windows: 16 copy and 16 continuation windows), per window: the NLL of the
proximal window with no memory; the teacher's full memory; its memory in vist's layout; the mean-pooled control
(the LLM's input embeddings averaged per stretch: compression without any context or vision); vist's memory;
another window's memory for the last three (the control that tells reading from a bias); and truncation: the
last V tokens of the distant text as text, V the number of vist's memory tokens. Paired differences (vist against
each control, on the same windows) with 95% intervals. The regression's held-out error comes with a constant
predictor's (the mean target), and by slot position and token frequency.

`--resume` continues a stopped run from DIR/checkpoint.pt (weights, optimizer, phase, step, what was measured);
`--stop-after MINUTES` saves and stops in time. Writes DIR/distill.json and DIR/vist.safetensors with its card
vist.json (VistModel.from_pretrained(path) loads them); DIR (--out) defaults to ./results/vist/distill.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gistify_bench.device import check_device, on_cpu, to_device, use_device
from gistify_bench.options import check, default_out, option, resolve_out

PROG = "gistify_bench.train.distill"
# The teacher this project trained (gistify_bench.train.teacher with its defaults), in bfloat16.
COMMITTED_TEACHER = (
    Path(__file__).resolve().parents[3] / "docs" / "results" / "vist" / "teacher" / "teacher-r1.safetensors"
)


@dataclass
class DistillConfig:
    """The distillation's settings and where its result goes."""

    teacher: str = option("", "the teacher's weights (default: the committed docs/results/vist/teacher/teacher-r1)")
    layer: int = option(18, "the teacher's layer (its --layer)")
    xattn_layers: str = option("18,19,20,21,22,23", "the teacher's blocks (its --xattn-layers)")
    distant_tokens: int = option(512, "most LLM tokens of a window's distant part")
    proximal_tokens: int = option(128, "a window's proximal part")
    slots_per_line: int = option(4, "memory tokens per rendered line (stretches of 96 / k encoder tokens)")
    lines_per_image: int = option(16, "lines the resampler reads as one image")
    depth: int = option(2, "resampler blocks")
    context_layers: int = option(2, "causal transformer blocks over a window's memory tokens (0: none)")
    context_window: int = option(256, "the most earlier memory tokens each one reads there")
    loss: str = option("states", "what the regression matches: the states, or each block's keys and values of them",
                       ("states", "kv"))  # fmt: skip
    train_windows: int = option(2000, "most train windows whose teacher memory is the regression's data (cached)")
    steps: int = option(1500, "regression steps")
    batch: int = option(2, "windows per regression step (about 4 images each)")
    lr: float = option(5e-4, "regression learning rate")
    schedule: str = option("constant", "after the warm-up: constant, or cosine to 0 at the last step",
                           ("constant", "cosine"))  # fmt: skip
    warmup: int = option(50, "warm-up steps of both phases")
    e2e_steps: int = option(0, "end-to-end steps (LM loss through the LLM)")
    e2e_batch: int = option(4, "windows per end-to-end step")
    e2e_lr: float = option(1e-4, "end-to-end learning rate (gates x20 when the blocks train)")
    e2e_kl: float = option(1.0, "weight of the KL from the teacher's reading of its memory in vist's layout")
    e2e_blocks: str = option("frozen", "the reader's blocks end to end: frozen, or trained with the vision path",
                             ("frozen", "trained"))  # fmt: skip
    copy: float = option(0.5, "share of copy windows in end-to-end batches")
    e2e_memory: str = option(
        "vision",
        "the memory read end to end: vist's; the mean-pooled control (input embeddings); or the teacher's own states "
        "in vist's layout (a reader trained for pooled memory, the vision path's ceiling); the last two train only "
        "the blocks",
        ("vision", "mean_embedding", "teacher_slots"),
    )
    train_dtype: str = option("bfloat16", "the frozen LLM's dtype in training steps (evaluation: float32)",
                              ("bfloat16", "float32"))  # fmt: skip
    eval_n: int = option(16, "held-out windows of each kind")
    eval_every: int = option(250, "regression steps between held-out errors")
    init: str | None = option(None, "a vist.safetensors of an earlier run to start from")
    seed: int = option(0, "batches are a function of (seed, step)")
    threads: int = option(0, "torch threads (0: leave as is)")
    device: str = option("cpu", "where steps and evaluations run: cpu, cuda or cuda:N (gistify_bench.device)")
    cache: str | None = option(None, "a vist trainer's --out folder (its features/ hold the articles' lines)")
    progress: bool = option(True, "show progress bars")
    out: str | None = option(None, "where distill.json and vist.safetensors go (default ./results/vist/distill)")
    resume: bool = option(False, "continue from OUT/checkpoint.pt when it exists")
    stop_after: float = option(0.0, "save a checkpoint and stop after this many minutes (0: run to the end)")
    stop_at_step: int = option(0, "save and stop after this many steps of both phases together (0: never)")
    save_every: int = option(100, "steps between checkpoints (0: only when stopping and at the end)")

    def __post_init__(self):
        check(self)
        check_device(self.device)
        counts = ("slots_per_line", "lines_per_image", "depth", "batch", "e2e_batch", "eval_n", "train_windows")
        for name in (*counts, "context_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "e2e_steps", "context_layers", "warmup", "e2e_kl", "stop_after", "stop_at_step"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.eval_every < 1 or min(self.lr, self.e2e_lr) <= 0 or self.save_every < 0:
            raise ValueError("eval_every must be >= 1, save_every >= 0, the learning rates positive")
        if 96 % self.slots_per_line:
            raise ValueError(f"slots_per_line must divide the 96 encoder tokens of a line, got {self.slots_per_line}")
        if not 0 <= self.copy <= 1:
            raise ValueError(f"copy must be in [0, 1], got {self.copy}")
        if self.e2e_memory != "vision" and self.e2e_blocks == "frozen" and self.e2e_steps:
            raise ValueError(f"e2e_memory {self.e2e_memory} trains only the blocks: use it with --e2e-blocks trained")


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
    tokens = rows[0].new_zeros(len(rows), s, rows[0].shape[-1]).float()
    mask = torch.zeros(len(rows), s, dtype=torch.bool)
    positions = torch.zeros(len(rows), s)
    for b, (row, lay) in enumerate(zip(rows, layouts)):
        tokens[b, : lay.count] = row.float()
        mask[b, : lay.count] = lay.filled
        positions[b, : lay.count] = lay.positions
    return tokens, mask, positions


# -- the regression's data: window-only teacher states, pooled per stretch, cached ---------------------------------


def pool_windows(train, n: int, seed: int) -> list:
    """The regression's train windows: each article tiled twice with windows of the longest distant part that
    starts at a line (the second tiling offset by half a window), so every line is a target twice, once early and
    once late in a window, for about twice the teacher passes of the text itself; at most n of them (a sample
    fixed by the seed)."""
    by_start: dict[tuple[int, int], object] = {}
    for w in train.windows:  # per (article, first line): the longest window starting there
        key = (w.article, w.first)
        if key not in by_start or w.split > by_start[key].split:
            by_start[key] = w
    pool = []
    for a in range(len(train.texts)):
        starts = sorted(f for art, f in by_start if art == a)
        if not starts:
            continue
        first = by_start[(a, starts[0])]
        for cursor in (starts[0], (first.first + first.split) // 2):
            while True:
                after = [f for f in starts if f >= cursor]
                if not after:
                    break
                w = by_start[(a, after[0])]
                pool.append(w)
                cursor = w.split
    pool = sorted(set(pool), key=lambda w: (w.article, w.first))
    if len(pool) > n:
        pool = sorted(random.Random(f"distill-pool-{seed}").sample(pool, n), key=lambda w: (w.article, w.first))
    return pool


@torch.no_grad()
def window_targets(teacher, corpus, windows: list) -> list[torch.Tensor]:
    """Each window's teacher memory in vist's layout: the states of its distant text alone (what the teacher
    reads), pooled per stretch: [(count, d) float16]."""
    out = []
    device = next(teacher.parameters()).device
    for i in range(0, len(windows), 8):
        part = windows[i : i + 8]
        dids, dmask = to_device(corpus.batch(part)["distant"], device)
        states = teacher.memory.states(dids, dmask)
        n = dmask.sum(1).tolist()
        for b, w in enumerate(part):
            out.append(Layout(*corpus.slots(w)).pool(states[b, : n[b]]).half().cpu())
    return out


def cached_targets(config: DistillConfig, teacher, train, windows: list) -> list[torch.Tensor]:
    """window_targets of the pool, cached next to the line features (they depend on the teacher's layer, the
    layout and the windows, not on its blocks); filled in pieces, so an interrupted run keeps what it computed."""
    from gistify.progress import progress_bar

    keys = [config.layer, config.slots_per_line, config.lines_per_image, config.distant_tokens]
    keys += [[w.article, w.first, w.split] for w in windows] + train.titles
    key = hashlib.sha256(json.dumps(keys).encode()).hexdigest()[:12]
    path = train.lines[0].path.parent / f"distill-window-targets-{key}.pt"
    done: list[torch.Tensor] = torch.load(path) if path.is_file() else []
    if len(done) < len(windows):
        with progress_bar(len(windows) - len(done), "targets", enabled=config.progress) as advance:
            while len(done) < len(windows):
                part = windows[len(done) : len(done) + 64]
                train.ensure(part, log=lambda *_: None)
                done += window_targets(teacher, train, part)
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(done, path.with_suffix(".tmp"))
                path.with_suffix(".tmp").replace(path)
                for _ in part:
                    advance()
    return done


def reader_gain(teacher) -> torch.Tensor:
    """(d,) the first block's memory RMSNorm gain: what its keys and values see of the memory."""
    block = teacher.xattn.blocks[0]
    norm = getattr(block, "memory_norm", None)
    return norm.weight.detach().float() if norm is not None else torch.ones(teacher.lm[0].config.hidden_size)


def _seen(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    return gain * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def slot_errors(pred: torch.Tensor, target: torch.Tensor, gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per slot (...,): the squared error of pred and target (..., d) after RMS normalisation and `gain`, and the
    target's squared norm there (the error's denominator)."""
    p, t = _seen(pred, gain), _seen(target, gain)
    return (p - t).pow(2).sum(-1), t.pow(2).sum(-1)


def regression_error(pred: torch.Tensor, target: torch.Tensor, filled: torch.Tensor, gain: torch.Tensor):
    """Relative squared error and mean cosine of pred and target (..., d) after RMS normalisation and `gain`, over
    the filled slots."""
    err, norm = slot_errors(pred, target, gain)
    w = filled.float()
    error = (err * w).sum() / (norm * w).sum().clamp(min=1e-9)
    cosine = (nn.functional.cosine_similarity(pred, target, dim=-1) * w).sum() / w.sum().clamp(min=1)
    return error, cosine


def kv_error(blocks, pred: torch.Tensor, target: torch.Tensor, filled: torch.Tensor) -> torch.Tensor:
    """The relative squared error of what the blocks read of pred and of target (B, S, D): every block's keys
    (before their rotary positions) and values, over the filled slots."""
    w = filled.float()[:, None, :, None]
    num, den = 0.0, 0.0
    for block in blocks:
        for p, t in zip(block.keys_values(pred), block.keys_values(target)):  # (B, H_kv, S, hd) each
            num = num + ((p - t).pow(2) * w).sum()
            den = den + (t.pow(2) * w).sum()
    return num / den.clamp(min=1e-9)


# -- the run ------------------------------------------------------------------------------------------------------


def run(config: DistillConfig, lm=None, tokenizer=None, corpus: dict | None = None, encoder=None):
    """Distil (and evaluate): the result and the VistModel (its resampler, context and blocks). `encoder`: the
    line encoder (default PP-OCRv6)."""
    from gistify.progress import progress_bar
    from gistify.vist.config import VistConfig
    from gistify.vist.model import VistModel
    from gistify.vist.pve import token_counts
    from gistify_bench.stats import paired, summary
    from gistify_bench.train.checkpoint import Checkpoint
    from gistify_bench.train.teacher import Teacher, TeacherConfig, _load_init
    from gistify_bench.vist.corpus import Windowing, eval_windows, pad, text_corpora

    torch.manual_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = use_device(config.device)
    if lm is None:
        from gistify.models import load

        lm, tokenizer = load()
    lm = lm.float().requires_grad_(False).eval().to(device)
    # training steps read through a bfloat16 copy of the frozen LLM (~1.4x faster on these CPUs); every
    # evaluation through the float32 one
    lm_train = lm if config.train_dtype == "float32" else copy.deepcopy(lm).to(torch.bfloat16)
    teacher_path = config.teacher or str(
        COMMITTED_TEACHER
        if COMMITTED_TEACHER.is_file()
        else default_out("vist", "teacher", "r1", "teacher.safetensors")
    )
    teacher = Teacher(lm, TeacherConfig(layer=config.layer, xattn_layers=config.xattn_layers))
    _load_init(teacher, teacher_path)
    k, per_image = config.slots_per_line, config.lines_per_image
    # vist itself, in the teacher's reading layout: its resampler, context and blocks are what trains and ships
    vist_config = VistConfig(
        lines_per_image=per_image,
        slots_per_line=k,
        dim=None,
        depth=config.depth,
        context_layers=config.context_layers,
        context_window=config.context_window,
        xattn_layers=TeacherConfig(xattn_layers=config.xattn_layers).block_layers(),
    )
    if encoder is None:  # PP-OCRv6 on the CPU with the run's threads (16 cores beside an accelerator encode fast)
        from gistify.vist.encoder import EncoderConfig, TextImageEncoder

        encoder = TextImageEncoder(EncoderConfig(features=vist_config.features, threads=config.threads or 1))
    model = VistModel(lm, tokenizer, vist_config, encoder)
    model.xattn.load_state_dict(teacher.xattn.state_dict())
    teacher.xattn = model.xattn  # the teacher's arms and vist's read through the same blocks
    gates_before = _gates(teacher)
    vision = [model.resampler] + ([model.context] if config.context_layers else [])
    vision_params = [p for m in vision for p in m.parameters()]
    shape = Windowing(config.distant_tokens, config.proximal_tokens)
    train, held = text_corpora(corpus, model, shape, config.cache)
    t0 = time.perf_counter()
    pool = pool_windows(train, config.train_windows, config.seed)
    train.ensure(pool)
    model.resampler.set_feature_stats(*train.feature_stats())
    if config.init:  # a whole vist.safetensors, or a checkpoint of the vision path alone (its blocks: the teacher's)
        from safetensors.torch import load_file

        state = load_file(config.init)
        model.load_trained(state, tuple(p for p in model.trained_parts if any(k.startswith(p + ".") for k in state)))
    targets = [t.to(device) for t in cached_targets(config, teacher, train, pool)]
    target_seconds = time.perf_counter() - t0
    print(f"{len(pool)} train windows' targets in {target_seconds:.0f} s", flush=True)
    gain = reader_gain(teacher)
    mean_target = _mean_target(targets)

    # held-out windows: the teacher's
    erng = random.Random(f"teacher-{config.seed}")
    continuation = eval_windows(held, config.eval_n, config.seed)
    copies = [w.copied(erng) for w in eval_windows(held, config.eval_n, config.seed + 1)]
    embed = lm.get_input_embeddings()
    held.ensure(continuation + copies)
    held_batches = []
    for kind, ws in (("copy", copies), ("continuation", continuation)):
        for i in range(0, len(ws), 8):
            b = to_device(held.batch(ws[i : i + 8]), device)
            layouts = [Layout(*held.slots(w)) for w in ws[i : i + 8]]
            states = teacher.memory.states(*b["distant"])
            n = b["distant"][1].sum(1).tolist()
            slots = stack([lay.pool(states[j, : n[j]]) for j, lay in enumerate(layouts)], layouts)
            held_batches.append((kind, b, layouts, states, slots))

    def vision_memory(pages) -> tuple:
        memory = model.memory(pages)
        return memory.tokens, memory.mask, memory.positions

    def mean_embedding(b, layouts) -> tuple:
        dids, dmask = b["distant"]
        n = dmask.sum(1).tolist()
        with torch.no_grad():
            pooled = [lay.pool(embed(dids[j, : n[j]]).float()) for j, lay in enumerate(layouts)]
        return stack(pooled, layouts)

    counts = token_counts(train.texts, tokenizer, lm.config.vocab_size)  # (V,) each token's count in train text

    @torch.no_grad()
    def held_error() -> dict:
        """The regression's held-out error against the teacher's memory in vist's layout, the constant
        predictor's (the train targets' mean), and the model's by slot position and by how rare the slot's rarest
        token is in the train articles."""
        errs, norms, const, lines, stretches, rarity = [], [], [], [], [], []
        for _, b, layouts, _, (target, filled, _) in held_batches:
            pred, mask, _ = vision_memory(b["pages"])
            e, t = slot_errors(pred, target, gain)
            c, _ = slot_errors(mean_target.expand_as(target), target, gain)
            use = mask & filled
            errs.append(e[use]), norms.append(t[use]), const.append(c[use])
            slot = torch.arange(target.shape[1]).expand_as(use)[use]
            lines.append(slot // k), stretches.append(slot % k)
            dids, dmask = b["distant"]
            for j, lay in enumerate(layouts):  # per slot, the train count of its rarest token
                seen = counts[dids[j, : int(dmask[j].sum())]].float()
                rarest = torch.full((target.shape[1],), float("inf")).scatter_reduce(
                    0, torch.as_tensor(lay.slots), seen, "amin"
                )
                rarity.append(rarest[use[j]])
        e, t, c = torch.cat(errs), torch.cat(norms), torch.cat(const)
        line, stretch, rare = torch.cat(lines), torch.cat(stretches), torch.cat(rarity)

        def rel(sel) -> float:
            return round(float(e[sel].sum() / t[sel].sum().clamp(min=1e-9)), 4)

        by_line = {f"lines {lo}-{hi - 1}": rel((line >= lo) & (line < hi)) for lo, hi in ((0, 4), (4, 16), (16, 999))}
        bands = (("rarest token seen < 10 times", 0, 10), ("10-999", 10, 1000), (">= 1000", 1000, float("inf")))
        return {
            "error": rel(torch.ones_like(e, dtype=torch.bool)),
            "constant_error": round(float(c.sum() / t.sum()), 4),
            "by_line": by_line,
            "by_stretch": {f"stretch {j}": rel(stretch == j) for j in range(k)},
            "by_rarity": {name: rel((rare >= lo) & (rare < hi)) for name, lo, hi in bands},
        }

    @torch.no_grad()
    def truncated_nll(b, keep: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per window, the NLL of the proximal tokens after the first (as read_nll scores them) read after the
        last keep[i] tokens of the distant text, as text."""
        dids, dmask = b["distant"]
        ids, attention = b["ids"]
        n, m = dmask.sum(1).tolist(), attention.sum(1).tolist()
        rows = [dids[j, n[j] - keep[j] : n[j]].tolist() + ids[j, : m[j]].tolist() for j in range(len(n))]
        tid, tmask = pad(rows)
        logits = lm(input_ids=tid, attention_mask=tmask).logits[:, :-1].float()
        ce = nn.functional.cross_entropy(logits.transpose(1, 2), tid[:, 1:], reduction="none")
        first = torch.tensor([keep[j] + 1 for j in range(len(n))])  # the second proximal token's index
        use = (torch.arange(1, tid.shape[1])[None] >= first[:, None]) & tmask[:, 1:].bool()
        return (ce * use).sum(1), use.sum(1)

    @torch.no_grad()
    def evaluate(arms: tuple) -> dict:
        """Per window, each arm's NLL per token; then their summaries and the paired differences."""
        per_window: dict[str, list[float]] = {}
        ratio = []
        for kind, b, layouts, states, slots in held_batches:
            reads = {"teacher_slots": slots}
            if "mean_embedding" in arms:
                reads["mean_embedding"] = mean_embedding(b, layouts)
            if "vision" in arms:
                reads["vision"] = vision_memory(b["pages"])
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
            if "truncate" in arms:  # the distant text's last V tokens, V = vist's memory tokens of the window
                results["truncate"] = truncated_nll(b, [int(lay.filled.sum()) for lay in layouts])
            for name, (total, count) in results.items():
                per_window.setdefault(f"{kind}_{name}", []).extend((total / count).tolist())
        return {"per_window": per_window, "text_tokens_per_memory_token": round(sum(ratio) / len(ratio), 3)}

    def tabulate(evaluation: dict, cached: dict | None = None) -> dict:
        """Summaries of every arm (evaluations of arms that cannot have changed taken from `cached`) and the
        paired differences of vist against each control."""
        per_window = (cached or {}) | evaluation["per_window"]
        table = {key: summary(values) for key, values in per_window.items()}
        table["text_tokens_per_memory_token"] = evaluation["text_tokens_per_memory_token"]
        differences = {}
        for kind in ("copy", "continuation"):
            for control in ("mean_embedding_own", "vision_other", "truncate", "none", "teacher_slots_own"):
                a, c = per_window.get(f"{kind}_vision_own"), per_window.get(f"{kind}_{control}")
                if a and c:
                    differences[f"{kind}: vision - {control}"] = paired(a, c)
        return {"table": table, "paired": differences, "per_window": per_window}

    ckpt = Checkpoint.of(config, "vist", "distill")
    saved = ckpt.load() if config.resume else None
    state = {
        "phase": "regression",
        "step": 0,
        "curve": [],
        "after_regression": None,
        "e2e_curve": [],
        "seconds": {"regression": 0.0, "end_to_end": 0.0},  # in optimizer steps only
        "steps_done": {"regression": 0, "end_to_end": 0},
        "target_mismatch": None,
    }
    if saved is not None:
        model.load_trained(saved["trained"])
        state = saved["state"]
        print(f"resumed in the {state['phase']} phase at step {state['step']}", flush=True)
    else:
        state["target_mismatch"] = target_mismatch(teacher, held, continuation + copies, gain)
        state["curve"].append({"step": 0, **held_error()})
        print(json.dumps(state["curve"][-1]), flush=True)

    def save(opt) -> None:
        ckpt.save({"trained": on_cpu(model.trained_state()), "optimizer": opt.state_dict(), "state": state})

    def optimize(opt, loss, params, phase: str, step: int, tic: float) -> None:
        """One optimizer step (gradients clipped to norm 1), counted with its time and as the phase's step."""
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        state["seconds"][phase] += time.perf_counter() - tic
        state["steps_done"][phase] += 1
        state["step"] = step + 1

    def lr_scale(step: int, steps: int) -> float:
        warm = min(1.0, (step + 1) / max(1, config.warmup))
        if config.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * step / max(1, steps)))
        return warm

    stopped = None
    # 1. regression: the blocks are only read (their keys and values for --loss kv), never trained here
    model.xattn.requires_grad_(False)
    opt = torch.optim.AdamW(vision_params, lr=config.lr, weight_decay=0.01)
    if saved is not None and state["phase"] == "regression":
        opt.load_state_dict(saved["optimizer"])
    if state["phase"] == "regression":
        start = state["step"]
        with progress_bar(config.steps - start, "regression", enabled=config.progress and config.steps > start) as adv:
            for step in range(start, config.steps):
                tic = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = config.lr * lr_scale(step, config.steps)
                picks = random.Random(f"{config.seed}-{step}").sample(range(len(pool)), min(config.batch, len(pool)))
                layouts = [Layout(*train.slots(pool[i])) for i in picks]
                target, filled, _ = stack([targets[i] for i in picks], layouts)
                pred, mask, _ = vision_memory([to_device(train.pages(pool[i]), device) for i in picks])
                if config.loss == "kv":
                    loss = kv_error(model.xattn.blocks, pred, target, mask & filled)
                else:
                    loss, _ = regression_error(pred, target, mask & filled, gain)
                optimize(opt, loss, vision_params, "regression", step, tic)
                adv()
                if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                    state["curve"].append({"step": step + 1, "train_loss": round(loss.item(), 4), **held_error()})
                    print(json.dumps(state["curve"][-1]), flush=True)
                if ckpt.stop(step + 1) and step + 1 < config.steps:
                    stopped = step + 1
                    break
                if ckpt.periodic(step + 1):
                    save(opt)
        if stopped is None:
            arms = ("none", "teacher", "teacher_slots", "mean_embedding", "vision", "truncate")
            state["after_regression"] = tabulate(evaluate(arms))
            state["phase"], state["step"] = "end_to_end", 0
            _print_table(state["after_regression"])
            save(opt)

    # 2. end to end (a run whose time or step limit came with the regression stops here, its evaluation saved)
    final = state.get("final") or state["after_regression"]
    if stopped is None and state["phase"] == "end_to_end" and state["step"] < config.e2e_steps:
        if ckpt.stop(config.steps + state["step"]):
            stopped = config.steps + state["step"]
    if stopped is None and config.e2e_steps and state["phase"] == "end_to_end":
        train_blocks = config.e2e_blocks == "trained"
        params = list(vision_params) if config.e2e_memory == "vision" else []
        groups = [{"params": params, "peak": config.e2e_lr}]
        if train_blocks:
            model.xattn.requires_grad_(True)
            gates = [b.gate for b in model.xattn.blocks if b.gate is not None]
            groups[0]["params"] = params + [p for p in model.xattn.parameters() if all(p is not g for g in gates)]
            groups.append({"params": gates, "peak": config.e2e_lr * 20})
        trainable = [p for g in groups for p in g["params"]]
        opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.e2e_lr, weight_decay=0.0)
        if saved is not None and saved["state"]["phase"] == "end_to_end" and saved["state"]["step"]:
            opt.load_state_dict(saved["optimizer"])
        start = state["step"]
        with progress_bar(config.e2e_steps - start, "end to end", enabled=config.progress) as adv:
            for step in range(start, config.e2e_steps):
                tic = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = group["peak"] * min(1.0, (step + 1) / max(1, config.warmup))
                # windows of the pool (their teacher memory is cached: the KL's target costs no trunk pass)
                rng = random.Random(f"{config.seed}-e2e-{step}")
                picks = rng.sample(range(len(pool)), min(config.e2e_batch, len(pool)))
                n_copy = round(config.copy * len(picks))
                windows = [pool[i].copied(rng) if j < n_copy else pool[i] for j, i in enumerate(picks)]
                b = to_device(train.batch(windows), device)
                layouts = [Layout(*train.slots(w)) for w in windows]
                if config.e2e_memory == "vision":
                    read = vision_memory(b["pages"])
                elif config.e2e_memory == "teacher_slots":  # the cached targets: a copy window shares its distant part
                    read = stack([targets[i] for i in picks], layouts)
                else:
                    read = mean_embedding(b, layouts)
                ids, attention = b["ids"]
                logits = teacher.read_logits(b, read, lm_train)[:, :-1].float()
                use = attention[:, 1:].float()
                ce = nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
                lm_loss = (ce * use).sum() / use.sum()
                loss, kl = lm_loss, torch.zeros(())
                if config.e2e_kl and config.e2e_memory != "teacher_slots":  # there the reference is the read itself
                    with torch.no_grad():
                        slots = stack([targets[i] for i in picks], layouts)
                        reference = teacher.read_logits(b, slots, lm_train)[:, :-1].float().log_softmax(-1)
                    kl = (reference.exp() * (reference - logits.log_softmax(-1))).sum(-1)
                    kl = (kl * use).sum() / use.sum()
                    loss = lm_loss + config.e2e_kl * kl
                optimize(opt, loss, trainable, "end_to_end", step, tic)
                state["e2e_curve"].append({"step": step + 1, "lm": round(lm_loss.item(), 4), "kl": round(kl.item(), 4)})
                adv()
                if ckpt.stop(config.steps + step + 1) and step + 1 < config.e2e_steps:
                    stopped = config.steps + step + 1
                    break
                if ckpt.periodic(config.steps + step + 1):
                    save(opt)
        if stopped is None:
            # the arms the end-to-end steps cannot change are read from the evaluation after the regression
            if train_blocks:
                arms = ("none", "teacher", "teacher_slots", "mean_embedding", "vision", "truncate")
                final = tabulate(evaluate(arms))
            else:
                unchanged = ("none", "teacher_own", "teacher_other", "teacher_slots", "mean_embedding", "truncate")
                cached = {
                    key: v
                    for key, v in state["after_regression"]["per_window"].items()
                    if key.split("_", 1)[1].startswith(unchanged)
                }
                final = tabulate(evaluate(("vision",)), cached)
            state["phase"], state["final"] = "done", final
            _print_table(final)
            save(opt)
    if stopped is not None:
        save(opt)
        print(f"stopped at step {state['step']} of the {state['phase']} phase; rerun with --resume", flush=True)
    seconds = state["seconds"]
    return {
        "command": command(config),
        "config": asdict(config),
        "teacher": str(teacher_path),
        "stopped": stopped,
        "train_windows": len(pool),
        "held_out_windows": {"copy": len(copies), "continuation": len(continuation)},
        "target_seconds": round(target_seconds),
        "seconds": round(time.perf_counter() - t0),
        # optimizer steps only: no set-up, no targets, no evaluation
        "seconds_per_step": {k: round(v / max(1, state["steps_done"][k]), 3) for k, v in seconds.items()},
        "target_mismatch": state["target_mismatch"],
        "regression": state["curve"],
        "after_regression": state["after_regression"],
        "end_to_end": state["e2e_curve"],
        "final": final,
        "gates_before": gates_before,
        "gates": _gates(teacher),
    }, model


def _gates(teacher) -> list[float]:
    return [round(math.tanh(b.gate.item()), 4) for b in teacher.xattn.blocks if b.gate is not None]


def _mean_target(targets: list[torch.Tensor]) -> torch.Tensor:
    """(d,) the mean of the train targets over their filled slots: the constant predictor."""
    total, count = 0.0, 0
    for t in targets:
        filled = t.float().abs().sum(-1) > 0
        total, count = total + t.float()[filled].sum(0), count + int(filled.sum())
    return total / max(1, count)


@torch.no_grad()
def target_mismatch(teacher, held, windows: list, gain: torch.Tensor, context: int = 256) -> dict:
    """How far the earlier run's target (each token's state with at least `context` tokens of its article before
    it) is from the one target used now (the state of the window's distant text alone), pooled per stretch, on
    held-out windows: the relative error of one against the other, the floor that target put under the old
    held-out error."""
    errs, norms = [], []
    for w in windows:
        lf = held.lines[w.article]
        start, end = int(lf.spans[w.first, 0]), int(lf.spans[w.split - 1, 1])
        text = held.texts[w.article]
        tok = held.model.tokenizer
        before = tok(text[:start], add_special_tokens=False)["input_ids"][-context:]
        own = tok(text[start:end], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([before + own])
        states = teacher.memory.states(ids, torch.ones_like(ids))[0, len(before) :]
        alone = teacher.memory.states(torch.tensor([own]), torch.ones(1, len(own), dtype=torch.int64))[0]
        lay = Layout(*held.slots(w))
        if len(lay.slots) != len(own):  # tokenised apart from its context, the text split otherwise: skip it
            continue
        e, t = slot_errors(lay.pool(states), lay.pool(alone), gain)
        errs.append(e[lay.filled]), norms.append(t[lay.filled])
    e, t = torch.cat(errs), torch.cat(norms)
    return {"relative_error": round(float(e.sum() / t.sum()), 4), "windows": len(errs), "context_tokens": context}


def _print_table(tab: dict) -> None:
    means = {k: v["mean"] for k, v in tab["table"].items() if isinstance(v, dict)}
    print(json.dumps(means), flush=True)
    print(json.dumps({k: [v["mean"], v["ci95"]] for k, v in tab["paired"].items()}), flush=True)


def command(config: DistillConfig) -> str:
    """The command line that reruns `config` (where it writes, threads and stopping aside)."""
    from gistify_bench.options import rerun_command

    return rerun_command(PROG, config)


def parse(argv: list[str] | None = None) -> DistillConfig:
    from gistify_bench.options import parse_config

    return parse_config(DistillConfig, PROG, __doc__, argv)


def main(argv=None) -> int:
    config = parse(argv)
    result, model = run(config)
    out = resolve_out(config.out, "vist", "distill")
    out.mkdir(parents=True, exist_ok=True)
    (out / "distill.json").write_text(json.dumps(result, indent=2) + "\n")
    if result["stopped"] is None:
        card = {"trained_by": result["command"], "held_out": result["final"]["table"], "llm": None}
        model.save(out / "vist.safetensors", card, dtype=torch.bfloat16)  # VistModel.from_pretrained(out / ...)
        # the vision path alone (its blocks are the teacher's, committed apart): small enough to commit, and what
        # a later run starts from (--init)
        vision = tuple(p for p in ("resampler", "context") if p in model.trained_parts)
        model.save(out / "vision.safetensors", {"trained_by": result["command"], "llm": None}, parts=vision)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
