"""Prefill time, KV cache and memory of every visual-token reducer ("vision-speed"; result: <out>/vision/speed.json).

On the trained VLM (batch 1): the reducer's own cost (context + method + projector) apart from the LLM's prefill,
per method at keep 0.5, 0.25, 0.1; on a tiny-config LLaVA with LLaVA-1.5's 576 visual tokens: the whole prefill call
(vision tower, reducer, LLM) at keep 0.1. Medians of `repeats` timed runs after a warm-up; the KV cache left behind;
the peak resident memory of the process during the call. Timings are for this machine
(gistify_bench.machine.machine).

A Measurement, not a grid of cells: its rows are timings of one input per configuration, not per-example records
scored against answers, and it spans two models.
"""

from __future__ import annotations

import statistics
import time
from contextlib import nullcontext

import torch

from gistify_bench.eval.task import Measurement, register
from gistify_bench.eval.tasks.vqa import batches, load_vlm, vision_methods
from gistify_bench.machine import machine, reset_peak_rss, rss_mb
from gistify_bench.vlm import vqa


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _kv_mb(cache) -> float:
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values)) / 2**20


def speed_vlm(repeats: int) -> list[dict]:
    """Trained VLM, batch 1: reducer cost (context + method + projector) and LLM prefill, per method at each keep."""
    import gistify

    vlm = load_vlm()
    (part, x), = batches(vlm, vqa.examples("easyvqa-4", "test", 1, seed=2), 1)  # fmt: skip
    t_encode = _median_time(lambda: vlm.encode(x.pixel_values), repeats)
    rows = []
    for method, keep in [("none", 1.0)] + [(m, k) for m in vision_methods() for k in (0.5, 0.25, 0.1)]:
        with torch.no_grad(), gistify.reduce(vlm, method, keep=keep) if method != "none" else nullcontext() as session:
            t_reduce = _median_time(lambda: vlm.sequence(x), repeats)
            embeds, mask, pos = vlm.sequence(x)
            reset_peak_rss()
            base = rss_mb("VmRSS")
            prefill = dict(inputs_embeds=embeds, attention_mask=mask, position_ids=pos)
            t_llm = _median_time(lambda p=prefill: vlm.lm(**p), repeats)
            peak = rss_mb("VmHWM")
            cache = vlm.lm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos, use_cache=True).past_key_values
        rows.append({
            "model": "GistVLM (SmolLM2-135M, bf16)", "method": method, "keep": keep,
            "tokens": session.tokens_out[0] if session else x.features.shape[1], "sequence": int(mask.sum()),
            "encode_s": t_encode, "reduce_s": t_reduce, "llm_prefill_s": t_llm, "kv_cache_mb": _kv_mb(cache),
            "peak_rss_delta_mb": None if peak is None or base is None else peak - base,
        })  # fmt: skip
        print(rows[-1])
    return rows


def tiny_llava():
    """A tiny random LLaVA with LLaVA-1.5's visual token count (336 px, 14 px patches: 576 tokens), a small CLIP
    tower and a 4-layer Llama; inputs: 576 placeholders and 40 text tokens."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
                              image_size=336, patch_size=14)  # fmt: skip
    text = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                       num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=2048,
                       pad_token_id=0)  # fmt: skip
    model = LlavaForConditionalGeneration(
        LlavaConfig(vision_config=vision, text_config=text, image_token_id=500)
    ).eval()
    ids = torch.cat([torch.randint(1, 499, (1, 8)), torch.full((1, 576), 500), torch.randint(1, 499, (1, 32))], 1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.rand(1, 3, 336, 336)}
    return model, inputs


def speed_llava(repeats: int) -> list[dict]:
    """Tiny-config LLaVA: the whole prefill call (vision tower, reducer, LLM) per method at keep 0.1."""
    import gistify

    model, inputs = tiny_llava()
    rows = []
    for method, keep in [("none", 1.0)] + [(m, 0.1) for m in vision_methods() if m != "recover"] + [("recover", 0.1)]:
        with (
            torch.no_grad(),
            gistify.reduce(model, method, keep=keep) if method != "none" else nullcontext() as session,
        ):
            reset_peak_rss()
            base = rss_mb("VmRSS")
            t = _median_time(lambda: model(**inputs), repeats)
            peak = rss_mb("VmHWM")
            cache = model(**inputs, use_cache=True).past_key_values
        rows.append({
            "model": "tiny LLaVA (576 visual tokens, 8x512 Llama, fp32)", "method": method, "keep": keep,
            "tokens": session.tokens_out[0] if session else 576, "prefill_s": t, "kv_cache_mb": _kv_mb(cache),
            "peak_rss_delta_mb": None if peak is None or base is None else peak - base,
        })  # fmt: skip
        print(rows[-1])
    return rows


class VisionSpeed(Measurement):
    family = "vision"
    result = "speed"

    def run(self, options: dict) -> dict:
        repeats = options.get("repeats", 7)
        with torch.no_grad():
            return {"machine": machine(), "repeats": repeats, "vlm": speed_vlm(repeats),
                    "llava_tiny": speed_llava(repeats)}  # fmt: skip


register("vision-speed", VisionSpeed())
