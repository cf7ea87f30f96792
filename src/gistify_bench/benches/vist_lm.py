"""vist's long-context language modelling ("vist-lm"; result <out>/vist/lm.json), and what every vist task shares.

Every vist task reads the held-out Wikipedia "eval" articles (vist's trainer trains on "train"). Each way of giving
the LLM the distant part is scored on the same tokens, and its LLM-side token count is reported with it:
- none: only the proximal text (no distant context);
- vist: the distant part through vist's memory (visual tokens V) + the proximal text;
- shuffled (lm only): another window's memory, a control (a gain that survives it is not reading);
- truncate: the last V tokens of the distant text, as text (the same LLM-side token count as vist);
- reinforce: the distant text compressed by gistify's reinforce to V tokens (no question: the recency prior,
  docs/methods.md §1.2 step 3; results before it used a uniform prior, PageRank centrality), as text;
- full: the whole distant text, as text (the ceiling where it fits).

lm: perplexity of the last 128 tokens (a 129-token proximal window, every token after the first) after D
distant tokens (whole lines, D at most), one window per article: the trainer's windows whose distant part the
budget cut (so it holds close to D tokens) (docs/methods.md §3.7).

The vist tasks are Measurements, not cells of (method, budget): they compare ways of reading one distant text
(none, vist, truncate, reinforce, full) at the budget vist itself sets (its visual tokens), and score perplexity or
label likelihoods summed over windows, so their result is one table per run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gistify_bench.eval.task import Measurement, register
from gistify_bench.options import default_out
from gistify_bench.vist.corpus import Corpus, Windowing, eval_windows
from gistify_bench.vist.heldout import nll_after

PROXIMAL = 129  # the last 128 tokens are scored


def load(weights: str | None):
    """The trained VistModel (LLM in bfloat16, as trained) and the held-out articles."""
    from gistify.vist.model import VistModel
    from gistify_bench.data import wikipedia

    model = VistModel.from_pretrained(weights, dtype=torch.bfloat16)
    return model, wikipedia("eval")


def reinforce_ids(model, text: str, tokens: int, question: str | None = None) -> list[int]:
    """The distant text compressed by reinforce to `tokens` LLM tokens (the LLM's own tokenizer counts), for
    `question` if given."""
    import gistify

    kept = gistify.compress(text, question, tokens=tokens, method="reinforce").text
    return model.tokenizer(kept, add_special_tokens=False)["input_ids"][:tokens]


# -- long-context language modelling -------------------------------------------------------------------------------


@torch.no_grad()
def lm_task(model, articles: dict, distant: int, n: int, seed: int = 0, cache: Path | None = None,
            ways: tuple[str, ...] = ("none", "vist", "shuffled", "truncate", "reinforce", "full"),
            progress: bool = True) -> dict:  # fmt: skip
    """Mean NLL per token (and perplexity) of the last 128 tokens of n held-out windows, each way."""
    from gistify.progress import track

    folder = Path(cache or default_out("train", "vist")) / "features"
    held = Corpus(articles, model, model.encoder, folder, Windowing(distant, PROXIMAL), "eval")
    # only windows whose distant part was cut by the budget (so it holds ~distant tokens), one per article
    held.windows = [w for w in held.windows if w.first > 0]
    windows = eval_windows(held, n, seed)
    held.ensure(windows)
    sums = {k: 0.0 for k in ways}
    llm_tokens = {k: 0 for k in ways}
    counts = {k: 0 for k in ways}  # scored tokens and windows, per way (a batch of one has no shuffle)
    windows_of = {k: 0 for k in ways}
    distant_tokens, batch = 0, 4
    for s in track(range(0, len(windows), batch), -(-len(windows) // batch), "lm", enabled=progress):
        part = windows[s : s + batch]
        b = held.batch(part)
        ids, mask = b["ids"]
        memory = model.memory(b["pages"])
        visual = memory.visual_tokens
        dist = [held.text_before_ids(w) for w in part]  # the distant part as text, with its break to the window
        n_prox = mask.sum().item()
        distant_tokens += sum(len(d) for d in dist)
        for way in ways:
            if way in ("none", "vist", "shuffled"):
                mem = {"none": None, "vist": memory, "shuffled": memory.roll(1)}[way]
                if way == "shuffled" and len(part) < 2:
                    continue
                total, scored = model.nll(ids, mask, mem)
                extra = 0 if way == "none" else sum(visual)
            else:
                if way == "full":
                    prefixes = dist
                elif way == "truncate":
                    prefixes = [d[max(0, len(d) - v) :] if v else [] for d, v in zip(dist, visual)]
                else:
                    prefixes = [reinforce_ids(model, held.text_before(w), v) for w, v in zip(part, visual)]
                total, scored = nll_after(model, prefixes, ids, mask)
                extra = sum(len(p) for p in prefixes)
            sums[way] += total.sum().item()
            llm_tokens[way] += extra + n_prox
            counts[way] += scored.sum().item()
            windows_of[way] += len(part)
    rows = {}
    for way in ways:
        nll = sums[way] / counts[way]
        rows[way] = {"nll": round(nll, 4), "ppl": round(float(torch.tensor(nll).exp()), 3),
                     "llm_tokens": round(llm_tokens[way] / windows_of[way], 1), "windows": windows_of[way]}  # fmt: skip
    return {
        "task": "lm",
        "distant_tokens": round(distant_tokens / len(windows), 1),
        "proximal_tokens": PROXIMAL,
        "scored_tokens": {way: counts[way] for way in ways},
        "windows": len(windows),
        "articles": len({w.article for w in windows}),
        "ways": rows,
    }


class VistLM(Measurement):
    family = "vist"
    result = "lm"

    def run(self, options: dict) -> dict:
        model, articles = load(options.get("weights"))
        result = lm_task(model, articles, options.get("distant") or 1024, options.get("n") or 48,
                         cache=options.get("cache"))  # fmt: skip
        return result | {"weights": model.card.get("command")}


register("vist-lm", VistLM())
