"""vist_bench (issue 13, step 5; "vist-bench", result <out>/vist/bench.json): does vist read what truncation drops?

Held-out windows of the eval articles (a distant part of up to `distant` tokens in whole lines, then a proximal
window read as text), three kinds:
- continuation: the 128 tokens after the distant part (the trainer's windows);
- far copy: the proximal window repeats a passage of the distant part that lies wholly in what truncation to
  vist's token count drops (its first tokens): only a reader of the early distant text can predict it;
- distant fact: a sentence "The code of the <title> archive is <5 digits>." put before the distant part, and the
  proximal window "The code of the <title> archive is" must be followed by the number: scored by the NLL of the
  number's tokens and by whether every one is the LLM's top token (a greedy reader's exact answer).

Ways, each at its LLM-side token count (the proximal text, plus what it reads of the distant part):
- none: the proximal text alone;
- vist: vist's memory of the distant part (V memory tokens); other: another window's memory (the control);
- truncate: the last V tokens of the distant text, as text; reinforce: the distant text compressed by gistify's
  reinforce to V tokens (with the question, for the fact windows);
- last K: the last lines holding about a third of the distant tokens, as text; last K + vist: those lines as text
  and vist's memory of the lines before them (its positions right before the text), against last K alone and
  against last K + another window's memory of its lines before them (last_k_other, the control);
- full: the whole distant text (the ceiling).

Per kind and way: the mean over windows of the per-token NLL with a 95% bootstrap interval over windows, the mean
LLM-side tokens, and for facts the share answered exactly with its interval.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from gistify_bench.eval.task import Measurement, register
from gistify_bench.options import default_out
from gistify_bench.vist.corpus import Corpus, Window, Windowing, eval_windows, pad

PROXIMAL = 128
WAYS = ("none", "vist", "other", "truncate", "reinforce", "last_k", "last_k_vist", "last_k_other", "full")


def fact_for(title: str, rng: random.Random) -> tuple[str, str, str]:
    """(the sentence put before the distant part, the cloze that asks for it, the answer that completes it)."""
    number = "".join(rng.choice("0123456789") for _ in range(5))
    subject = f"The code of the {title.replace('_', ' ')} archive is"
    return f"{subject} {number}.", subject, f" {number}"


def _scored_nll(model, prefixes, ids, mask, memory, first_scored):
    """Per window: mean NLL of the proximal tokens from index `first_scored[i]` on (at least the second), and
    whether each was the top token, read after the text `prefixes[i]` and `memory` (None: no memory)."""
    rows, starts = [], []
    for prefix, row, m, f in zip(prefixes, ids, mask, first_scored):
        rows.append(list(prefix) + row[: int(m.sum())].tolist())
        starts.append(len(prefix) + max(1, f))
    tid, tmask = pad(rows)
    logits = model.logits(tid, tmask, memory)[:, :-1].float()
    targets = tid[:, 1:]
    use = (torch.arange(1, tid.shape[1])[None, :] >= torch.tensor(starts)[:, None]) & tmask[:, 1:].bool()
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    hit = (logits.argmax(-1) == targets) | ~use
    return ((ce * use).sum(1) / use.sum(1)).tolist(), hit.all(1).tolist()


def _ways(model, ids, mask, memory, dist, texts, questions, first) -> dict:
    """Every way but the last-K pair for one batch: way -> (per-window NLL, exact, LLM-side tokens beyond the
    proximal text). dist: each distant text's ids; texts / questions: what reinforce compresses, and for what."""
    from gistify_bench.benches.vist_lm import reinforce_ids

    visual = memory.visual_tokens
    out = {}
    for way in ("none", "vist", "other", "truncate", "reinforce", "full"):
        mem = {"vist": memory, "other": memory.roll(1) if len(dist) > 1 else None}.get(way)
        if way == "other" and mem is None:
            continue  # a batch of one has no other window
        if way == "full":
            prefixes = dist
        elif way == "truncate":
            prefixes = [d[len(d) - v :] for d, v in zip(dist, visual)]
        elif way == "reinforce":
            prefixes = [reinforce_ids(model, t, v, q) for t, v, q in zip(texts, visual, questions)]
        else:
            prefixes = [[] for _ in dist]
        nll, hit = _scored_nll(model, prefixes, ids, mask, mem, first)
        out[way] = (nll, hit, visual if mem is not None else [len(p) for p in prefixes])
    return out


def _memory(model, texts: list[str]):
    return model.memory(model.read(texts))


def far_copy(held: Corpus, window: Window, visual: int, rng: random.Random) -> Window | None:
    """The window with its proximal window starting at a line whose next proximal tokens all lie in the first
    (distant - visual) tokens of the distant part (what truncation to `visual` tokens drops); None if none does."""
    tok = held.model.tokenizer
    lf = held.lines[window.article]
    base = int(lf.spans[window.first, 0])
    text = held.texts[window.article][base : int(lf.spans[window.split - 1, 1])]
    starts = [s for s, _ in tok(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]
    dropped = len(starts) - visual
    ok = []
    for line in range(window.first, window.split):
        at = sum(1 for s in starts if s < int(lf.spans[line, 0]) - base)  # tokens before the line
        if lf.spans[line, 0] != lf.spans[line, 1] and at + held.shape.proximal_tokens <= dropped:
            ok.append(line)
    return Window(window.article, window.first, window.split, rng.choice(ok)) if ok else None


def last_lines(held: Corpus, w: Window, tokens: int) -> int:
    """The first line of the shortest run of last lines of w's distant part that holds at least `tokens` tokens."""
    for cut in range(w.split - 1, w.first, -1):
        if len(held.text_before_ids(Window(w.article, cut, w.split))) >= tokens:
            return cut
    return w.first + 1


@torch.no_grad()
def bench_task(model, articles: dict, distant: int = 512, n: int = 16, seed: int = 0, cache: Path | None = None,
               progress: bool = True, proximal: int = PROXIMAL) -> dict:  # fmt: skip
    """The table of the module's docstring for n windows of each kind."""
    from gistify.progress import track
    from gistify_bench.stats import interval95, paired

    if not model.config.slots_per_line:
        raise ValueError("vist-bench needs vist weights that read one memory token per stretch (slots_per_line)")
    folder = Path(cache or default_out("train", "vist")) / "features"
    held = Corpus(articles, model, model.encoder, folder, Windowing(distant, proximal), "eval")
    held.windows = [w for w in held.windows if w.first > 0]  # distant parts the budget cut: about `distant` tokens
    rng = random.Random(f"vist-bench-{seed}")
    continuation = eval_windows(held, n, seed)
    held.ensure(continuation)
    tok = model.tokenizer
    scores: dict[str, dict[str, list]] = {}
    tokens: dict[str, dict[str, list]] = {}

    def record(kind, way, nll, llm_tokens, hit=None):
        scores.setdefault(kind, {}).setdefault(way, []).extend(nll)
        tokens.setdefault(kind, {}).setdefault(way, []).extend(llm_tokens)
        if hit is not None:
            scores[kind].setdefault(way + "_exact", []).extend(float(h) for h in hit)

    # far-copy windows: from other windows of the same articles, each paired with what truncation drops there
    far = []
    for w in eval_windows(held, 4 * n, seed + 1):
        if len(far) == n:
            break
        held.ensure([w])
        found = far_copy(held, w, int(held.pages(w).filled.sum()), rng)
        if found is not None:
            far.append(found)
    kinds = {"continuation": continuation, "far_copy": far}
    for kind, windows in kinds.items():
        for s in track(range(0, len(windows), 4), -(-len(windows) // 4), kind, enabled=progress):
            part = windows[s : s + 4]
            b = held.batch(part)
            ids, mask = b["ids"]
            memory = model.memory(b["pages"])
            dist = [held.text_before_ids(w) for w in part]
            counts = mask.sum(1).tolist()  # the proximal tokens each window reads
            first = [1] * len(part)
            texts = [held.text_before(w) for w in part]
            for way, (nll, _, extra) in _ways(model, ids, mask, memory, dist, texts, [None] * len(part), first).items():
                record(kind, way, nll, [e + p for e, p in zip(extra, counts)])
            # last K lines as text, alone and with vist's memory of the lines before them
            cuts = [last_lines(held, w, len(d) // 3) for w, d in zip(part, dist)]
            kept = [held.text_before_ids(Window(w.article, c, w.split)) for w, c in zip(part, cuts)]
            early = model.memory([held.pages(Window(w.article, w.first, c)) for w, c in zip(part, cuts)])
            other = early.roll(1) if len(part) > 1 else None  # the control: another window's early memory
            for way, mem in (("last_k", None), ("last_k_vist", early), ("last_k_other", other)):
                if way == "last_k_other" and mem is None:
                    continue
                nll, _ = _scored_nll(model, kept, ids, mask, mem, first)
                visual = mem.visual_tokens if mem is not None else [0] * len(kept)
                extra = [len(k) + v for k, v in zip(kept, visual)]
                record(kind, way, nll, [e + p for e, p in zip(extra, counts)])

    # distant facts: a sentence before the distant part, asked for after it
    facts = continuation
    for s in track(range(0, len(facts), 4), -(-len(facts) // 4), "facts", enabled=progress):
        part = facts[s : s + 4]
        made = [fact_for(held.titles[w.article], rng) for w in part]
        texts = [f"{sentence}\n{held.text_before(w)}" for (sentence, _, _), w in zip(made, part)]
        cloze = [tok(subject + answer, add_special_tokens=False)["input_ids"] for _, subject, answer in made]
        first = [len(tok(subject, add_special_tokens=False)["input_ids"]) for _, subject, _ in made]
        ids, mask = pad(cloze)
        memory = _memory(model, [t.rstrip() for t in texts])
        dist = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        questions = [subject for _, subject, _ in made]
        for way, (nll, hit, extra) in _ways(model, ids, mask, memory, dist, texts, questions, first).items():
            record("distant_fact", way, nll, [e + len(c) for e, c in zip(extra, cloze)], hit)

    table, differences = {}, {}
    for kind, ways in scores.items():
        table[kind] = {}
        for way, values in ways.items():
            base = way.removesuffix("_exact")
            row = {"mean": round(sum(values) / len(values), 4), "ci95": [round(x, 4) for x in interval95(values) or []],
                   "n": len(values)}  # fmt: skip
            if way == base:
                row["llm_tokens"] = round(sum(tokens[kind][way]) / len(tokens[kind][way]), 1)
            table[kind][way] = row
        # vist against each control on the same windows (issue 24): the paired difference and its interval
        for suffix in ("", "_exact"):
            for control in ("other", "truncate", "none", "reinforce"):
                a, c = ways.get("vist" + suffix), ways.get(control + suffix)
                if a and c and len(a) == len(c):
                    differences[f"{kind}{suffix}: vist - {control}"] = paired(a, c)
        a, c = ways.get("last_k_vist"), ways.get("last_k_other")
        if a and c and len(a) == len(c):
            differences[f"{kind}: last_k_vist - last_k_other"] = paired(a, c)
    return {
        "task": "bench",
        "distant_tokens": distant,
        "proximal_tokens": proximal,
        "windows": {kind: len(ws) for kind, ws in kinds.items()} | {"distant_fact": len(facts)},
        "table": table,
        "paired": differences,
        "per_window": scores,
    }


class VistBench(Measurement):
    family = "vist"
    result = "bench"

    def run(self, options: dict) -> dict:
        from gistify.vist.model import VistModel
        from gistify_bench.data import wikipedia

        model = VistModel.from_pretrained(options.get("weights"))  # float32: the distilled weights' own LLM dtype
        result = bench_task(model, wikipedia("eval"), options.get("distant") or 512, options.get("n") or 16,
                            cache=options.get("cache"))  # fmt: skip
        return result | {"weights": model.card.get("trained_by") or model.card.get("command")}


register("vist-bench", VistBench())
