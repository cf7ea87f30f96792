"""vist against keeping the text (research/methods.md §3.7): language modelling, in-context learning, cost.

    python -m gistify_bench.vist_bench lm   [--weights W] [--distant 1024] [--n 48]
    python -m gistify_bench.vist_bench icl  [--weights W] [--classes 6] [--per-class 20] [--seeds 0 1 2]
    python -m gistify_bench.vist_bench cost [--weights W] [--lengths 1024 2048 4096 8192 16384]
    python -m gistify_bench.vist_bench ablation --run frequency=DIR --run no_pve=DIR --run random=DIR
    python -m gistify_bench.vist_bench report

Every task reads the held-out Wikipedia "eval" articles (vist_train trains on "train"). Each way of giving the LLM
the distant part is scored on the same tokens, and its LLM-side token count is reported with it:
- none: only the proximal text (no distant context);
- vist: the distant part through vist's memory (visual tokens V) + the proximal text;
- shuffled (lm only): another window's memory, a control (a gain that survives it is not reading);
- truncate: the last V tokens of the distant text, as text (the same LLM-side token count as vist);
- reinforce: the distant text compressed by gistify's reinforce to V tokens (no question: a uniform prior, i.e.
  PageRank centrality over the text), as text;
- full: the whole distant text, as text (the ceiling where it fits).

lm: perplexity of the last 128 tokens (a 129-token proximal window, every token after the first) after D
distant tokens (whole lines, D at most), one window per article: vist_train's windows whose distant part the
budget cut (so it holds close to D tokens).
icl: topic classification (a DBPedia-like task made of real sentences): each of `classes` eval articles is a
label (its title); demos "Sentence: {x}\\nTopic: {y}" balanced per label, 2 of them in the decoder, the rest
distant (one per line with a blank line after each, the paper's "dynamic + blank lines"); each label scored by
its log-likelihood (raw, and calibrated by the same prompt with an empty sentence, as CEPE).
cost: one text of D distant tokens (eval articles one after another) and a 129-token proximal text, for D from
1k to 16k: LLM-side tokens, forward FLOPs (counted: the LLM, the cross-attention, the resampler and PP-OCRv6's
convolutions and matmuls, at the shapes run), peak memory (VmHWM above the RSS before), and the throughput of
generating 16 tokens end to end (vist: rendering and encoding included, encoder cache off). The plain LLM reads
D + 129 tokens (SmolLM2 was trained to 8k: beyond that its cost is real, its output is not).
ablation: the held-out numbers that vist_train measured at the end of each run given (their cards).
diversity: whether the memory depends on what is read (cosines between texts and between latents).
The oracle probe (gistify_bench.vist_oracle: the cross-attention reading a perfect memory) writes oracle.json here
too, and the report shows it.
Results go to docs/results/vist/*.json; `report` writes docs/results/vist/report.md.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import random
import re
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from gistify_bench.measure import machine, reset_peak_rss, rss_mb
from gistify_bench.vist_train import Corpus, _pad, default_dir, eval_windows, nll_after

PROXIMAL = 129  # the last 128 tokens are scored
OUT = Path("docs/results/vist")


def load(weights: str | None):
    """The trained VistModel (LLM in bfloat16, as trained) and the held-out articles."""
    from gistify.vist.model import VistModel
    from gistify_bench.data import wikipedia

    model = VistModel.from_pretrained(weights, dtype=torch.bfloat16)
    return model, wikipedia("eval")


def reinforce_ids(model, text: str, tokens: int) -> list[int]:
    """The distant text compressed by reinforce to `tokens` LLM tokens (the LLM's own tokenizer counts)."""
    import gistify

    kept = gistify.compress(text, None, tokens=tokens, method="reinforce").text
    return model.tokenizer(kept, add_special_tokens=False)["input_ids"][:tokens]


# -- long-context language modelling -------------------------------------------------------------------------------


@torch.no_grad()
def lm_task(model, articles: dict, distant: int, n: int, seed: int = 0, cache: Path | None = None,
            ways: tuple[str, ...] = ("none", "vist", "shuffled", "truncate", "reinforce", "full"),
            progress: bool = True) -> dict:  # fmt: skip
    """Mean NLL per token (and perplexity) of the last 128 tokens of n held-out windows, each way."""
    from gistify.progress import track

    args = SimpleNamespace(distant_tokens=distant, proximal_tokens=PROXIMAL)
    folder = Path(cache or default_dir()) / "features"
    held = Corpus(articles, model, model.encoder, folder, args, "eval")
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


# -- in-context learning ------------------------------------------------------------------------------------------


def sentences(text: str, title: str) -> list[str]:
    """The icl-topics task's sentences (8-30 words) that do not name the article, not even inflected (the label
    would be given away)."""
    from gistify_bench.tasks.icl import _sentences

    words = [w for w in re.findall(r"\w+", title) if len(w) > 3] or re.findall(r"\w+", title)
    named = re.compile("|".join(r"\b" + re.escape(w) for w in words), re.IGNORECASE)  # "amperes" names "Ampere"
    return [s for s in _sentences(text) if not named.search(s) and "=" not in s]


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
    ids, mask = _pad(rows)  # right-padded: padding follows every real token
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


# -- cost as the distant part grows -------------------------------------------------------------------------------


def _long_text(articles: dict, tokenizer, tokens: int) -> tuple[str, str]:
    """The eval articles one after another: the first `tokens` tokens (cut at a token start) and the next 129."""
    text = "\n\n".join(articles.values())
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [a for a, _ in enc["offset_mapping"]]
    if len(starts) < tokens + PROXIMAL + 1:
        raise ValueError(f"the eval articles hold {len(starts)} tokens, fewer than {tokens + PROXIMAL + 1}")
    return text[: starts[tokens]], text[starts[tokens] : starts[tokens + PROXIMAL]]


def _measured(fn):
    """(result, seconds, peak MB above the RSS before) of fn()."""
    import gc

    gc.collect()
    _trim()  # hand freed heap back, so that "above the RSS before" does not depend on what ran earlier
    reset = reset_peak_rss()
    before = rss_mb("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = rss_mb("VmHWM")
    return result, seconds, round(peak - before, 1) if reset and peak is not None and before is not None else None


def _trim() -> None:
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def encoder_flops_per_line(width: int) -> float:
    """PP-OCRv6 on one line: the whole recogniser, as the encoder's session runs it (the CTC head included,
    ~8%: its ids are outputs too, though vist reads only the neck's features)."""
    import onnx

    from gistify.vist.encoder import model_path
    from gistify_bench.flops import onnx_flops

    model = onnx.load(str(model_path()))
    return onnx_flops(model, {model.graph.input[0].name: [1, 3, 48, width]})


@torch.no_grad()
def cost_task(model, articles: dict, lengths: list[int], new_tokens: int = 16) -> dict:
    from gistify.vist.encoder import EncoderConfig, TextImageEncoder
    from gistify_bench.flops import Decoder, resampler_flops

    c, lm, tok = model.config, model.lm, model.tokenizer
    dec = Decoder.from_config(lm.config)
    per_line = encoder_flops_per_line(c.width)
    r = model.resampler.config
    blocks = len(model.xattn.layer_ids) if c.inject == "xattn" else 0
    gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    warm_distant, warm_proximal = _long_text(articles, tok, 64)  # first calls pay for kernels and allocations
    model.generate(warm_distant, warm_proximal, 2)
    lm.generate(tok(warm_proximal, return_tensors="pt")["input_ids"], max_new_tokens=2, pad_token_id=tok.pad_token_id)
    rows = []
    for d in lengths:
        distant, proximal = _long_text(articles, tok, d)
        # vist: render, encode (a fresh encoder: nothing cached; as many threads as the LLM, its default is 1),
        # resample, then generate reading the memory
        enc = EncoderConfig(features=c.features, cache_mb=0, threads=torch.get_num_threads())
        model._encoder = TextImageEncoder(enc)
        model.encoder._model  # noqa: B018 (the ONNX session is made here, once, as a user's loaded encoder)

        def run_vist(distant=distant, proximal=proximal):
            t0 = time.perf_counter()
            memory = model.memory(model.read([distant]))
            read_s = time.perf_counter() - t0
            model.generate("", proximal, new_tokens, memory=memory, min_new_tokens=new_tokens)
            return memory, read_s

        (memory, read_s), vist_s, vist_mb = _measured(run_vist)
        lines = model.encoder.stats["rows"]
        visual = int(memory.visual_tokens[0])
        images = int(memory.image_mask.sum())
        p = len(tok(proximal, add_special_tokens=False)["input_ids"])
        vist_flops = {
            "encoder": lines * per_line,
            "resampler": resampler_flops(images, c.lines_per_image * c.tokens_per_line, r.latents + int(r.cls),
                                         r.input_dim, r.dim, r.depth, r.heads * r.head_dim, r.ff_mult),
            # xattn: the LLM reads p text tokens and cross-attends to the memory; prefix: it reads visual + p
            "llm": dec.prefill_flops(p if blocks else visual + p, 1, causal=True),
            "cross_attention": blocks * dec.cross_attention_flops(p, visual, r.dim),
        }  # fmt: skip
        # the plain LLM reads the distant text and the proximal text as one prompt
        ids = tok(distant + proximal, add_special_tokens=False, return_tensors="pt")["input_ids"]
        _, plain_s, plain_mb = _measured(lambda ids=ids: lm.generate(ids, **gen))
        plain_flops = dec.prefill_flops(ids.shape[1], 1, causal=True)
        total = sum(vist_flops.values())
        row = {
            "distant_tokens": d,
            "plain": {"llm_tokens": ids.shape[1], "flops": plain_flops, "seconds": round(plain_s, 2),
                      "tokens_per_s": round(new_tokens / plain_s, 2), "peak_mb": plain_mb},
            "vist": {"llm_tokens": visual + p, "visual_tokens": visual, "images": images, "lines": lines,
                     "flops": total, "flops_parts": vist_flops,
                     "seconds": round(vist_s, 2), "read_seconds": round(read_s, 2),
                     "tokens_per_s": round(new_tokens / vist_s, 2), "peak_mb": vist_mb},
        }  # fmt: skip
        row["flops_saved"] = round(1 - total / plain_flops, 4)
        row["memory_ratio"] = round(vist_mb / plain_mb, 4) if vist_mb is not None and plain_mb else None
        row["speedup"] = round(plain_s / vist_s, 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"task": "cost", "new_tokens": new_tokens, "proximal_tokens": PROXIMAL, "machine": machine(),
            "llm_dtype": str(next(lm.parameters()).dtype), "rows": rows}  # fmt: skip


# -- does the memory carry content? ---------------------------------------------------------------------------------


@torch.no_grad()
def diversity(model, articles: dict, texts: int = 8, chars: int = 1500) -> dict:
    """How much vist's memory depends on what it reads: the mean cosine between the tokens in the same slot
    (image 0, latent j) of two different texts, and between neighbouring slots of one text. 1.0 and 1.0: every
    text gives the same memory and every latent the same token (a collapsed resampler: nothing to read)."""
    import torch.nn.functional as F

    sample = [t[:chars] for t in list(articles.values())[:texts]]
    memory = model.memory(model.read(sample))
    n = model.config.latents
    first = memory.tokens[:, :n].float()  # (texts, N, D): each text's first image
    across = [F.cosine_similarity(first[i], first[j], dim=-1).mean() for i in range(texts) for j in range(i + 1, texts)]
    slots = F.cosine_similarity(first[:, :-1], first[:, 1:], dim=-1).mean()
    return {"texts": texts, "across_texts": round(float(torch.stack(across).mean()), 4),
            "across_slots": round(float(slots), 4), "token_std": round(float(first.std()), 4)}  # fmt: skip


# -- report ---------------------------------------------------------------------------------------------------------


def report(folder: Path = OUT) -> str:
    """docs/results/vist/report.md from the JSON files there."""

    def read(name):
        path = folder / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    lines = ["# vist against text: measured", ""]
    lm = read("lm")
    if lm:
        lines += [f"## Long-context LM: perplexity of the last 128 tokens ({lm['windows']} held-out windows, "
                  f"{lm['articles']} articles, ~{lm['distant_tokens']:.0f} distant tokens)", "",
                  "| way | LLM-side tokens | NLL/token | perplexity |", "|---|---|---|---|"]  # fmt: skip
        for way, r in lm["ways"].items():
            lines.append(f"| {way} | {r['llm_tokens']:.0f} | {r['nll']:.4f} | {r['ppl']:.2f} |")
        lines.append("")
    icl = read("icl")
    if icl:
        runs = icl["runs"]
        lines += [f"## ICL: topic classification, {len(runs[0]['labels'])} labels, {runs[0]['distant_demos']} "
                  f"distant + {runs[0]['decoder_demos']} decoder demos, {runs[0]['tests']} tests x {len(runs)} seeds",
                  "", "| way | LLM-side context tokens | accuracy | calibrated |", "|---|---|---|---|"]  # fmt: skip
        for way in runs[0]["ways"]:
            acc = sum(r["ways"][way]["accuracy"] for r in runs) / len(runs)
            cal = sum(r["ways"][way]["accuracy_calibrated"] for r in runs) / len(runs)
            ctx = sum(r["ways"][way]["llm_tokens_context"] for r in runs) / len(runs)
            lines.append(f"| {way} | {ctx:.0f} | {acc:.3f} | {cal:.3f} |")
        lines.append("")
    cost = read("cost")
    if cost:
        lines += [f"## Cost as the distant part grows ({cost['machine']}; {cost['new_tokens']} tokens generated)",
                  "", "| distant tokens | LLM tokens plain / vist | TFLOPs plain / vist (saved) | peak MB plain / vist "
                  "| s plain / vist (speed-up) |", "|---|---|---|---|---|"]  # fmt: skip
        for r in cost["rows"]:
            p, v = r["plain"], r["vist"]
            cells = [f"{r['distant_tokens']}", f"{p['llm_tokens']} / {v['llm_tokens']}",
                     f"{p['flops'] / 1e12:.3f} / {v['flops'] / 1e12:.3f} ({r['flops_saved']:.0%})",
                     f"{_mb(p['peak_mb'])} / {_mb(v['peak_mb'])}",
                     f"{p['seconds']:.1f} / {v['seconds']:.1f} ({r['speedup']:.2f}x)"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    ab = read("ablation")
    if ab:
        lines += ["## Ablations (vist_train's held-out numbers: NLL per token on eval articles)", "",
                  "| run | none | vist | shuffled memory | content gain | copy windows: vist / shuffled | PVE acc |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in ab["runs"].items():
            h, acc = r["held_out"], "-" if r["pve_acc"] is None else f"{r['pve_acc']:.2f}"
            if "shuffled" not in h:
                continue  # a run evaluated on one window has no shuffled control
            lines.append(f"| {name} | {h['base']:.4f} | {h['vist']:.4f} | {h['shuffled']:.4f} | "
                         f"{h['shuffled'] - h['vist']:+.4f} | {h.get('copy_vist', float('nan')):.4f} / "
                         f"{h.get('copy_shuffled', float('nan')):.4f} | {acc} |")  # fmt: skip
        lines.append("")
    div = read("diversity")
    if div:
        lines += ["## Does the memory depend on the text? (mean cosine: same slot of two texts, neighbouring slots)",
                  "", "| run | across texts | across slots |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {name} | {r['across_texts']:.4f} | {r['across_slots']:.4f} |" for name, r in div["runs"].items()]
        lines.append("")
    oracle = read("oracle")
    if oracle:
        lines += [f"## Oracle probe: the cross-attention reading a perfect memory ({oracle['held_out_copy_windows']} "
                  "held-out copy windows, NLL per token)", "", f"`{oracle['command']}`", "",
                  "| step | own memory | another window's | gap |", "|---|---|---|---|"]  # fmt: skip
        for c in oracle["curve"]:
            lines.append(f"| {c['step']} | {c['own']:.4f} | {c['shuffled']:.4f} | {c['shuffled'] - c['own']:+.4f} |")
        lines.append("")
    text = "\n".join(lines)
    (folder / "report.md").write_text(text)
    return text


def _mb(value) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def _write(name: str, data: dict, folder: Path = OUT) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.vist_bench", description=__doc__.split("\n")[0])
    p.add_argument("task", choices=["lm", "icl", "cost", "ablation", "diversity", "report"])
    p.add_argument("--weights", help="a vist.safetensors (default: the shipped weights)")
    p.add_argument("--distant", type=int, default=1024, help="lm: most distant tokens per window")
    p.add_argument("--n", type=int, default=48, help="lm: held-out windows")
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--per-class", type=int, default=20, help="icl: test sentences per label")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    p.add_argument("--run", action="append", default=[], help="ablation, diversity: NAME=DIR of a vist_train run")
    p.add_argument("--cache", help="vist_train's folder whose features/ cache encoded lines (default its own)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    if a.task == "report":
        print(report(out))
        return 0
    runs_given = []
    for spec in a.run:
        name, sep, folder = spec.partition("=")
        if not (sep and name and folder):
            p.error(f"--run takes NAME=DIR (a vist_train --out folder), got {spec!r}")
        runs_given.append((name, Path(folder)))
    if a.task == "diversity" and runs_given:  # several trained runs
        runs = {}
        for name, folder in runs_given:
            model, articles = load(str(folder / "vist.safetensors"))
            runs[name] = diversity(model, articles) | {"command": model.card.get("command")}
        _write("diversity", {"runs": runs}, out)
        print(json.dumps(runs, indent=1))
        return 0
    if a.task == "ablation":  # the held-out numbers each run's vist_train measured at its end (its card)
        runs = {}
        for name, folder in runs_given:
            card = json.loads((folder / "vist.json").read_text())
            runs[name] = {"command": card["command"], "pve": card["training"]["pve"],
                          "held_out": card["held_out"]["nll_per_token"],
                          "pve_acc": card["training"]["loss_last"].get("pve_acc"),
                          "copy_loss": card["training"]["loss_last"].get("copy")}  # fmt: skip
        _write("ablation", {"runs": runs}, out)
    else:
        model, articles = load(a.weights)
        if a.task == "diversity":
            result = {"runs": {a.weights or "shipped": diversity(model, articles)}}
        elif a.task == "lm":
            result = lm_task(model, articles, a.distant, a.n, cache=a.cache)
        elif a.task == "icl":
            result = {"runs": [icl_task(model, articles, a.classes, a.per_class, s) for s in a.seeds]}
        else:
            result = cost_task(model, articles, a.lengths)
        result["weights"] = model.card.get("command")
        _write(a.task, result, out)
    print(report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
