"""Prefill FLOPs of a decoder-only LLM from its dimensions: what a visual-token reducer saves.

Counted per layer for a prompt of L tokens (a multiply-add = 2 FLOPs): the q/k/v/o projections
(2 L d (d + 2 d_kv + d)), the attention scores and their weighted sum over all L x L pairs (4 L^2 d, as LLM-Viewer
counts them, without the causal half), the gated MLP (6 L d d_ff), and once the LM head over every prompt token
(2 L d V). Norms, RoPE and softmax are left out (under 1%). The vision tower and projector are the same for every
method and are not counted, as in Recoverable Compression's table (docs/methods.md §2.3).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decoder:
    layers: int
    width: int  # d
    ffn: int  # d_ff of the gated MLP
    heads: int
    kv_heads: int
    vocab: int

    def prefill_flops(self, tokens: int, head_tokens: int | None = None, causal: bool = False) -> float:
        """A forward pass over `tokens`; the LM head over `head_tokens` of them (default all; generation's
        prefill needs 1, perplexity of the last k tokens k + 1). causal: count only the L (L + 1) / 2 pairs a
        causal kernel computes (torch's CPU flash kernel skips the masked blocks) instead of all L x L."""
        d, d_kv = self.width, self.width * self.kv_heads // self.heads
        projections = 2 * tokens * d * (2 * d + 2 * d_kv)
        attention = 2 * tokens * (tokens + 1) * d if causal else 4 * tokens * tokens * d
        mlp = 6 * tokens * d * self.ffn
        head = tokens if head_tokens is None else head_tokens
        return self.layers * (projections + attention + mlp) + 2 * head * d * self.vocab

    def cross_attention_flops(self, tokens: int, memory: int, memory_dim: int) -> float:
        """One CEPE block (docs/methods.md §3.4): q and o over the `tokens` text positions, k and v over the
        `memory` tokens (width memory_dim), scores and weighted sum over tokens x memory pairs."""
        d, d_kv = self.width, self.width * self.kv_heads // self.heads
        return 2 * tokens * d * 2 * d + 2 * memory * memory_dim * 2 * d_kv + 4 * tokens * memory * d

    @classmethod
    def from_config(cls, config) -> Decoder:
        """From a transformers Llama-family config."""
        return cls(
            layers=config.num_hidden_layers,
            width=config.hidden_size,
            ffn=config.intermediate_size,
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads,
            vocab=config.vocab_size,
        )


def resampler_flops(images: int, tokens: int, latents: int, input_dim: int, dim: int, depth: int, inner: int,
                    ff_mult: int) -> float:  # fmt: skip
    """gistify.vist.resampler.PerceiverResampler on `images` images of `tokens` encoder tokens: the input
    projection, then per block the latents' queries over [features; latents] (inner = heads x head_dim) and the
    feed-forward; `latents` counts the CLS latent too."""
    keys = tokens + latents
    block = 2 * latents * dim * inner + 2 * keys * dim * 2 * inner + 4 * latents * keys * inner
    block += 2 * latents * inner * dim + 2 * 2 * latents * dim * ff_mult * dim
    return images * (2 * tokens * input_dim * dim + depth * block)


def onnx_flops(model, inputs: dict[str, list[int]], outputs: list[str] | None = None) -> float:
    """Multiply-add FLOPs (x2) of the Conv, MatMul and Gemm nodes of an ONNX model at fixed input shapes;
    with `outputs`, only the nodes those outputs depend on (elementwise ops, pooling and softmax left out).
    Shapes come from one onnxruntime run on zeros (static shape inference loses them after dynamic reshapes)."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())  # a copy: every tensor becomes an output
    g = model.graph
    del g.output[:]
    names = [o for n in g.node for o in n.output if o]
    g.output.extend(onnx.ValueInfoProto(name=o) for o in names)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {k: np.zeros(v, dtype=np.float32) for k, v in inputs.items()}
    shapes = {name: list(value.shape) for name, value in zip(names, session.run(names, feeds))}
    shapes |= {t.name: list(numpy_helper.to_array(t).shape) for t in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    nodes = list(g.node)
    if outputs:  # the ancestors of the requested outputs
        seen, todo = set(), list(outputs)
        while todo:
            node = producer.get(todo.pop())
            if node is not None and id(node) not in seen:
                seen.add(id(node))
                todo.extend(node.input)
        nodes = [n for n in nodes if id(n) in seen]
    total = 0.0
    for n in nodes:
        out = shapes.get(n.output[0])
        if not out or 0 in out:
            continue
        size = 1
        for s in out:
            size *= s
        if n.op_type == "Conv":
            w = shapes[n.input[1]]  # (C_out, C_in / groups, kh, kw)
            total += 2 * size * w[1] * w[2] * w[3]
        elif n.op_type in ("MatMul", "Gemm"):
            a = shapes.get(n.input[0])
            if a:
                trans = n.op_type == "Gemm" and any(at.name == "transA" and at.i for at in n.attribute)
                total += 2 * size * (a[-2] if trans else a[-1])
    return total


# Vicuna-7B v1.5 (Llama-2-7B dimensions), the LLM of LLaVA-1.5-7B.
VICUNA_7B = Decoder(layers=32, width=4096, ffn=11008, heads=32, kv_heads=32, vocab=32000)
LLAVA_VISUAL_TOKENS = 576  # CLIP ViT-L/14 at 336 px


def llava_table(text_tokens: tuple[int, ...] = (40, 60, 80), keep: float = 0.1) -> list[dict]:
    """LLaVA-1.5-7B prefill TFLOPs with all 576 visual tokens and with `keep` of them, for a few text lengths
    (the paper's prompt length is not stated)."""
    rows = []
    for t in text_tokens:
        kept = round(keep * LLAVA_VISUAL_TOKENS)
        full = VICUNA_7B.prefill_flops(LLAVA_VISUAL_TOKENS + t) / 1e12
        reduced = VICUNA_7B.prefill_flops(kept + t) / 1e12
        rows.append({"text_tokens": t, "visual_tokens": kept, "full_tflops": full, "reduced_tflops": reduced})
    return rows
