"""vist's cost as the distant part grows ("vist-cost"; result <out>/vist/cost.json).

One text of D distant tokens (eval articles one after another) and a 129-token proximal text, for D from 1k to 16k:
LLM-side tokens, forward FLOPs (counted: the LLM, the cross-attention, the resampler and PP-OCRv6's convolutions and
matmuls, at the shapes run), peak memory (VmHWM above the RSS before), and the throughput of generating 16 tokens
end to end (vist: rendering and encoding included, encoder cache off). The plain LLM reads D + 129 tokens (SmolLM2
was trained to 8k: beyond that its cost is real, its output is not).

A Measurement of its own kind: it scores nothing; its rows are FLOPs, seconds and megabytes per length, which a
grid of per-example records would only distort.
"""

from __future__ import annotations

import contextlib
import json
import time

import torch

from gistify_bench.benches.vist_lm import PROXIMAL, load
from gistify_bench.eval.task import Measurement, register
from gistify_bench.machine import machine, reset_peak_rss, rss_mb


def long_text(articles: dict, tokenizer, tokens: int) -> tuple[str, str]:
    """The eval articles one after another: the first `tokens` tokens (cut at a token start) and the next 129."""
    text = "\n\n".join(articles.values())
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [a for a, _ in enc["offset_mapping"]]
    if len(starts) < tokens + PROXIMAL + 1:
        raise ValueError(f"the eval articles hold {len(starts)} tokens, fewer than {tokens + PROXIMAL + 1}")
    return text[: starts[tokens]], text[starts[tokens] : starts[tokens + PROXIMAL]]


def measured(fn):
    """(result, seconds, peak MB above the RSS before) of fn()."""
    import gc

    gc.collect()
    trim()  # hand freed heap back, so that "above the RSS before" does not depend on what ran earlier
    reset = reset_peak_rss()
    before = rss_mb("VmRSS")
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = rss_mb("VmHWM")
    return result, seconds, round(peak - before, 1) if reset and peak is not None and before is not None else None


def trim() -> None:
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def encoder_flops_per_line(width: int) -> float:
    """PP-OCRv6 on one line: the whole recogniser, as the encoder's session runs it (the CTC head included,
    ~8%: its ids are outputs too, though vist reads only the neck's features)."""
    import onnx

    from gistify.vist.encoder import model_path
    from gistify_bench.benches.flops import onnx_flops

    model = onnx.load(str(model_path()))
    return onnx_flops(model, {model.graph.input[0].name: [1, 3, 48, width]})


@torch.no_grad()
def cost_task(model, articles: dict, lengths: list[int], new_tokens: int = 16) -> dict:
    from gistify.vist.encoder import EncoderConfig, TextImageEncoder
    from gistify_bench.benches.flops import Decoder, resampler_flops

    c, lm, tok = model.config, model.lm, model.tokenizer
    dec = Decoder.from_config(lm.config)
    per_line = encoder_flops_per_line(c.width)
    r = model.resampler.config
    blocks = len(model.xattn.layer_ids) if c.inject == "xattn" else 0
    gen = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    warm_distant, warm_proximal = long_text(articles, tok, 64)  # first calls pay for kernels and allocations
    model.generate(warm_distant, warm_proximal, 2)
    lm.generate(tok(warm_proximal, return_tensors="pt")["input_ids"], max_new_tokens=2, pad_token_id=tok.pad_token_id)
    rows = []
    for d in lengths:
        distant, proximal = long_text(articles, tok, d)
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

        (memory, read_s), vist_s, vist_mb = measured(run_vist)
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
        _, plain_s, plain_mb = measured(lambda ids=ids: lm.generate(ids, **gen))
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


class VistCost(Measurement):
    family = "vist"
    result = "cost"

    def run(self, options: dict) -> dict:
        model, articles = load(options.get("weights"))
        lengths = options.get("lengths", [1024, 2048, 4096, 8192, 16384])
        return cost_task(model, articles, list(lengths)) | {"weights": model.card.get("command")}


register("vist-cost", VistCost())
