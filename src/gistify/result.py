"""The result of compressing a text: what was kept, where it came from, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Compressed:
    """A compressed text with its provenance.

    `kept_spans` are [start, end) character offsets into `source`; the compressed text is those spans in
    order, joined by original whitespace. Tokens are counted with `tokenizer`.
    """

    text: str
    source: str = field(repr=False)
    kept_spans: list[tuple[int, int]]
    tokens_in: int
    tokens_out: int
    target_tokens: int
    budget: str
    method: str
    params: dict[str, Any]
    tokenizer: str
    seconds: float  # compression time, excluding the one-time model load
    protected: list[tuple[int, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # What the output lost of the source's numbers, negations, named entities and identifiers (text methods:
    # gistify.text.fidelity.risk); empty where a method does not report it.
    risk: dict[str, Any] = field(default_factory=dict)
    fell_back: bool = False  # the text family's `fallback` replaced a result that changed the meaning
    fallback_step: str | None = None  # which fallback gave this result (gistify.text.pipeline's ladder)
    # [start, end) of the source: units kept only in part, their head cut inside (a word longer than the budget
    # allows); each is also one of `kept_spans`, or the end of one
    cut: list[tuple[int, int]] = field(default_factory=list)

    @property
    def keep_ratio(self) -> float:
        """Achieved fraction of tokens kept."""
        return self.tokens_out / self.tokens_in if self.tokens_in else 1.0

    @property
    def dropped_spans(self) -> list[tuple[int, int]]:
        """[start, end) offsets of the source text that were dropped (whitespace-only gaps included)."""
        out, pos = [], 0
        for s, e in self.kept_spans:
            if s > pos:
                out.append((pos, s))
            pos = e
        if pos < len(self.source):
            out.append((pos, len(self.source)))
        return out

    def to_dict(self, include_source: bool = False) -> dict[str, Any]:
        d = {
            "text": self.text,
            "kept_spans": [list(s) for s in self.kept_spans],
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "target_tokens": self.target_tokens,
            "keep_ratio": self.keep_ratio,
            "budget": self.budget,
            "method": self.method,
            "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()},
            "tokenizer": self.tokenizer,
            "seconds": self.seconds,
            "protected": [list(s) for s in self.protected],
            "notes": self.notes,
            "risk": self.risk,
            "fell_back": self.fell_back,
            "fallback_step": self.fallback_step,
            "cut": [list(s) for s in self.cut],
        }
        if include_source:
            d["source"] = self.source
        return d
