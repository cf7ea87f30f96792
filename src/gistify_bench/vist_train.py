"""Train vist (gistify.vist.model): one command, with progress, checkpoints and resumption.

    python -m gistify_bench.vist_train [--steps 150] [--batch 8] [--inject xattn|prefix] [--no-pve]
                                       [--mask frequency|random|lowest|none] [--out DIR] [--ship]

Data: the Wikipedia "train" articles (gistify_bench.data); the held-out numbers come from "eval" articles, never
trained on. Each article is rendered once in lines (Layout.line()) and every line is encoded once by the frozen
PP-OCRv6 encoder (~35 ms a line on one thread; ~13k lines for the train split), cached on disk as float16 in
DIR/features, so reruns, resumed runs and ablations read features only. The resampler standardises the
features with their per-channel mean and standard deviation over the train articles' text tokens (saved with
the weights; gistify.vist.resampler says why: without it every run collapsed to one memory). A training sample
is a window of an article: the whole lines before a line start, up to --distant-tokens LLM tokens, are the
distant part (read as images); the --proximal-tokens tokens from that line start are the proximal window, read
as text (research/methods.md §3.1, §3.9: T_e 512, T_d 128 on CPU).

Loss (§3.5-3.6): L = L_LM + w * L_PVE. L_LM is the next-token cross-entropy of the proximal window with the
distant part as memory. L_PVE is InfoNCE between the mean CLS output of a sample's images (through a linear head)
and the mean frozen LLM input embedding of its distant tokens, half of them masked, frequent tokens first
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
Weights (bfloat16, < 30 MB) and a card json go to DIR; --ship copies them to src/gistify/vist/vist.{safetensors,json}.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gistify.progress import track
from gistify.rendering import Rendering, Row, render
from gistify.vist.config import WEIGHTS, VistConfig, card_path
from gistify.vist.memory import Pages, group_lines
from gistify.vist.model import VistModel
from gistify.vist.pve import FeatureQueue, PVEConfig, mask_positions, pve_loss, text_features, token_counts


def default_dir() -> Path:
    from gistify.models import cache_dir

    return cache_dir().parent / "vist_train"


# -- encoder features, per article line, cached -----------------------------------------------------------------


def _fingerprint(config: VistConfig, encoder) -> str:
    model = getattr(encoder, "_model", None)  # TextImageEncoder: its ONNX file's hash; others: their class
    name = model[3] if isinstance(model, tuple) else type(encoder).__name__
    blob = json.dumps([config.layout().to_dict(), config.features, name], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


class LineFeatures:
    """The encoder features of every line of one article, computed on demand and kept in an .npz.

    spans (n, 2): each line's characters; features (n, T, D) float16, mask (n, T) bool; blank lines are never
    encoded (their tokens are all masked)."""

    def __init__(self, text: str, config: VistConfig, encoder, path: Path):
        self.text, self.config, self.encoder, self.path = text, config, encoder, path
        self._rendering: Rendering | None = None
        if path.is_file():
            with np.load(path) as f:
                self.spans, self.features, self.mask, self.have = f["spans"], f["features"], f["mask"], f["have"]
        else:
            r = self.rendering
            self.spans = np.array([row.span for row in r.rows], dtype=np.int64).reshape(-1, 2)
            n, t = len(self.spans), config.tokens_per_line
            from gistify.vist.encoder import WIDTHS

            self.features = np.zeros((n, t, WIDTHS[config.features]), dtype=np.float16)
            self.mask = np.zeros((n, t), dtype=bool)
            self.have = self.spans[:, 0] == self.spans[:, 1]  # blank lines: nothing to encode
            self._rendering = None  # ~100 kB per line image: rendered again only if lines must be encoded

    @property
    def rendering(self) -> Rendering:
        if self._rendering is None:
            self._rendering = render(self.text, self.config.layout())
        return self._rendering

    def __len__(self) -> int:
        return len(self.spans)

    def missing(self, lines) -> list[int]:
        return [i for i in lines if not self.have[i]]

    def ensure(self, lines, chunk: int = 32, advance=None) -> None:
        """Encode the lines of `lines` not yet encoded, and save."""
        todo = self.missing(lines)
        if not todo:
            return
        r = self.rendering
        for s in range(0, len(todo), chunk):
            part = todo[s : s + chunk]
            sub = Rendering(
                r.text, r.layout, [r.images[i] for i in part],
                [Row(k, 0, r.rows[i].span, r.rows[i].end) for k, i in enumerate(part)], r.fonts,
            )  # fmt: skip
            e = self.encoder.encode(sub)
            self.features[part] = e.features.numpy().reshape(len(part), -1, self.features.shape[-1])
            self.mask[part] = e.mask.numpy().reshape(len(part), -1)
            self.have[part] = True
            if advance:
                for _ in part:
                    advance()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, spans=self.spans, features=self.features, mask=self.mask, have=self.have)
        tmp.replace(self.path)
        self._rendering = None  # ~100 kB per line image: do not keep them

    def pages(self, first: int, end: int) -> Pages:
        feats = torch.from_numpy(self.features[first:end].astype(np.float32))
        return group_lines(feats, torch.from_numpy(self.mask[first:end]), self.config.lines_per_image)


# -- windows ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Lines [first, split) of article `article` are the distant part; the proximal window starts at line `start`
    (default: split, the text that follows; a line inside the distant part makes a copy window, see `copied`)."""

    article: int
    first: int
    split: int
    start: int | None = None

    @property
    def proximal_line(self) -> int:
        return self.split if self.start is None else self.start

    def copied(self, rng: random.Random) -> Window:
        """The same distant part, the proximal window starting at one of its lines (a reading curriculum,
        ICAE-style; --copy): what it repeats can be predicted only by reading the memory. It runs
        proximal_tokens tokens, so one that starts in the last ~13 lines runs on past the split into the
        continuation (that part is an ordinary proximal window)."""
        return dataclasses.replace(self, start=rng.randrange(self.first, self.split))


class Corpus:
    """Articles with their line features and the windows a sample can be."""

    def __init__(self, texts: dict[str, str], model: VistModel, encoder, folder: Path, args, tag: str):
        self.titles = list(texts)
        self.texts = [texts[t] for t in self.titles]
        self.model, self.args = model, args
        fp = _fingerprint(model.config, encoder)
        self.lines = []
        for title, text in zip(self.titles, self.texts):
            digest = hashlib.sha256(text.encode()).hexdigest()[:8]
            slug = "".join(ch if ch.isalnum() else "_" for ch in title.lower())[:60]
            self.lines.append(LineFeatures(text, model.config, encoder, folder / f"{tag}-{slug}-{digest}-{fp}.npz"))
        self.windows = [w for a in range(len(self.texts)) for w in self._windows(a)]

    def _windows(self, a: int) -> list[Window]:
        text, lf = self.texts[a], self.lines[a]
        enc = self.model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = np.array([s for s, _ in enc["offset_mapping"]], dtype=np.int64)
        line_starts = lf.spans[:, 0]
        tok_at = np.searchsorted(starts, line_starts)  # index of the first token starting at or after each line
        out = []
        for j in range(1, len(lf)):
            if lf.spans[j, 0] == lf.spans[j, 1] or len(starts) - tok_at[j] < self.args.proximal_tokens + 8:
                continue
            # the earliest line i such that lines [i, j) hold at most distant_tokens tokens
            i = int(np.searchsorted(tok_at, tok_at[j] - self.args.distant_tokens, side="left"))
            if tok_at[j] - tok_at[i] >= self.args.distant_tokens // 2:
                out.append(Window(a, i, j))
        return out

    def distant_text(self, w: Window) -> str:
        lf = self.lines[w.article]
        return self.texts[w.article][int(lf.spans[w.first, 0]) : int(lf.spans[w.split - 1, 1])]

    def text_before(self, w: Window) -> str:
        """The distant part as a plain LLM reads it before the proximal window: up to the window's first
        character, so the break between them (a space, a newline) is kept."""
        lf = self.lines[w.article]
        return self.texts[w.article][int(lf.spans[w.first, 0]) : int(lf.spans[w.split, 0])]

    def text_before_ids(self, w: Window) -> list[int]:
        return self.model.tokenizer(self.text_before(w), add_special_tokens=False)["input_ids"]

    def proximal_ids(self, w: Window) -> list[int]:
        text, start = self.texts[w.article], int(self.lines[w.article].spans[w.proximal_line, 0])
        t = self.args.proximal_tokens
        span = 8 * t
        while True:
            ids = self.model.tokenizer(text[start : start + span], add_special_tokens=False)["input_ids"]
            if len(ids) > t or start + span >= len(text):
                return ids[:t]
            span *= 2

    def ensure(self, windows: list[Window] | None = None, log=print) -> None:
        """Encode the lines the windows read (all lines of every article when None)."""
        need: dict[int, set] = {}
        for w in windows if windows is not None else []:
            need.setdefault(w.article, set()).update(range(w.first, w.split))
        if windows is None:
            need = {a: set(range(len(lf))) for a, lf in enumerate(self.lines)}
        todo = {a: self.lines[a].missing(sorted(ls)) for a, ls in need.items()}
        total = sum(len(v) for v in todo.values())
        if not total:
            return
        log(f"encoding {total} lines of {sum(1 for v in todo.values() if v)} articles (cached for later runs)")
        t0 = time.perf_counter()
        from gistify.progress import progress_bar

        with progress_bar(total, "encode", enabled=True) as advance:
            for a, lines in todo.items():
                self.lines[a].ensure(lines, advance=advance)
        log(f"encoded {total} lines in {time.perf_counter() - t0:.0f} s")

    def feature_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(D,), (D,): the mean and standard deviation of every text token's encoder features over the articles
        (accumulated in float64, an article at a time), for the resampler's standardisation."""
        total, squares, n = 0.0, 0.0, 0
        for lf in self.lines:
            x = lf.features[lf.mask].astype(np.float64)  # (tokens, D)
            total, squares, n = total + x.sum(0), squares + (x * x).sum(0), n + len(x)
        if n < 2:
            raise ValueError("the training articles hold fewer than 2 encoded text tokens")
        mean = total / n
        std = np.sqrt(np.maximum(squares / n - mean * mean, 0) * n / (n - 1))
        return torch.from_numpy(mean).float(), torch.from_numpy(std).float().clamp(min=1e-6)

    def batch(self, windows: list[Window]) -> dict:
        pages = [self.lines[w.article].pages(w.first, w.split) for w in windows]
        prox = [self.proximal_ids(w) for w in windows]
        dist = [self.model.tokenizer(self.distant_text(w), add_special_tokens=False)["input_ids"] for w in windows]
        return {
            "pages": pages,
            "ids": _pad(prox),
            "distant": _pad(dist),
            "keys": torch.tensor([[w.article, w.first, w.split] for w in windows], dtype=torch.int64),
            "copy": torch.tensor([w.start is not None for w in windows]),
        }


def _mean(history: list[dict]) -> dict:
    """The mean of each loss over `history` (keys every entry has)."""
    keys = [k for k in history[0] if all(k in h for h in history)] if history else []
    return {k: round(sum(h[k] for h in history) / len(history), 4) for k in keys}


def _pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, : len(r)] = 1
    return ids, mask


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


def windows_for(corpus: Corpus, step: int, micro: int, batch: int, seed: int, copy: float = 0.0) -> list[Window]:
    """The windows of micro-batch `micro` of step `step`: a function of (seed, step, micro) only; a share `copy`
    of them (rounded) are copy windows (Window.copied)."""
    rng = random.Random(f"{seed}-{step}-{micro}")
    windows = rng.sample(corpus.windows, min(batch, len(corpus.windows)))
    n_copy = round(copy * len(windows))
    return [w.copied(rng) if i < n_copy else w for i, w in enumerate(windows)]


def eval_windows(corpus: Corpus, n: int, seed: int) -> list[Window]:
    """n windows, one per article while there are articles (round robin), fixed by the seed."""
    rng = random.Random(f"eval-{seed}")
    by_article: dict[int, list[Window]] = {}
    for w in corpus.windows:
        by_article.setdefault(w.article, []).append(w)
    articles = sorted(by_article)
    rng.shuffle(articles)
    out = []
    while len(out) < n and any(by_article[a] for a in articles):
        for a in articles:
            if by_article[a] and len(out) < n:
                out.append(by_article[a].pop(rng.randrange(len(by_article[a]))))
    return out


def nll_after(model: VistModel, prefixes: list[list[int]], ids: torch.Tensor, mask: torch.Tensor) -> tuple:
    """(B,) summed NLL of the proximal windows `ids` (every token after the first, as VistModel.nll) read by the
    plain LLM after the text tokens `prefixes[i]`, and (B,) how many tokens: the same tokens as VistModel.nll
    scores, with text instead of a memory."""
    rows, scored_at = [], []
    for prefix, row, m in zip(prefixes, ids, mask):
        rows.append(list(prefix) + row[: int(m.sum())].tolist())
        scored_at.append(len(prefix) + 1)
    tid, tmask = _pad(rows)
    scored = torch.arange(tid.shape[1])[None, :] >= torch.tensor(scored_at)[:, None]
    return model.nll(tid, tmask, None, scored)


@torch.no_grad()
def evaluate(model: VistModel, corpus: Corpus, windows: list[Window], batch: int = 8, text: bool = True) -> dict:
    """Mean per-token NLL of the proximal windows (every token after the first): without distant context
    ("base"), with vist ("vist"), with another window's memory ("shuffled"), with the distant text ("text",
    unless `text` is False)."""
    sums = {k: 0.0 for k in ("base", "vist", "shuffled", "text")[: 4 if text else 3]}
    counts = dict.fromkeys(sums, 0)  # per key: a last batch of one window has no shuffle
    model.eval()
    for s in range(0, len(windows), batch):
        part = windows[s : s + batch]
        b = corpus.batch(part)
        ids, mask = b["ids"]
        memory = model.memory(b["pages"])
        for key, mem in (("base", None), ("vist", memory), ("shuffled", memory.roll(1) if len(part) > 1 else None)):
            if mem is None and key == "shuffled":
                continue
            total, n = model.nll(ids, mask, mem)
            sums[key] += total.sum().item()
            counts[key] += n.sum().item()
        if not text:
            continue
        # the ceiling: distant text then the proximal window, scoring the same tokens
        total, n = nll_after(model, [corpus.text_before_ids(w) for w in part], ids, mask)
        sums["text"] += total.sum().item()
        counts["text"] += n.sum().item()
    out = {k: round(v / counts[k], 4) for k, v in sums.items() if counts[k]}
    out["tokens_scored"] = int(counts["base"])
    out["windows"] = len(windows)
    return out


# -- the command ----------------------------------------------------------------------------------------------------


def config_from(args) -> VistConfig:
    return VistConfig(
        inject=args.inject,
        lines_per_image=args.lines_per_image,
        latents=args.latents,
        dim=args.dim or None,
        depth=args.depth,
        heads=args.heads,
        head_dim=args.head_dim,
        xattn_every=args.xattn_every,
        out_init=args.out_init,
        features=args.features,
        local_latents=args.local,
    )


def pve_from(args) -> PVEConfig:
    return PVEConfig(
        weight=args.pve_weight if args.pve else 0.0,
        temperature=args.temperature,
        mask=args.mask,
        ratio=args.mask_ratio,
        queue=args.queue,
    )


def schedule(step: int, steps: int, warmup: float) -> float:
    """The learning-rate factor at `step`: linear warm-up over `warmup` of the steps (at least 10 steps, at most
    half of them: Adam's first steps move every weight by about lr at once), then cosine to 0."""
    w = min(max(10, round(warmup * steps)), max(1, steps // 2))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


def command(args) -> str:
    flags = [f"--steps {args.steps}", f"--batch {args.batch}", f"--accum {args.accum}", f"--lr {args.lr}"]
    flags += [f"--distant-tokens {args.distant_tokens}", f"--proximal-tokens {args.proximal_tokens}"]
    flags += [f"--inject {args.inject}", f"--latents {args.latents}", f"--lines-per-image {args.lines_per_image}"]
    flags += [f"--xattn-every {args.xattn_every}", f"--out-init {args.out_init}", f"--dim {args.dim}"]
    flags += ["--pve" if args.pve else "--no-pve", f"--mask {args.mask}", f"--mask-ratio {args.mask_ratio}"]
    flags += [f"--queue {args.queue}", f"--copy {args.copy}", f"--llm-dtype {args.llm_dtype}", f"--seed {args.seed}"]
    flags += [f"--articles {args.articles}"] if args.articles else []
    flags += ["--local"] if args.local else []
    return "python -m gistify_bench.vist_train " + " ".join(flags)


def train(args, lm=None, tokenizer=None, encoder=None, corpus: dict | None = None) -> dict:
    """Run (or resume) the training `args` describes; returns the card. lm / tokenizer default to the embedded
    SmolLM2, encoder to PP-OCRv6, corpus ({"train": {title: text}, "eval": {...}}) to the Wikipedia splits."""
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
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
    train_texts = dict(list(corpus["train"].items())[: args.articles or None])
    dtype = getattr(torch, args.llm_dtype)
    model = VistModel(lm.to(dtype), tokenizer, config_from(args), encoder)
    encoder = model.encoder
    pve = pve_from(args)
    data = Corpus(train_texts, model, encoder, out / "features", args, "train")
    if not data.windows:
        raise ValueError("no training window fits: articles shorter than --distant-tokens / 2 + --proximal-tokens")
    counts = token_counts(data.texts, tokenizer, lm.config.vocab_size)
    model.set_token_counts(counts, len(data.windows))
    log(f"train: {len(data.texts)} articles, {len(data.windows)} windows, {int(counts.sum())} tokens counted")
    data.ensure(None, log)
    model.resampler.set_feature_stats(*data.feature_stats())

    params = model.trainable_parameters()
    log(f"trainable parameters: {sum(p.numel() for p in params) / 1e6:.2f} M ({args.inject})")
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: schedule(s, args.steps, args.warmup))
    queue = FeatureQueue(pve.queue, lm.config.hidden_size) if pve.weight > 0 and pve.queue else None
    start, history = 0, []
    keys = ("steps", "batch", "accum", "lr", "warmup", "distant_tokens", "proximal_tokens", "articles", "seed", "copy")
    run = {k: getattr(args, k) for k in keys}  # what a resumed run must share with the one it continues
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["config"] != model.config.to_dict() or ck["pve"] != dataclasses.asdict(pve) or ck["run"] != run:
            raise ValueError(f"{ckpt_path} is from another configuration; use another --out or delete it")
        model.load_trained(ck["trained"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        if queue is not None and ck["queue"] is not None:
            queue.load_state_dict(ck["queue"])
        start, history = ck["step"], ck["history"]
        log(f"resumed at step {start} of {args.steps}")
    scores = model.importance()
    model.train()
    t0 = time.perf_counter()
    end = min(args.steps, start + args.stop_after) if args.stop_after else args.steps
    for step in track(range(start, end), end - start, "train", enabled=args.progress):
        opt.zero_grad()
        infos = []
        for micro in range(args.accum):
            batch = data.batch(windows_for(data, step, micro, args.batch, args.seed, args.copy))
            g = torch.Generator().manual_seed((args.seed * 1_000_003 + step * 1009 + micro) % 2**31)
            logged = (step + 1) % args.log_every == 0 and micro == 0  # the plain LLM's loss, for the log
            loss, info = step_loss(model, batch, pve, queue, g, scores, base=logged)
            (loss / args.accum).backward()
            infos.append(info)
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        sched.step()
        history.append({k: sum(i[k] for i in infos) / len(infos) for k in infos[-1]})
        if "base" in infos[0]:
            history[-1]["lm_gain"] = infos[0]["base"] - infos[0].get("lm", infos[0].get("copy"))  # logged micro-batch
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            recent = history[-args.log_every :]
            avg = {k: sum(h[k] for h in recent) / len(recent) for k in recent[-1] if k not in ("base", "lm_gain")}
            if "lm_gain" in history[-1]:
                avg["gain_vs_plain_llm"] = history[-1]["lm_gain"]
            per = (time.perf_counter() - t0) / (done - start)
            log(f"step {done}: " + ", ".join(f"{k} {v:.3f}" for k, v in avg.items()) + f" ({per:.1f} s/step)")
        if done % args.save_every == 0 or done == end:
            state = {
                "trained": {k: v.detach().clone() for k, v in model.trained_state().items()},
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
    if end < args.steps:
        log(f"stopped after step {end} of {args.steps}; rerun the command to resume")
        return {"stopped": end}

    held = Corpus(corpus["eval"], model, encoder, out / "features", args, "eval")
    windows = eval_windows(held, args.eval_n, args.seed)
    held.ensure(windows, log)
    results = evaluate(model, held, windows) if windows else {}
    if results:
        rng = random.Random(f"copy-{args.seed}")
        copies = evaluate(model, held, [w.copied(rng) for w in windows], text=False)
        results |= {f"copy_{k}": v for k, v in copies.items() if k in ("base", "vist", "shuffled")}
        results["vist_gain"] = round(results["base"] - results["vist"], 4)
        if "shuffled" in results:
            results["content_gain"] = round(results["shuffled"] - results["vist"], 4)
        results["ceiling_gain"] = round(results["base"] - results["text"], 4)
    log(f"held-out NLL per token (eval articles): {json.dumps(results)}")
    first, last = history[: args.log_every], history[-args.log_every :]
    card = {
        "model": f"vist: PP-OCRv6 lines (frozen) -> Perceiver resampler -> {args.inject} into "
        f"{getattr(lm.config, '_name_or_path', '') or type(lm).__name__} (frozen)",
        "llm": None,  # the embedded default; from_pretrained loads it
        "training": {
            "data": f"Wikipedia train split, {len(data.texts)} articles, {len(data.windows)} windows",
            "steps": args.steps,
            "batch": args.batch * args.accum,
            "lr": args.lr,
            "distant_tokens": args.distant_tokens,
            "proximal_tokens": args.proximal_tokens,
            "llm_dtype": args.llm_dtype,
            "copy_windows": args.copy,
            "pve": dataclasses.asdict(pve),
            "loss_first": _mean(first),
            "loss_last": _mean(last),
            "seconds": round(time.perf_counter() - t0, 1),
        },
        "held_out": {"split": "Wikipedia eval articles", "nll_per_token": results},
        "command": command(args),
    }
    weights = model.save(out / "vist.safetensors", card, getattr(torch, args.export_dtype))
    size = weights.stat().st_size / 2**20
    log(f"weights: {weights} ({size:.1f} MB)" + (" -- over 30 MB: too large to ship" if size > 30 else ""))
    if args.ship:
        shutil.copy(weights, WEIGHTS)
        shutil.copy(card_path(weights), card_path(WEIGHTS))
        log(f"shipped to {WEIGHTS.parent}")
    return json.loads(card_path(weights).read_text())


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.vist_train", description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--steps", type=int, default=150)
    a("--batch", type=int, default=8, help="windows per micro-batch (PVE's in-batch negatives)")
    a("--accum", type=int, default=1, help="micro-batches per step (the queue carries negatives across them)")
    a("--lr", type=float, default=3e-4, help="peak learning rate (the paper's)")
    a("--warmup", type=float, default=0.04, help="fraction of the steps")
    a("--weight-decay", type=float, default=0.0)
    a("--clip", type=float, default=1.0, help="gradient norm clip")
    a("--distant-tokens", type=int, default=512, help="most LLM tokens of the distant part (T_e)")
    a("--proximal-tokens", type=int, default=128, help="the proximal window, read as text (T_d)")
    a("--inject", choices=["xattn", "prefix"], default="xattn")
    a("--latents", type=int, default=64, help="tokens per image for the LLM")
    a("--lines-per-image", type=int, default=16)
    a("--dim", type=int, default=384, help="resampler width (0: the LLM's)")
    a("--depth", type=int, default=2, help="resampler blocks")
    a("--heads", type=int, default=8, help="resampler attention heads")
    a("--head-dim", type=int, default=64)
    a("--xattn-every", type=int, default=3, help="a cross-attention block every k decoder layers (1: all)")
    a("--out-init", choices=["zero", "normal", "copy"], default="zero", help="cross-attention o_proj init")
    a("--features", choices=["neck", "backbone"], default="neck")
    a("--local", action="store_true", help="each latent reads only its own stretch of the image (ours)")
    a("--pve", action=argparse.BooleanOptionalAction, default=True, help="the PVE loss (--no-pve: LM loss only)")
    a("--pve-weight", type=float, default=1.0)
    a("--mask", choices=["frequency", "random", "lowest", "none"], default="frequency")
    a("--mask-ratio", type=float, default=0.5)
    a("--temperature", type=float, default=0.07)
    a("--queue", type=int, default=256, help="queued text features (extra PVE negatives)")
    a(
        "--copy",
        type=float,
        default=0.0,
        help="share of copy windows per batch (the proximal window is a passage "
        "of the distant part: a reading curriculum; held-out numbers are on real continuations)",
    )
    a("--llm-dtype", choices=["bfloat16", "float32"], default="bfloat16", help="the frozen LLM's dtype")
    a("--export-dtype", choices=["bfloat16", "float32"], default="bfloat16", help="of the saved weights")
    a("--articles", type=int, default=0, help="use only the first N train articles (0: all)")
    a("--eval-n", type=int, default=48, help="held-out windows")
    a("--save-every", type=int, default=10)
    a("--log-every", type=int, default=5)
    a("--stop-after", type=int, default=0, help="stop (with a checkpoint) after N steps of this run, to resume later")
    a("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    a("--seed", type=int, default=0)
    a("--progress", action=argparse.BooleanOptionalAction, default=True)
    a("--out", default=str(default_dir()), help="features, checkpoints, log and the trained weights")
    a("--ship", action="store_true", help="copy the weights and card into the package")
    return p


def main(argv=None) -> int:
    card = train(parser().parse_args(argv))
    if "held_out" in card:
        print(json.dumps(card["held_out"]["nll_per_token"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
