"""vist's teacher: a memory that provably can be read, then how far it can be compressed (issue 13, steps 2-3).

    python -m gistify_bench.train.teacher [--layer 18] [--xattn-layers 18,19,20,21,22,23] [--r 1] [--steps 200]
                                          [--init DIR/teacher.safetensors] [--out DIR]

The memory is the frozen LLM's own hidden states of the distant text at decoder layer `--layer` (the base model
cut after that layer: gistify.text.fast.build_trunk), one memory token per text token, so it holds every token in
context, as CEPE's contextual encoder does (arXiv 2402.16617). With `--r R > 1`, every R consecutive states are
pooled into one by a small trained layer (a linear map of their concatenation, initialised as their mean;
`--pool mean` keeps the untrained mean, the control), at the mean of their positions: the compressed memory that
vist's vision path is then distilled to produce (step 4).

The LLM reads the memory through vist's cross-attention blocks (gistify.vist.inject, with issue 13's reader
fixes: float32 blocks copied from each layer's self-attention, the memory RMS-normalised, a tanh gate per block,
rotary positions), in the decoder layers `--xattn-layers`; only the blocks (and the pool) train. The defaults are
the measured teacher (docs/methods.md §3.10): layer 18's states, read by blocks in layers 18-23, where one block
of SmolLM2 reads its own layer's states with no training. The first `--copy-steps` steps are all copy windows
(the proximal window repeats a passage of the distant part: reading is all there is to learn), the rest mix a
share `--copy` of them with continuation windows (the text that follows).

Held out (eval articles; gistify_bench.vist.corpus windows), every `--eval-every` steps: the per-token NLL of copy
and continuation windows reading their own memory and another window's (the control that tells reading from a
bias), and at step 0 with no memory at all; at the end, per-window means with 95% bootstrap intervals.

Writes DIR/teacher.json (the settings, the curve, the final table) and DIR/teacher.safetensors (the blocks and
the pool); DIR (--out) defaults to ./results/vist/teacher.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from gistify_bench.device import check_device, on_cpu, to_device, use_device
from gistify_bench.options import check, option
from gistify_bench.train.checkpoint import Checkpoint
from gistify_bench.vist.corpus import Windowing, eval_windows, text_corpora, windows_for

PROG = "gistify_bench.train.teacher"


@dataclass
class TeacherConfig:
    """The teacher's settings and where its result goes."""

    layer: int = option(18, "decoder layer whose hidden states (its input) are the memory")
    r: int = option(1, "consecutive states pooled into one memory token")
    pool: str = option("linear", "how R states become one: a trained linear map, or their mean", ("linear", "mean"))
    steps: int = option(200, "optimizer steps (0: evaluate only)")
    lr: float = option(5e-4, "peak learning rate (linear warm-up over the first 5% of the steps, then constant)")
    gate_lr: float = option(1e-2, "the gates' peak learning rate (Adam moves a scalar about lr a step)")
    batch: int = option(4, "windows per batch")
    copy_steps: int = option(100, "first steps with copy windows only")
    copy: float = option(0.5, "share of copy windows after those steps")
    xattn_layers: str = option("18,19,20,21,22,23", "comma-separated decoder layers that get a cross-attention block")
    out_init: str = option("copy", "the blocks' o_proj initialisation", ("copy", "normal", "zero"))
    gate: float = option(0.0, "each block's tanh gate at step 0 (-1: no gate)")
    rope: bool = option(True, "rotary positions on queries and memory keys")
    memory_norm: bool = option(True, "RMS-normalise the memory before k/v")
    distant_tokens: int = option(512, "most LLM tokens of the distant part")
    proximal_tokens: int = option(128, "the proximal window")
    eval_n: int = option(16, "held-out windows of each kind")
    eval_every: int = option(100, "steps between held-out evaluations")
    seed: int = option(0, "batches are a function of (seed, step)")
    threads: int = option(0, "torch threads (0: leave as is)")
    device: str = option("cpu", "where steps and evaluations run: cpu, cuda or cuda:N (gistify_bench.device)")
    init: str | None = option(None, "a teacher.safetensors to start the blocks (and a pool of the same R) from")
    cache: str | None = option(None, "a vist trainer's --out folder (its features/ give the articles' lines)")
    progress: bool = option(True, "show a progress bar")
    out: str | None = option(None, "where teacher.json and teacher.safetensors go (default ./results/vist/teacher)")
    resume: bool = option(False, "continue from OUT/checkpoint.pt (weights, optimizer, step) when it exists")
    stop_after: float = option(0.0, "save a checkpoint and stop after this many minutes (0: run to the end)")
    stop_at_step: int = option(0, "save a checkpoint and stop after this step (0: run to the end)")
    save_every: int = option(50, "steps between checkpoints (0: only when stopping and at the end)")

    def __post_init__(self):
        check(self)
        check_device(self.device)
        for name in ("layer", "r", "batch", "distant_tokens", "proximal_tokens", "eval_n", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.stop_after < 0 or self.stop_at_step < 0 or self.save_every < 0:
            raise ValueError("stop_after, stop_at_step and save_every must be >= 0")
        if self.steps < 0 or self.copy_steps < 0 or not 0 <= self.copy <= 1 or min(self.lr, self.gate_lr) <= 0:
            raise ValueError("steps and copy_steps must be >= 0, copy in [0, 1], lr and gate_lr positive")
        if not (self.gate == -1 or 0 <= self.gate < 1):
            raise ValueError(f"gate must be in [0, 1), or -1 for no gate, got {self.gate}")
        try:
            if not self.block_layers():
                raise ValueError
        except ValueError:
            raise ValueError(f"xattn_layers must be comma-separated layer indices, got {self.xattn_layers!r}") from None

    def block_layers(self) -> tuple[int, ...]:
        """The decoder layers that get a cross-attention block."""
        return tuple(int(x) for x in self.xattn_layers.split(",") if x.strip())


class TeacherMemory(nn.Module):
    """Distant token ids (B, S) -> memory (B, S / r, d), its mask and its positions relative to the proximal text.

    The states come from the frozen LLM cut after `layer` decoder layers (not a submodule: its weights are the
    LLM's and are never saved with the teacher); `pool` is the only trained part (r > 1, "linear")."""

    def __init__(self, lm: nn.Module, layer: int, r: int = 1, pool: str = "linear"):
        super().__init__()
        from gistify.text.fast import build_trunk

        if not 1 <= layer <= lm.config.num_hidden_layers:
            raise ValueError(f"layer must be in 1..{lm.config.num_hidden_layers}, got {layer}")
        self._trunk = (build_trunk(lm, layer),)  # a tuple: kept out of this module's parameters
        self.r = r
        d = lm.config.hidden_size
        self.pool = None
        if r > 1 and pool == "linear":
            self.pool = nn.Linear(r * d, d)
            with torch.no_grad():  # starts as the mean of the r states
                self.pool.weight.copy_(torch.cat([torch.eye(d) / r] * r, dim=1))
                self.pool.bias.zero_()

    @torch.no_grad()
    def states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, S) -> (B, S, d) float32: hidden_states[layer] of the distant text, padding zeroed."""
        h = self._trunk[0](input_ids=ids, attention_mask=mask).last_hidden_state.float()
        return h * mask[..., None]

    def compress(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """States (B, S, d), mask (B, S) -> memory (B, ceil(S / r), d), mask, positions (B, ceil(S / r)): the
        mean position of each group's tokens, the last text token of the distant part at -1."""
        from gistify.vist.inject import default_positions

        mask = mask.bool()
        positions = default_positions(mask)
        if self.r == 1:
            return h, mask, positions
        b, s, d = h.shape
        pad = -s % self.r
        if pad:
            h, mask = nn.functional.pad(h, (0, 0, 0, pad)), nn.functional.pad(mask, (0, pad))
            positions = nn.functional.pad(positions, (0, pad))
        g = (s + pad) // self.r
        m = mask.view(b, g, self.r).float()
        count = m.sum(-1)
        pooled_positions = (positions.view(b, g, self.r) * m).sum(-1) / count.clamp(min=1)
        if self.pool is None:
            memory = h.view(b, g, self.r, d).sum(2) / count.clamp(min=1)[..., None]
        else:
            memory = self.pool(h.reshape(b, g, self.r * d))
        return memory, count > 0, pooled_positions

    def forward(self, ids: torch.Tensor, mask: torch.Tensor):
        return self.compress(self.states(ids, mask), mask)


class Teacher(nn.Module):
    """The trained parts: the cross-attention blocks and the memory's pool; `nll` scores a corpus batch."""

    def __init__(self, lm: nn.Module, config: TeacherConfig):
        super().__init__()
        from gistify.vist.inject import CrossAttentionConfig, VistCrossAttention

        self.lm = (lm,)  # frozen, not saved
        layers = config.block_layers()
        reader = CrossAttentionConfig(
            out_init=config.out_init,
            layers=layers,
            memory_norm=config.memory_norm,
            gate=None if config.gate == -1 else config.gate,
            rope=config.rope,
        )
        self.xattn = VistCrossAttention(lm, reader)
        self.memory = TeacherMemory(lm, config.layer, config.r, config.pool)

    def nll(self, batch: dict, memory: str = "own", cached: tuple | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per window, the summed NLL of the proximal tokens after the first and their count: (B,), (B,).
        memory: "own", "other" (the next window's: the control) or "none"; cached: the batch's trunk states."""
        if memory == "none":
            return self.read_nll(batch, None)
        dids, dmask = batch["distant"]
        states = cached if cached is not None else self.memory.states(dids, dmask)
        read = self.memory.compress(states, dmask)
        return self.read_nll(batch, tuple(x.roll(1, 0) for x in read) if memory == "other" else read)

    def read_logits(self, batch: dict, read: tuple | None, lm: nn.Module | None = None) -> torch.Tensor:
        """(B, T, V) logits of the proximal window reading `read` = (tokens (B, S, D), mask (B, S), positions
        (B, S)), or no memory (None); lm: another copy of the frozen LLM (a bfloat16 one for training steps)."""
        lm = lm if lm is not None else self.lm[0]
        ids, attention = batch["ids"]
        if read is None:
            with torch.no_grad():
                return lm(input_ids=ids, attention_mask=attention).logits
        tokens, mask, positions = read
        with self.xattn.attach(lm, tokens, mask, positions=positions):
            return lm(input_ids=ids, attention_mask=attention).logits

    def read_nll(
        self, batch: dict, read: tuple | None, lm: nn.Module | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Like `nll`, reading any memory (see read_logits)."""
        ids, attention = batch["ids"]
        logits = self.read_logits(batch, read, lm)
        ce = nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none")
        use = attention[:, 1:].float()
        return (ce * use).sum(1), use.sum(1)

    def trained_state(self) -> dict[str, torch.Tensor]:
        """The blocks and the pool (the LLM and its trunk are held outside the module tree)."""
        return dict(self.state_dict())


def _load_init(teacher: Teacher, path: str) -> list[str]:
    """Start from a saved teacher: its blocks always, its pool when the shapes agree. Returns what was loaded."""
    from safetensors.torch import load_file

    state = load_file(path)
    own = teacher.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k.startswith("xattn.") and k not in usable]
    if missing:
        raise ValueError(f"{path} does not fit these blocks (missing or reshaped: {missing[:3]})")
    teacher.load_state_dict(usable, strict=False)
    return sorted({k.split(".")[0] for k in usable})


def _table(per_window: dict[str, list[float]]) -> dict:
    """Each arm's per-window values summarised: mean, median, 95% bootstrap interval, count."""
    from gistify_bench.stats import summary

    return {key: summary(values) for key, values in per_window.items()}


def run(config: TeacherConfig, lm=None, tokenizer=None, corpus: dict | None = None) -> tuple[dict, Teacher]:
    """Train (and evaluate) one teacher: its result (settings, curve, final table, gates) and the teacher."""
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
    lm = lm.float().requires_grad_(False).eval().to(device)
    teacher = Teacher(lm, config)
    loaded = _load_init(teacher, config.init) if config.init else []
    host = VistModel(lm, tokenizer, VistConfig())  # the windows' layout and tokenizer: vist's
    train, held = text_corpora(corpus, host, Windowing(config.distant_tokens, config.proximal_tokens), config.cache)
    rng = random.Random(f"teacher-{config.seed}")
    continuation = eval_windows(held, config.eval_n, config.seed)
    copies = [w.copied(rng) for w in eval_windows(held, config.eval_n, config.seed + 1)]
    held_batches = {
        kind: [to_device(held.batch(ws[i : i + 8]), device) for i in range(0, len(ws), 8)]
        for kind, ws in (("copy", copies), ("continuation", continuation))
    }
    states = {kind: [teacher.memory.states(*b["distant"]) for b in bs] for kind, bs in held_batches.items()}

    @torch.no_grad()
    def evaluate(step: int, memories=("own", "other")) -> tuple[dict, dict]:
        """Per-token NLL of each kind of held-out window for each memory, and the per-window means."""
        point, per_window = {"step": step}, {}
        for kind, batches in held_batches.items():
            for memory in memories:
                totals, counts = zip(*(teacher.nll(b, memory, s) for b, s in zip(batches, states[kind])))
                total, count = torch.cat(totals), torch.cat(counts)
                point[f"{kind}_{memory}"] = round(float(total.sum() / count.sum()), 4)
                per_window[f"{kind}_{memory}"] = (total / count).tolist()
        return point, per_window

    params = [p for p in teacher.parameters() if p.requires_grad]
    gate_params = [b.gate for b in teacher.xattn.blocks if b.gate is not None]
    rest = [p for p in params if all(p is not g for g in gate_params)]
    groups = [{"params": rest, "peak": config.lr}, {"params": gate_params, "peak": config.gate_lr}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=0.0)
    warmup = max(1, config.steps // 20)
    t0 = time.perf_counter()
    ckpt = Checkpoint.of(config, "vist", "teacher")
    saved = ckpt.load() if config.resume else None
    if saved is None:
        baseline, base_windows = evaluate(0, ("none",))
        first, last_windows = evaluate(0)
        curve, start, train_seconds = [first | baseline], 0, 0.0
        print(json.dumps(curve[-1]), flush=True)
    else:  # the run so far: weights, optimizer, step and what it measured
        teacher.load_state_dict(saved["trained"], strict=False)
        opt.load_state_dict(saved["optimizer"])
        curve, start, train_seconds = saved["curve"], saved["step"], saved["train_seconds"]
        base_windows, last_windows = saved["base_windows"], saved["last_windows"]
        print(f"resumed at step {start} of {config.steps}", flush=True)

    def save(step: int) -> None:
        ckpt.save(
            {
                "trained": on_cpu(teacher.trained_state()),
                "optimizer": opt.state_dict(),
                "step": step,
                "curve": curve,
                "train_seconds": train_seconds,
                "base_windows": base_windows,
                "last_windows": last_windows,
            }
        )

    stopped = None
    with progress_bar(config.steps - start, "teacher", enabled=config.progress and config.steps > start) as advance:
        for step in range(start, config.steps):
            tic = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = group["peak"] * min(1.0, (step + 1) / warmup)
            share = 1.0 if step < config.copy_steps else config.copy
            batch = to_device(train.batch(windows_for(train, step, 0, config.batch, config.seed, share)), device)
            total, count = teacher.nll(batch)
            loss = total.sum() / count.sum()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            train_seconds += time.perf_counter() - tic
            advance()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                point, last_windows = evaluate(step + 1)
                curve.append(point | {"train_loss": round(loss.item(), 4)})
                print(json.dumps(curve[-1]), flush=True)
            if ckpt.stop(step + 1) and step + 1 < config.steps:
                stopped = step + 1
                break
            if ckpt.periodic(step + 1):
                save(step + 1)
    if config.steps:
        save(stopped or config.steps)
    if stopped:
        print(f"stopped after step {stopped} of {config.steps}; rerun with --resume to continue", flush=True)
    gates = [round(math.tanh(b.gate.item()), 4) for b in teacher.xattn.blocks if b.gate is not None]
    done = stopped or config.steps
    return {
        "stopped": stopped,
        "command": command(config),
        "config": asdict(config),
        "init_loaded": loaded,
        "memory_tokens_per_text_token": round(1 / config.r, 4),
        "held_out_windows": {"copy": len(copies), "continuation": len(continuation)},
        "seconds": round(time.perf_counter() - t0),
        "seconds_per_step": round(train_seconds / max(1, done), 3),  # optimizer steps only: no set-up, no eval
        "curve": curve,
        "final": _table(last_windows | base_windows),
        "gates": gates,
    }, teacher


def command(config: TeacherConfig) -> str:
    """The command line that reruns `config` (where it writes and how many threads aside)."""
    from gistify_bench.options import rerun_command

    return rerun_command(PROG, config)


def parse(argv: list[str] | None = None) -> TeacherConfig:
    from gistify_bench.options import parse_config

    return parse_config(TeacherConfig, PROG, __doc__, argv)


def main(argv=None) -> int:
    from safetensors.torch import save_file

    from gistify_bench.options import resolve_out

    config = parse(argv)
    result, teacher = run(config)
    out = resolve_out(config.out, "vist", "teacher")
    out.mkdir(parents=True, exist_ok=True)
    (out / "teacher.json").write_text(json.dumps(result, indent=2) + "\n")
    if config.steps:
        state = on_cpu(teacher.trained_state())
        save_file({k: v.contiguous() for k, v in state.items()}, str(out / "teacher.safetensors"))
    print(json.dumps(result["final"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
