"""The reader: the model that answers from a (compressed) context, with prefill timed apart from decoding."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Reader:
    model: Any
    tokenizer: Any
    name: str

    @classmethod
    def load(cls, name_or_path: str | None = None) -> Reader:
        from gistify import models

        model, tokenizer = models.load(name_or_path)
        return cls(model, tokenizer, name_or_path or models.DEFAULT_MODEL)

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode(self, message: str, chat: bool = True) -> list[int]:
        """Token ids of one user message, through the chat template where the model has one (and `chat`),
        else as plain text after BOS. A base model asked a question (chat without a template) reads it as
        "message\nAnswer:", the completion format base models follow (as in the GPT-3 paper, arXiv 2005.14165)."""
        if chat and not self.has_chat_template:
            message += "\nAnswer:"
        if chat and self.has_chat_template:
            ids = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": message}], add_generation_prompt=True, tokenize=True
            )
            return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        return bos + self.tokenizer(message, add_special_tokens=False).input_ids

    @torch.inference_mode()
    def answer(self, message: str, max_new_tokens: int = 32, chat: bool = True) -> dict[str, Any]:
        """Greedy answer to `message`: {"text", "prompt_tokens", "prefill_s", "decode_s"}."""
        ids = torch.tensor([self.encode(message, chat)])
        t0 = time.perf_counter()
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - t0
        stops = {self.tokenizer.eos_token_id, self.tokenizer.convert_tokens_to_ids("<|im_end|>")} - {None}
        # A base model's answer ends at the line's end; it goes on to invent the next "Question:" line.
        stop_at_newline = chat and not self.has_chat_template
        new: list[int] = []
        past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
        t1 = time.perf_counter()
        while nxt not in stops and len(new) < max_new_tokens:
            if stop_at_newline and new and "\n" in self.tokenizer.decode([nxt]):
                break
            new.append(nxt)
            out = self.model(input_ids=torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
        return {
            "text": self.tokenizer.decode(new, skip_special_tokens=True).strip(),
            "prompt_tokens": ids.shape[1],
            "prefill_s": prefill,
            "decode_s": time.perf_counter() - t1,
        }

    @torch.inference_mode()
    def continuation_nll(self, context: str, continuation: str) -> dict[str, Any]:
        """Mean negative log-likelihood (nats/token) of `continuation` after `context`, read as plain text
        (no chat template: the language-modelling protocol of docs/methods.md §3.7)."""
        bos = [self.tokenizer.bos_token_id] if self.tokenizer.bos_token_id is not None else []
        ctx = bos + self.tokenizer(context, add_special_tokens=False).input_ids
        cont = self.tokenizer(continuation, add_special_tokens=False).input_ids
        ids = torch.tensor([ctx + cont])
        t0 = time.perf_counter()
        logits = self.model(input_ids=ids).logits[0, len(ctx) - 1 : -1].float()  # (len(cont), vocab)
        seconds = time.perf_counter() - t0
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(cont))
        return {"nll": float(nll), "tokens": len(cont), "prompt_tokens": ids.shape[1], "forward_s": seconds}
