"""Prefill FLOPs of a decoder-only LLM from its dimensions: what a visual-token reducer saves.

Counted per layer for a prompt of L tokens (a multiply-add = 2 FLOPs): the q/k/v/o projections
(2 L d (d + 2 d_kv + d)), the attention scores and their weighted sum over all L x L pairs (4 L^2 d, as LLM-Viewer
counts them, without the causal half), the gated MLP (6 L d d_ff), and once the LM head over every prompt token
(2 L d V). Norms, RoPE and softmax are left out (under 1%). The vision tower and projector are the same for every
method and are not counted, as in Recoverable Compression's table (methods.md §2.3).
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

    def prefill_flops(self, tokens: int) -> float:
        d, d_kv = self.width, self.width * self.kv_heads // self.heads
        projections = 2 * tokens * d * (2 * d + 2 * d_kv)
        attention = 4 * tokens * tokens * d
        mlp = 6 * tokens * d * self.ffn
        return self.layers * (projections + attention + mlp) + 2 * tokens * d * self.vocab


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
