"""Benchmarks for visual-token reducers (issue 4): accuracy, prefill time, memory, tokens and FLOPs.

    python -m gistify_bench.vision accuracy [--n 200] [--out docs/results/vision]
    python -m gistify_bench.vision speed    [--out docs/results/vision]
    python -m gistify_bench.vision report   [--out docs/results/vision]

accuracy: every method at keep 1, 0.5, 0.25, 0.1, 0.05 (and recover's own dynamic budget) on the trained small
    VLM (gistify_bench.vlm), on held-out easy-vqa questions: "easyvqa" (one shape per image) and "easyvqa-4" (four
    shapes, the question about one of them). Greedy answers; right when the first word is the answer.
speed: prefill (the prompt's forward, batch 1) on the trained VLM and on a tiny-config LLaVA with LLaVA-1.5's
    576 visual tokens; median of repeats, split into the reducer's own cost and the LLM's prefill; the KV cache
    left behind; the peak resident memory of the process during the call.
report: tables, the issue's checks, a plot, and FLOPs of LLaVA-1.5-7B's prefill from our counter
    (gistify_bench.flops) next to the paper's table (8.5 -> 1.5 TFLOPs).
Timings are for this machine (gistify_bench.measure.machine); they are medians of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from gistify_bench import vqa
from gistify_bench.measure import machine, reset_peak_rss, rss_mb

METHODS = ("recover", "reinforce", "random", "pool", "fastv", "visionzip", "prumerge", "tome")
KEEPS = (1.0, 0.5, 0.25, 0.1, 0.05)
TASKS = ("easyvqa", "easyvqa-4")
OUT = Path("docs/results/vision")


def load_vlm():
    from gistify_bench.vlm.model import GistVLM

    # bfloat16: the dtype the projector was trained against (and the CPU's fast path)
    return GistVLM.from_pretrained(dtype=torch.bfloat16)


def _batches(vlm, examples: list, size: int) -> list:
    """The examples' model inputs in batches, with the images encoded once (every configuration reuses them)."""
    out = []
    for j in range(0, len(examples), size):
        part = examples[j : j + size]
        x = vlm.inputs([e.image for e in part], [e.question for e in part])
        x.features = vlm.encode(x.pixel_values)
        out.append((part, x))
    return out


def _answers(vlm, x) -> list[str]:
    ids = vlm.generate(x.pixel_values, x.input_ids, x.attention_mask, features=x.features, max_new_tokens=3)
    return [t.strip().split("\n")[0].strip().lower() for t in vlm.tokenizer.batch_decode(ids, skip_special_tokens=True)]


def on_target(reduction, target: int) -> float:
    """The share of a composite's reduced tokens that show the asked object: each output token counts by the
    fraction of the cells it stands for (its sources) that lie in the asked quadrant. All 196 tokens: 0.25."""
    from gistify_bench.vlm_train import quadrant_cells

    inside = quadrant_cells() == target
    return sum(inside[s].float().mean().item() for s in reduction.sources) / len(reduction.sources)


def accuracy(n: int, out: Path, batch: int = 25) -> list[dict]:
    """One record per (task, method, keep): accuracy, mean visual tokens kept, the per-question results, and for
    composites the share of the kept tokens that show the asked object (`on_target`): what question guidance
    is for, measured apart from whether the model can use it."""
    import gistify
    from gistify.progress import track

    vlm = load_vlm()
    configs = [("none", 1.0)] + [(m, k) for m in METHODS for k in KEEPS[1:]] + [("recover", None)]
    records = []
    for task in TASKS:
        batches = _batches(vlm, vqa.examples(task, "test", n, seed=1), batch)
        for method, keep in track(configs, len(configs), f"{task}", enabled=True):
            right, kept, target = [], [], []
            for part, x in batches:
                if method == "none":
                    preds = _answers(vlm, x)
                    kept += [x.features.shape[1]] * len(part)
                    target += [0.25] * len(part)
                else:
                    with gistify.reduce(vlm, method, keep=keep) as session:
                        preds = _answers(vlm, x)
                    kept += session.tokens_out
                    if task == "easyvqa-4":
                        target += [on_target(r[0], e.target) for r, e in zip(session.reductions, part)]
                right += [vqa.correct(p, e.answer) for p, e in zip(preds, part)]
            records.append({
                "task": task, "method": method, "keep": keep, "n": len(right),
                "accuracy": sum(right) / len(right), "tokens": sum(kept) / len(kept), "correct": right,
                "on_target": sum(target) / len(target) if target and task == "easyvqa-4" else None,
            })  # fmt: skip
            r = records[-1]
            print(f"{task} {method} keep={keep}: {r['accuracy']:.3f}, {r['tokens']:.1f} tokens, {r['on_target']}")
    _write(out / "accuracy.json", {"machine": machine(), "n": n, "split": "test", "records": records})
    return records


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
    (part, x), = _batches(vlm, vqa.examples("easyvqa-4", "test", 1, seed=2), 1)  # fmt: skip
    t_encode = _median_time(lambda: vlm.encode(x.pixel_values), repeats)
    rows = []
    for method, keep in [("none", 1.0)] + [(m, k) for m in METHODS for k in (0.5, 0.25, 0.1)]:
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
    for method, keep in [("none", 1.0)] + [(m, 0.1) for m in METHODS if m != "recover"] + [("recover", 0.1)]:
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


def speed(out: Path, repeats: int = 7) -> dict:
    result = {"machine": machine(), "repeats": repeats, "vlm": speed_vlm(repeats), "llava_tiny": speed_llava(repeats)}
    _write(out / "speed.json", result)
    return result


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m gistify_bench.vision", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=("accuracy", "speed", "report"))
    p.add_argument("--n", type=int, default=200, help="questions per task (accuracy)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per configuration (speed)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_grad_enabled(False)
    if args.command == "accuracy":
        accuracy(args.n, args.out)
    elif args.command == "speed":
        speed(args.out, args.repeats)
    else:
        from gistify_bench.vision_report import write_report

        print(write_report(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
