"""Train the reinforcement controller of Contextual Reinforcement (docs/methods.md §1.2.1).

    python -m gistify_bench.train.controller [--out DIR] [--ship]   # train, resume if interrupted, write the weights
    python -m gistify_bench.train.controller --inputs 8 --epochs 1 --out /tmp/rl   # a smoke run

The policy is step 5 of `reinforce` itself: every scorer token is kept with probability
w_i = sigmoid(β·[ŝ_i, r̂_i, û_i] + b), θ = (β, b). One episode samples a keep-mask m ~ Bernoulli(w) over the
context's tokens, runs the frozen reader on the kept tokens followed by the question, and earns

    R = -CE(answer | compressed) + λ_sem · cos(pool(h_L^comp), pool(h_L^full)) - λ_len · Σm / N

(pool: the mean of the reader's final hidden states over the answer's positions). θ follows REINFORCE with a
moving-average baseline, ∇θ J = E[(R - b̄) Σ_i ∇θ log π_θ(m_i)], plus an entropy bonus; Adam.

Training inputs are cloze questions (the `qa` task's construction) over the "train" articles of
gistify_bench.data, which no evaluation task reads. The reader and the scorer are the embedded SmolLM2 (the
same weights; only θ is trained). The result, DIR/reinforce_rl.json (--out DIR, default ./results/train/controller,
with the checkpoint DIR/state-<settings>.pt), records the training settings and the reward curve; --ship copies it
to `src/gistify/text/reinforce_rl.json` (gistify.text.reinforce.LEARNED), which the method `reinforce-rl` loads.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from gistify_bench.options import check, option

PROG = "gistify_bench.train.controller"
OUTPUT = ("out", "ship")  # where results go: not training settings (neither recorded nor compared on resuming)


@dataclass
class ControllerConfig:
    """The controller's training settings (recorded in the result as "settings"), and where the result goes."""

    inputs: int = option(48, "training questions")
    length: int = option(512, "context tokens per question")
    epochs: int = option(3, "passes over the inputs")
    samples: int = option(4, "masks sampled per input (docs/methods.md §1.2.1: 1-4)")
    lr: float = option(1e-2, "Adam's learning rate, for β and b (docs/methods.md §1.2.1)")
    lambda_sem: float = option(1.0, "weight of the semantic-similarity reward")
    lambda_len: float = option(0.5, "weight of the length penalty")
    entropy: float = option(1e-3, "entropy bonus")
    momentum: float = option(0.9, "of the moving-average reward baseline")
    seed: int = option(0, "inputs, masks and order")
    out: str | None = option(
        None, "folder of reinforce_rl.json and the checkpoint (default ./results/train/controller)"
    )
    ship: bool = option(False, "copy reinforce_rl.json into the package (gistify.text.reinforce.LEARNED)")

    def __post_init__(self):
        check(self)
        for name in ("inputs", "length", "epochs", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.momentum < 1:
            raise ValueError("lr must be positive and momentum in [0, 1)")

    def settings(self) -> dict:
        """The training settings (all fields but where the result goes)."""
        return {k: v for k, v in asdict(self).items() if k not in OUTPUT}


@dataclass
class Input:
    """One training question, everything about it that does not depend on θ."""

    context_ids: torch.Tensor  # (n,) the context's scorer tokens (the reader shares the tokenizer)
    features: torch.Tensor  # (n, 3) ŝ, r̂, û of `reinforce`
    question_ids: torch.Tensor  # (q,) "\n\n" + the sentence up to the blank
    answer_ids: torch.Tensor  # (a,) " " + the number
    full_pool: torch.Tensor  # (d,) pooled final hidden states over the answer with the whole context
    full_ce: float


@torch.inference_mode()
def _read(reader, bos: list[int], context_ids, question_ids, answer_ids) -> tuple[float, torch.Tensor]:
    """Cross-entropy of the answer and the pooled final hidden states over its positions (teacher forcing)."""
    ids = torch.cat([torch.tensor(bos, dtype=torch.long), context_ids, question_ids, answer_ids])[None]
    out = reader(input_ids=ids, output_hidden_states=True)
    a = len(answer_ids)
    logits = out.logits[0, -a - 1 : -1]  # (a, vocab): position p predicts token p+1
    h = out.hidden_states[-1][0, -a:]  # (a, d), after the final norm
    return float(F.cross_entropy(logits.float(), answer_ids)), h.mean(0)


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def make_input(scorer, context: str, question: str, answer: str) -> Input:
    """The θ-independent parts of one cloze question: features, token ids, the uncompressed read."""
    from gistify.text.reinforce import RL_ALPHA, ContextualReinforcement
    from gistify.text.words import Document, segment
    from gistify_bench.cloze import BLANK

    tok = scorer.tokenizer
    features = ContextualReinforcement(alpha=RL_ALPHA).features(Document(context, segment(context), question, scorer))
    context_ids = torch.tensor(scorer.encode(context)[0])
    question_ids = torch.tensor(tok("\n\n" + question.split(BLANK)[0].rstrip(), add_special_tokens=False).input_ids)
    answer_ids = torch.tensor(tok(" " + answer, add_special_tokens=False).input_ids)
    ce, pool = _read(scorer.model, _bos(tok), context_ids, question_ids, answer_ids)
    # .clone(): a normal tensor, since inference-mode tensors cannot enter autograd
    return Input(context_ids, features.clone(), question_ids, answer_ids, pool, ce)


def make_inputs(settings: ControllerConfig, scorer, show_progress: bool = True) -> list[Input]:
    """Cloze questions (the `qa` task's construction) over the "train" articles."""
    from gistify.progress import track
    from gistify_bench.cloze import cloze_questions

    questions = cloze_questions(settings.length, "train", settings.inputs, settings.seed)
    return [
        make_input(scorer, q.context, q.question, q.answer)
        for q in track(questions, len(questions), "preparing inputs", show_progress)
    ]


def reward(reader, bos, x: Input, mask: torch.Tensor, s: ControllerConfig) -> tuple[float, dict]:
    """R of one sampled keep-mask (docs/methods.md §1.2.1), and its parts."""
    ce, pool = _read(reader, bos, x.context_ids[mask], x.question_ids, x.answer_ids)
    sem = float(F.cosine_similarity(pool, x.full_pool, dim=0))
    kept = float(mask.float().mean())
    return -ce + s.lambda_sem * sem - s.lambda_len * kept, {"ce": ce, "sem": sem, "kept": kept}


def policy_step(
    theta, opt, features: torch.Tensor, reward_of, s: ControllerConfig, state: dict, rng: random.Random
) -> dict:
    """One REINFORCE update of θ = (β1, β2, β3, b) on one input with `s.samples` sampled keep-masks.

    features: (n, 3); reward_of(mask) -> (R, parts). `state["baseline"]` is the moving-average baseline b̄.
    Returns the sums of R and of its parts over the samples.
    """
    w = torch.sigmoid(features @ theta[:3] + theta[3]).clamp(1e-6, 1 - 1e-6)  # (n,) π(keep_i = 1)
    loss, totals = torch.zeros(()), {"reward": 0.0}
    for _ in range(s.samples):
        mask = torch.bernoulli(w.detach()).bool()
        if not mask.any():  # an empty context is no compression of it; keep one token
            mask[rng.randrange(len(mask))] = True
        r, parts = reward_of(mask)
        baseline = r if state["baseline"] is None else state["baseline"]
        log_prob = torch.where(mask, w.log(), (1 - w).log()).sum()  # Σ_i log π_θ(m_i)
        loss = loss - (r - baseline) * log_prob / s.samples
        state["baseline"] = s.momentum * baseline + (1 - s.momentum) * r
        totals["reward"] += r
        for k, v in parts.items():
            totals[k] = totals.get(k, 0.0) + v
    entropy = -(w * w.log() + (1 - w) * (1 - w).log()).mean()
    opt.zero_grad()
    (loss - s.entropy * entropy).backward()
    opt.step()
    return totals


def _resumable(settings: ControllerConfig) -> dict:
    """The settings a checkpoint must share to be resumed: all but the number of epochs (train longer)."""
    return {k: v for k, v in settings.settings().items() if k != "epochs"}


def train(
    settings: ControllerConfig,
    out: Path,
    state_path: Path,
    show_progress: bool = True,
    scorer=None,
    inputs: list[Input] | None = None,
) -> dict:
    """Train θ, resuming from `state_path` when it holds a run with the same settings; write `out`.
    `scorer` (reader too) defaults to the embedded SmolLM2, `inputs` to `make_inputs(settings, scorer)`."""
    from gistify.progress import progress_bar
    from gistify.text.reinforce import ContextualReinforcement
    from gistify.text.scorer import Scorer

    torch.manual_seed(settings.seed)
    start = ContextualReinforcement()
    theta = torch.nn.Parameter(torch.tensor([*start.weights, start.bias]))  # (4,): β1, β2, β3, b
    opt = torch.optim.Adam([theta], lr=settings.lr)
    state = {"epoch": 0, "baseline": None, "curve": []}
    if state_path.is_file():
        saved = torch.load(state_path, weights_only=False)
        if _resumable(ControllerConfig(**saved["settings"])) == _resumable(settings):
            theta.data.copy_(saved["theta"])
            opt.load_state_dict(saved["opt"])
            state = saved["state"]
    scorer = scorer or Scorer.load()
    reader, bos = scorer.model, _bos(scorer.tokenizer)
    inputs = inputs or make_inputs(settings, scorer, show_progress)
    rng = random.Random(settings.seed)
    t0 = time.perf_counter()
    steps = (settings.epochs - state["epoch"]) * len(inputs)
    with progress_bar(steps, "training the controller", show_progress) as advance:
        for epoch in range(state["epoch"], settings.epochs):
            order = list(range(len(inputs)))
            random.Random(f"{settings.seed}-{epoch}").shuffle(order)
            totals = {"reward": 0.0, "ce": 0.0, "sem": 0.0, "kept": 0.0}
            for i in order:
                x = inputs[i]
                parts = policy_step(
                    theta, opt, x.features, lambda m, x=x: reward(reader, bos, x, m, settings), settings, state, rng
                )
                for k, v in parts.items():
                    totals[k] += v
                advance()
            episodes = len(inputs) * settings.samples
            state["curve"].append({"epoch": epoch + 1, **{k: v / episodes for k, v in totals.items()}})
            state["epoch"] = epoch + 1
            state_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(
                {"settings": settings.settings(), "theta": theta.data, "opt": opt.state_dict(), "state": state},
                state_path,
            )
    result = {
        "weights": [round(float(v), 4) for v in theta.data[:3]],
        "bias": round(float(theta.data[3]), 4),
        "start": {"weights": list(start.weights), "bias": start.bias},
        "settings": settings.settings(),
        "data": f"cloze questions over the 'train' articles of gistify_bench.data ({len(inputs)} inputs)",
        "reader": scorer.name,
        "uncompressed_ce": sum(x.full_ce for x in inputs) / len(inputs),
        "curve": state["curve"],
        "train_seconds_this_run": round(time.perf_counter() - t0, 1),
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    import shutil
    import sys

    from gistify.text.reinforce import LEARNED
    from gistify_bench.options import from_args, parser_for, resolve_out

    p = parser_for(ControllerConfig, f"python -m {PROG}", __doc__.split("\n\n")[0])
    p.add_argument("--state", type=Path, help="checkpoint to resume from (default: DIR/state-<settings>.pt)")
    args = p.parse_args(argv)
    config = from_args(ControllerConfig, args, p)
    folder = resolve_out(config.out, "train", "controller")
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha1(json.dumps(_resumable(config), sort_keys=True).encode()).hexdigest()[:12]
    out = folder / LEARNED.name
    result = train(config, out, args.state or folder / f"state-{key}.pt", show_progress=sys.stderr.isatty())
    print(json.dumps({k: result[k] for k in ("weights", "bias", "uncompressed_ce", "curve")}, indent=2))
    print(f"written: {out}")
    if config.ship:
        shutil.copy(out, LEARNED)
        print(f"shipped: {LEARNED}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
