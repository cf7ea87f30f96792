"""vist's training data, shared by its trainer (gistify_bench.train.vist) and its benchmarks (gistify_bench.eval.vist):
articles rendered in lines, each line's encoder features cached on disk, and the windows a sample can be.

Each article is rendered once in lines (Layout.line()) and every line is encoded once by the frozen PP-OCRv6 encoder
(~35 ms a line on one thread; ~13k lines for the train split), cached as float16 in <folder>/<split>-<article>.npz,
so reruns, resumed runs, ablations and the benchmarks read features only. A window of an article: the whole lines
before a line start, up to `distant_tokens` LLM tokens, are the distant part (read as images); the `proximal_tokens`
tokens from that line start are the proximal window, read as text (docs/methods.md §3.1, §3.9: T_e 512, T_d 128 on
CPU).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gistify.rendering import Rendering, Row, render
from gistify.vist.config import VistConfig
from gistify.vist.memory import Pages, group_lines


@dataclass(frozen=True)
class Windowing:
    """The shape of a window: the most LLM tokens of its distant part (T_e) and its proximal window (T_d)."""

    distant_tokens: int = 512
    proximal_tokens: int = 128


# -- encoder features, per article line, cached -----------------------------------------------------------------


def fingerprint(config: VistConfig, encoder) -> str:
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
        ICAE-style; the trainer's `copy`): what it repeats can be predicted only by reading the memory. It runs
        proximal_tokens tokens, so one that starts in the last ~13 lines runs on past the split into the
        continuation (that part is an ordinary proximal window)."""
        return dataclasses.replace(self, start=rng.randrange(self.first, self.split))


class Corpus:
    """Articles with their line features and the windows a sample can be."""

    def __init__(self, texts: dict[str, str], model, encoder, folder: Path, shape: Windowing, tag: str):
        """`model`: a VistModel (its config and tokenizer); `shape`: any object with distant_tokens and
        proximal_tokens (a Windowing, or a trainer's config)."""
        self.titles = list(texts)
        self.texts = [texts[t] for t in self.titles]
        self.model, self.shape = model, Windowing(shape.distant_tokens, shape.proximal_tokens)
        fp = fingerprint(model.config, encoder)
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
            if lf.spans[j, 0] == lf.spans[j, 1] or len(starts) - tok_at[j] < self.shape.proximal_tokens + 8:
                continue
            # the earliest line i such that lines [i, j) hold at most distant_tokens tokens
            i = int(np.searchsorted(tok_at, tok_at[j] - self.shape.distant_tokens, side="left"))
            if tok_at[j] - tok_at[i] >= self.shape.distant_tokens // 2:
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
        t = self.shape.proximal_tokens
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

    def slots(self, w: Window) -> tuple:
        """Where w's distant tokens sit when vist reads one memory token per stretch of a line
        (VistConfig.slots_per_line; gistify.vist.slots.text_slots): each token's slot (n,), which of the slots
        of w's images hold a token and their text positions, as VistModel.read gives them."""
        lf, config = self.lines[w.article], self.model.config
        from gistify.vist.slots import text_slots

        count = -(-(w.split - w.first) // config.lines_per_image) * config.memory_tokens_per_image
        spans = lf.spans[w.first : w.split] - lf.spans[w.first, 0]
        drawn = lf.mask[w.first : w.split].sum(1)
        tokenizer, k = self.model.tokenizer, config.slots_per_line
        return text_slots(tokenizer, self.distant_text(w), spans, drawn, lf.mask.shape[1], k, count)

    def pages(self, w: Window) -> Pages:
        """The distant part's pages, with their slots' `filled` and `positions` when vist reads per stretch."""
        pages = self.lines[w.article].pages(w.first, w.split)
        if self.model.config.slots_per_line is not None:
            _, pages.filled, pages.positions = self.slots(w)
        return pages

    def batch(self, windows: list[Window]) -> dict:
        pages = [self.pages(w) for w in windows]
        prox = [self.proximal_ids(w) for w in windows]
        dist = [self.model.tokenizer(self.distant_text(w), add_special_tokens=False)["input_ids"] for w in windows]
        return {
            "pages": pages,
            "ids": pad(prox),
            "distant": pad(dist),
            "keys": torch.tensor([[w.article, w.first, w.split] for w in windows], dtype=torch.int64),
            "copy": torch.tensor([w.start is not None for w in windows]),
        }


def pad(rows: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, W) ids and (B, W) mask of token rows."""
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.int64)
    mask = torch.zeros(len(rows), width, dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, : len(r)] = 1
    return ids, mask


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


def text_corpora(articles: dict | None, model, shape, cache: str | None = None) -> tuple[Corpus, Corpus]:
    """The "train" and "eval" articles (default: the Wikipedia splits) as windows of `model`'s layout, for the
    probes that read only the windows' text (oracle, teacher): the lines come from the records a vist trainer
    cached in <cache>/features (default ./results/train/vist), and no encoder feature is computed."""
    from gistify_bench.options import default_out

    if articles is None:
        from gistify_bench.data import wikipedia

        articles = {"train": wikipedia("train"), "eval": wikipedia("eval")}
    folder = Path(cache or default_out("train", "vist")) / "features"
    train, held = (Corpus(articles[s], model, model.encoder, folder, shape, s) for s in ("train", "eval"))
    return train, held
