"""vist's in-context learning ("vist-icl"; result <out>/vist/icl.json): topic classification with many demos.

A DBPedia-like task made of real sentences: each of `classes` eval articles is a label (its title); demos
"Sentence: {x}\\nTopic: {y}" balanced per label, 2 of them in the decoder, the rest distant (one per line with a
blank line after each, the paper's "dynamic + blank lines"); each label scored by its log-likelihood (raw, and
calibrated by the same prompt with an empty sentence, as CEPE) (docs/methods.md §3.7). The ways are vist_lm's.
A Measurement (see gistify_bench.benches.vist_lm for why).
"""

from __future__ import annotations

import copy
import random
import re

import torch

from gistify_bench.benches.vist_lm import load, reinforce_ids
from gistify_bench.eval.task import Measurement, register
from gistify_bench.eval.tasks.icl import sentences as demo_sentences
from gistify_bench.vist.corpus import pad


def sentences(text: str, title: str) -> list[str]:
    """The icl-topics task's sentences (8-30 words) that do not name the article, not even inflected (the label
    would be given away)."""
    words = [w for w in re.findall(r"\w+", title) if len(w) > 3] or re.findall(r"\w+", title)
    named = re.compile("|".join(r"\b" + re.escape(w) for w in words), re.IGNORECASE)  # "amperes" names "Ampere"
    return [s for s in demo_sentences(text) if not named.search(s) and "=" not in s]


def icl_data(articles: dict, classes: int, demos: int, per_class: int, seed: int) -> dict:
    """Labels (short eval-article titles), balanced demos (shuffled) and `per_class` test sentences per label."""
    rng = random.Random(f"icl-{seed}")
    usable = {
        t: sentences(text, t)
        for t, text in articles.items()
        if "(" not in t and len(t.split()) <= 2 and len(sentences(text, t)) >= demos // classes + 1 + per_class
    }
    if len(usable) < classes:
        raise ValueError(f"only {len(usable)} eval articles have enough sentences for {classes} classes")
    labels = sorted(rng.sample(sorted(usable), classes))
    pool = {t: rng.sample(usable[t], len(usable[t])) for t in labels}
    shots = [(pool[labels[i % classes]].pop(), labels[i % classes]) for i in range(demos)]
    rng.shuffle(shots)
    tests = [(pool[t].pop(), t) for t in labels for _ in range(per_class)]
    return {"labels": labels, "demos": shots, "tests": tests}


def demo(x: str, y: str) -> str:
    return f"Sentence: {x}\nTopic: {y}\n\n"


@torch.no_grad()
def context_cache(model, context: list[int], memory=None):
    """The LLM's KV cache of the text tokens `context` read with `memory` (None when there are no tokens):
    computed once per way."""
    if not context:
        return None
    with model.reading(memory, 1):
        return model.lm(input_ids=torch.tensor([context]), use_cache=True).past_key_values


@torch.no_grad()
def label_scores(model, cache, memory, prompt: str, labels: list[str]) -> torch.Tensor:
    """(K,) summed log-likelihood of each label after the cached context + `prompt`, reading `memory`.

    The prompt is read once on a copy of the context's cache, then the K labels as one batch on K copies of it:
    the context is never recomputed (the shared prefix costs nothing per test)."""
    tok = model.tokenizer
    lm = model.lm
    cache = copy.deepcopy(cache) if cache is not None else None
    past = cache.get_seq_length() if cache is not None else 0
    prompt_ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    with model.reading(memory, 1):
        out = lm(input_ids=prompt_ids, past_key_values=cache, use_cache=True)
    first = out.logits[0, -1].float().log_softmax(-1)  # (V,): the first label token
    cache = out.past_key_values
    rows = [tok(" " + y, add_special_tokens=False)["input_ids"] for y in labels]
    ids, mask = pad(rows)  # right-padded: padding follows every real token
    k, width = ids.shape
    cache.batch_repeat_interleave(k)
    full_mask = torch.cat([torch.ones(k, past + prompt_ids.shape[1], dtype=mask.dtype), mask], dim=1)
    with model.reading(memory, k):
        logits = lm(input_ids=ids, attention_mask=full_mask, past_key_values=cache, use_cache=True).logits.float()
    logp = logits.log_softmax(-1)  # (K, W, V): position j predicts label token j + 1
    scores = first[ids[:, 0]]
    if width > 1:
        later = logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]
        scores = scores + later.sum(1)
    return scores


@torch.no_grad()
def icl_task(model, articles: dict, classes: int, per_class: int, seed: int, decoder_demos: int = 2,
             distant_demos: int = 18, ways=("none", "vist", "truncate", "reinforce", "full"),
             progress: bool = True) -> dict:  # fmt: skip
    """Accuracy (raw and calibrated) of each way on one seed's draw of labels, demos and tests."""
    from gistify.progress import track

    if model.config.inject != "xattn":
        raise ValueError("the icl task reads vist's memory through cross-attention (inject='xattn')")
    data = icl_data(articles, classes, decoder_demos + distant_demos, per_class, seed)
    labels, shots = data["labels"], data["demos"]
    far, near = shots[:distant_demos], shots[distant_demos:]
    far_text = "".join(demo(x, y) for x, y in far).rstrip("\n")
    near_text = "".join(demo(x, y) for x, y in near)
    tok = model.tokenizer
    far_ids = tok(far_text + "\n\n", add_special_tokens=False)["input_ids"]
    memory = model.memory(model.read([far_text]))
    visual = int(memory.visual_tokens[0])
    sep = tok("\n\n", add_special_tokens=False)["input_ids"]
    contexts = {  # (text-token context, memory) of each way
        "none": ([], None),
        "vist": ([], memory),
        "truncate": (far_ids[max(0, len(far_ids) - visual) :], None),
        "reinforce": (reinforce_ids(model, far_text, visual - len(sep)) + sep, None),  # as many tokens as vist
        "full": (far_ids, None),
    }  # fmt: skip
    out = {}
    for way in track(ways, len(ways), "icl", enabled=progress):
        context, mem = contexts[way]
        cache = context_cache(model, context, mem)
        empty = label_scores(model, cache, mem, near_text + "Sentence: \nTopic:", labels)
        raw = calibrated = 0
        for x, y in data["tests"]:
            s = label_scores(model, cache, mem, near_text + f"Sentence: {x}\nTopic:", labels)
            raw += int(labels[int(s.argmax())] == y)
            calibrated += int(labels[int((s - empty).argmax())] == y)
        n_prompt = len(tok(near_text + "Sentence: x\nTopic:", add_special_tokens=False)["input_ids"])
        out[way] = {"accuracy": round(raw / len(data["tests"]), 4),
                    "accuracy_calibrated": round(calibrated / len(data["tests"]), 4),
                    "llm_tokens_context": len(context) + (visual if mem is not None else 0),
                    "llm_tokens_prompt_min": n_prompt}  # fmt: skip
    return {"seed": seed, "labels": labels, "tests": len(data["tests"]), "distant_demos": distant_demos,
            "decoder_demos": decoder_demos, "distant_text_tokens": len(far_ids), "visual_tokens": visual,
            "ways": out}  # fmt: skip


class VistICL(Measurement):
    family = "vist"
    result = "icl"

    def run(self, options: dict) -> dict:
        model, articles = load(options.get("weights"))
        classes, per_class = options.get("classes", 6), options.get("per_class", 20)
        runs = [icl_task(model, articles, classes, per_class, s) for s in options.get("seeds", [0])]
        return {"runs": runs, "weights": model.card.get("command")}


register("vist-icl", VistICL())
