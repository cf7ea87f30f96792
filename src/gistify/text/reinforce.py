"""Contextual Reinforcement on text: graph-propagated token importance.

Reconstructed from arXiv 2501.16658 as docs/methods.md §1.2 specifies (the paper gives no code and
few details; every constant is exposed as a field). Per scorer token:

1. features z_i: the scorer's hidden state at a shallow `layer`, centred over the text and L2-normalised;
2. an affinity graph: k nearest neighbours by max(0, cos) * exp(-|i-j|/sigma), symmetrised;
3. relevance prior r = softmax(cos(z_i, q) / temperature), q from the question (or the text's end);
   by default (ours) cos(z_i, q) is the best match over question tokens weighted by their self-information;
4. personalised PageRank s = alpha Pᵀ s + (1 - alpha) r: tokens tied to relevant tokens are reinforced;
5. adaptive weight w = sigmoid(b1 ẑ(s) + b2 ẑ(r) + b3 ẑ(u) + bias), u the token's self-information;
6. selection: the best words under the budget (or those with w >= threshold), in original order.

Defaults that differ from the spec's (its constants are its own guesses, not the paper's): `layer=4`
(spec 2), `sigma=4` (spec 32) and the query (spec: the mean question vector). They were chosen on
planted-fact placements in articles and with facts that no test or benchmark uses
(experiments/reinforce_dev.py): at keep 0.1 the spec's constants kept the answer in 4/16 placements,
ours in 16/16 (selfinfo 8/16, random 0/16). `query="vote"` replaced a best-match query after a
benchmark's cloze questions showed one "___" token taking the whole prior; on cloze questions over the
"train" articles (experiments/reinforce_qa_dev.py, 10 questions) the answer survived keep 0.5 / 0.33 / 0.2
in 9 / 8 / 8 cases against 8 / 8 / 7, and the planted facts still 16/16. The spec's values remain one
`--set` away. `alpha=0.95` (spec 0.85) came last, from RULER-style needles built on the "train" articles
(experiments/reinforce_needle_dev.py, 16 per kind, reinforce-fast): at keep 0.1 the four values of a multi-value
needle survived 0.438 of the time at 0.85, 0.672 at 0.9, 0.953 at 0.95 (0.984 at 0.98); the single and multi-key
needles' values 0.94-1.00 and 1.00 throughout; the cloze answers of 30 "train" questions 24 / 24 / 24 / 24 of 30 at
keep 0.5 / 0.33 / 0.2 / 0.1 against 25 / 24 / 24 / 23, and the planted facts still 16/16 at keep 0.1.

With no question the prior is a recency prior, r_i ∝ exp(-(n-1-i)/recency) with `recency=128` tokens (ours; the
spec's query is the text's last tokens, `tail_tokens`; the previous default was a uniform prior). It was chosen
for text that a model goes on from (the lm task) on 1024-token windows of the "dev" and "train" articles, the
perplexity of the 128 tokens after them read by the benchmark's reader (experiments/reinforce_lm_dev.py, 12
windows): mean perplexity at keep 0.5 / 0.33 / 0.2 / 0.1 was 24.7 / 25.0 / 25.6 / 26.9 against 33.0 / 37.6 /
38.2 / 37.1 for the uniform prior, 27.2 / 28.9 / 28.4 / 28.2 for `tail_tokens=64` and 32.9 / 34.4 / 36.5 / 34.7
for truncation's head; 128 had the smallest worst-case gap to the best tau per keep among 32 to 1024. Keeping
the text's last tokens verbatim (truncation's tail) was still better: 23.4 / 23.7 / 24.8 / 26.5.

Step 7 (merging embeddings) is off for text (averaged text embeddings are off-distribution) and step 8
(original position ids) concerns in-model use; neither changes a compressed string.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gistify.graph import affinity_graph, personalized_pagerank, zscore
from gistify.text.base import AGGREGATES, TextMethod
from gistify.text.protect import NUMBER
from gistify.text.words import Document, sentence_ids


@dataclass
class ContextualReinforcement(TextMethod):
    """Contextual Reinforcement: relevance to the question propagated over a token affinity graph.

    Args:
        layer: scorer layer whose hidden states are the node features (0 = input embeddings).
        k: neighbours per token in the affinity graph.
        sigma: locality scale of text-text edges, in tokens.
        temperature: softmax temperature of the relevance prior.
        alpha: PageRank damping (share of propagated versus prior relevance). 0.95 (ours; spec 0.85) lets
            relevance reach the tokens a relevant phrase leads to, such as the value after a needle's key:
            chosen on needles over the "train" articles (experiments/reinforce_needle_dev.py).
        iterations: most PageRank iterations (it stops earlier once converged).
        weights: (b1, b2, b3) of propagated relevance, prior relevance and self-information.
        bias: the weighting's bias b.
        threshold: if set, keep only words whose weight is at least this (dynamic budget, capped by the
            budget given).
        query: how the question makes the relevance prior. "vote" (ours, default): every question token,
            weighted by its self-information, spreads its share of relevance over the text tokens like it
            (a softmax over the text); "max": a token's relevance is its best cosine to any question token,
            each question token weighted by its self-information (the previous default: one odd question
            token, such as a "___" blank, could then pull all the relevance); "mean": cosine to the mean
            question vector (the spec's step 1, which lets function words such as "the" dominate the query).
        aggregate: how a word's token weights combine: "max", "mean" or "sum".
        tail_tokens: with no question, the query is the text's last `tail_tokens` tokens (the spec's choice,
            for text that a model will continue); 0 (default) uses no query.
        recency: with no question, the prior decays with the distance from the text's end,
            r_i ∝ exp(-(n-1-i) / recency) (n tokens; times the tail query's prior if `tail_tokens`): the text
            nearest to where a reader goes on counts most (default 128 tokens, chosen on the "dev" and "train"
            articles: experiments/reinforce_lm_dev.py and the module's docstring). 0 turns it off: with
            `tail_tokens=0` too, a uniform prior, so the propagation is plain PageRank centrality (TextRank),
            the previous default. A question ignores it.
        tail_share: with no question, this share of the budget goes first to the text's last tokens, kept
            verbatim as truncation's tail keeps them; steps 1-6 choose the rest of the budget over the whole text.
            For a reader that goes on from the text's end, the words nearest to it are worth most in order,
            whole. A question ignores it.
        sentence_weight: each word's weight gains this times the best word weight of its sentence (ended by
            . ! ? or a line break), so that the budget goes to whole sentences around the strongest words
            first; 0 (default) scores words alone.
        fast: the scorer's fast path (docs/methods.md §1.2.2): only the first `layer` layers run, and
            a small trained head predicts the self-information u (gistify.text.fast). A scorer with no head
            trained for it is read by the full pass, with a note in the result.
        precision: the fast path's layers in "float32" (exactly the full pass's states) or "bfloat16"; "auto":
            bf16 where the CPU multiplies it natively (AVX-512 BF16, AMX: 1.6x faster, the states at cosine
            0.998 to float32's), else float32. The full pass is always float32.
        value_clause: each word gains this times the best weight of a number in its sentence (ended by . ! ? or
            a line break), so that a number worth keeping comes with the words that say what it is (the
            multi-value needle's "One of the special magic numbers for opal-pebble is: 5678048."); unlike
            `sentence_weight`, a sentence whose numbers are not relevant gains nothing (multi-key's distractor
            needles). 0 (default): off.
    """

    name = "reinforce"
    needs_scorer = True
    layer: int = 4
    k: int = 10
    sigma: float = 4.0
    temperature: float = 0.1
    alpha: float = 0.95
    iterations: int = 20
    weights: tuple[float, float, float] = (1.0, 0.5, 0.5)
    bias: float = 0.0
    threshold: float | None = None
    query: str = "vote"
    aggregate: str = "max"
    tail_tokens: int = 0
    recency: float = 128.0
    tail_share: float = 0.0
    sentence_weight: float = 0.0
    fast: bool = False
    precision: str = "float32"
    value_clause: float = 0.0

    def __post_init__(self):
        for f, lo in (("layer", 0), ("k", 1), ("iterations", 1), ("tail_tokens", 0)):
            self._check_int(f, lo)
        for f in ("sigma", "temperature"):
            self._check_number(f, 0, math.inf, lo_open=True, hi_open=True)
        self._check_number("alpha", 0, 1, hi_open=True)
        self._check_number("recency", 0, math.inf, hi_open=True)
        self._check_number("tail_share", 0, 1)
        self._check_number("sentence_weight", 0, math.inf, hi_open=True)
        self._check_number("value_clause", 0, math.inf, hi_open=True)
        self._check_choice("precision", ("float32", "bfloat16", "auto"))
        if len(tuple(self.weights)) != 3:
            raise ValueError(f"reinforce.weights must be three numbers, got {self.weights!r}")
        self.weights = tuple(float(w) for w in self.weights)
        if self.threshold is not None:
            self._check_number("threshold", 0, 1, lo_open=True, hi_open=True)
        self._check_choice("query", ("mean", "max", "vote"))
        self._check_choice("aggregate", AGGREGATES)
        if not isinstance(self.fast, bool):
            raise ValueError(f"{self.name}.fast must be True or False, got {self.fast!r}")

    def features(self, doc: Document) -> torch.Tensor:
        """(n_tokens, 3) z-scored propagated relevance ŝ, prior relevance r̂ and self-information û of the
        scorer's tokens: what step 5 weighs (and what the RL controller's policy reads, §1.2.1)."""
        fast = self.fast and self._fast_path_fits(doc) and self._fast_mode()
        stats = doc.stats(self.layer, fast)
        # The fallback ladder compresses the same text for the same question again (protections differ, these
        # features do not): keep them beside the scorer's statistics, which a new text or `forget()` drops.
        key = ("reinforce-features", doc.text, doc.question, fast, tuple(sorted(self.params().items())))
        cache = doc.scorer._cache
        if key not in cache:
            old = [k for k in cache if k[0] == "reinforce-features"]
            for k in old[: max(0, len(old) - 7)]:  # many questions on one text: keep the last 8
                cache.pop(k, None)
            cache[key] = self._features(doc, stats, fast)
        return cache[key]

    def _features(self, doc: Document, stats, fast: bool) -> torch.Tensor:
        h = stats.hidden  # (n, d)
        mean = h.mean(0)
        z = F.normalize(h - mean, dim=-1)  # centring removes the direction all states share
        if doc.question and doc.question.strip():
            qh, qu = doc.scorer.embed(doc.question, self.layer, fast)
            qz = F.normalize(qh - mean, dim=-1)  # (m, d)
            prior = self._prior(z, qz, qu)  # (n,)
        else:
            prior = self._prior_without_question(z, stats.self_info)
        graph = affinity_graph(z, self.k, self.sigma, progress=doc.progress)
        s = personalized_pagerank(graph, prior, self.alpha, self.iterations, progress=doc.progress)
        u = torch.from_numpy(stats.self_info).float()
        return torch.stack([zscore(s), zscore(prior), zscore(u)], dim=1)

    def _fast_mode(self) -> bool | str:
        """What `Scorer.stats` is asked for: True (the fast path in float32) or "bfloat16"."""
        from gistify.text.fast import native_bf16

        bf16 = self.precision == "bfloat16" or (self.precision == "auto" and self.layer and native_bf16())
        return "bfloat16" if bf16 else True

    def _fast_path_fits(self, doc: Document) -> bool:
        """Whether the scorer has a surprisal head for `layer`; if not, the full pass scores, and the result says
        so (a scorer given by `model=` has none unless one was trained for it)."""
        why = doc.scorer.fast_path_missing(self.layer) if doc.scorer is not None else None
        if why:
            doc.notes.append(f"{self.name}: the full pass scored instead of the fast path: {why}")
        return not why

    def _prior(self, z: torch.Tensor, qz: torch.Tensor, qu: torch.Tensor) -> torch.Tensor:
        """(n,) relevance prior r of the text tokens z (n, d) to the query tokens qz (m, d) (step 3)."""
        if self.query == "mean":
            return torch.softmax(z @ F.normalize(qz.mean(0), dim=0) / self.temperature, dim=0)
        # Each query token counts in proportion to its self-information qu (m,), so "what", "the", "of" do not
        # pull relevance towards every function word of the text.
        gain = qu.clamp_min(0) / qu.clamp_min(1e-6).max()  # (m,)
        sims = z @ qz.T  # (n, m)
        if self.query == "vote":
            # Every question token spreads its share of relevance over the text tokens like it, so a passage
            # that matches many question tokens outweighs one odd token (a "___" blank) that matches a few
            # text tokens well.
            votes = torch.softmax(sims / self.temperature, dim=0) @ (gain / gain.sum().clamp_min(1e-6))
            return votes / votes.sum()
        return torch.softmax((sims * gain).amax(dim=1) / self.temperature, dim=0)  # "max": the best match

    def _prior_without_question(self, z: torch.Tensor, self_info: np.ndarray) -> torch.Tensor:
        """(n,) relevance prior of the text tokens z (n, d) with no question (step 3): the query is the text's
        last `tail_tokens` tokens if set (else none: uniform), times the recency prior exp(-(n-1-i) / recency)."""
        n = len(z)
        if self.tail_tokens:
            qz, qu = z[-self.tail_tokens :], torch.from_numpy(self_info[-self.tail_tokens :]).float()
            prior = self._prior(z, qz, qu)
        else:  # no query: a uniform prior (with recency=0, step 4 is plain PageRank centrality)
            prior = torch.full((n,), 1.0 / n)
        if not self.recency:
            return prior
        # For a reader that goes on from the text's end, the tokens nearest to it count most (the lm task's
        # perplexity on the dev articles, experiments/reinforce_lm_dev.py). Log space: the factor underflows.
        distance = torch.arange(n - 1, -1, -1, dtype=torch.float32)  # tokens from the text's end
        return torch.softmax(prior.clamp_min(1e-30).log() - distance / self.recency, dim=0)

    def token_weights(self, doc: Document) -> torch.Tensor:
        """(n_tokens,) keep probabilities w = sigmoid(β·[ŝ, r̂, û] + b) of the scorer's tokens (step 5)."""
        return torch.sigmoid(self.features(doc) @ torch.tensor(self.weights) + self.bias)

    def score(self, doc: Document) -> np.ndarray:
        w = self.token_weights(doc).numpy()
        if self.tail_share and doc.share and not (doc.question and doc.question.strip()):
            # The last tail_share * share of the scorer's tokens rank above every other token (w < 1): the
            # selection, in score order, spends that part of the budget on the text's end first.
            tail = round(self.tail_share * doc.share * len(w))
            w[len(w) - tail :] += 1.0
        scores = doc.per_word(w, self.aggregate)
        if self.sentence_weight:
            # Every word gains sentence_weight x its sentence's best word weight: the budget goes to whole
            # sentences around the strongest words before single strong words elsewhere.
            sid = sentence_ids(doc.text, doc.words)
            best = np.full(sid[-1] + 1 if len(sid) else 0, -np.inf)
            np.maximum.at(best, sid, scores)
            scores = scores + self.sentence_weight * best[sid]
        if self.value_clause:
            scores = scores + self.value_clause * self._best_number(doc, scores)
        if self.threshold is not None:
            scores = np.where(scores >= self.threshold, scores, -np.inf)
        return scores

    @staticmethod
    def _best_number(doc: Document, scores: np.ndarray) -> np.ndarray:
        """(n_words,) the best score of a number word in each word's sentence (0 where it has none)."""
        numeric = np.array([bool(NUMBER_WORD.search(doc.text[s:e])) for s, e in doc.words], dtype=bool)
        sid = sentence_ids(doc.text, doc.words)
        best = np.zeros(sid[-1] + 1 if len(sid) else 0)
        np.maximum.at(best, sid[numeric], np.maximum(scores[numeric], 0))
        return best[sid]


@dataclass
class FastReinforcement(ContextualReinforcement):
    """`reinforce` on the scorer's fast path (docs/methods.md §1.2.2): the same steps 1-6, with the scorer run
    only up to the feature layer and the self-information u predicted by a small head trained against the
    full model's (gistify.text.fast). About 8x faster on 2 cores; `reinforce` is the full pass. The default text
    method (gistify.text.DEFAULT_METHOD); a scorer with no trained head falls back to the full pass."""

    name = "reinforce-fast"
    fast: bool = True


@dataclass
class ShallowReinforcement(FastReinforcement):
    """`reinforce-fast` two layers deep (docs/methods.md §1.2.3): the node features at layer 2 (the spec's
    layer), the self-information from a head trained on layer 2's states, and the two layers in bf16 where the
    CPU has it. About 3x cheaper than `reinforce-fast`'s four float32 layers, and less accurate at 10x (QA and
    the single needle: other numbers get into the budget), so not the default."""

    name = "reinforce-shallow"
    layer: int = 2
    precision: str = "auto"


NUMBER_WORD = re.compile(NUMBER)

LEARNED = Path(__file__).with_name("reinforce_rl.json")
RL_ALPHA = 0.85  # the controller's features (gistify_bench.train.controller) propagate as the weights were trained


def learned_weights(path: Path = LEARNED) -> dict:
    """The controller's shipped parameters and how they were trained (gistify_bench.train.controller writes them)."""
    if not path.is_file():
        raise FileNotFoundError(f"no learned weights at {path}; train them: python -m gistify_bench.train.controller")
    return json.loads(path.read_text())


@dataclass
class LearnedReinforcement(ContextualReinforcement):
    """`reinforce` with the step-5 weights β and bias b learned by the reinforcement controller
    (docs/methods.md §1.2.1: REINFORCE against a frozen reader's loss on sampled compressions; trained by
    `python -m gistify_bench.train.controller` on the "train" articles, shipped in reinforce_rl.json). At
    inference the selection is deterministic (step 6). In budget mode only the direction of β matters:
    the bias and the scale shift every token alike. Pass `weights=` / `bias=` to override.
    """

    name = "reinforce-rl"
    weights: tuple[float, float, float] | None = None
    bias: float | None = None
    alpha: float = RL_ALPHA  # the propagation its weights were trained on

    def __post_init__(self):
        if self.weights is None or self.bias is None:
            learned = learned_weights()
            self.weights = tuple(learned["weights"]) if self.weights is None else self.weights
            self.bias = float(learned["bias"]) if self.bias is None else self.bias
        super().__post_init__()
