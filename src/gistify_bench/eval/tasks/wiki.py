"""Tasks over real Wikipedia articles of the "eval" split (gistify_bench.data).

- `qa-<len>`: question answering whose answer is in the text, built programmatically and checked: a
  sentence of the context holding a number that occurs exactly once in the context is the question, with
  that number blanked; the compressors see the whole blanked sentence. The reader is asked as a language
  model is asked a cloze: after the (compressed) context it reads the sentence up to the blank and must
  continue with the number. (Asked in words, "fill in the blank", SmolLM2-135M and Gemma 3 270M both
  got 0/8 on seed 0 with the full context; completing the sentence, SmolLM2 got 7/8.)
- `lm-<len>`: long-context language modelling (Vist's protocol, docs/methods.md §3.7, at small scale): the
  perplexity of the 128 tokens that follow a context of about <len> tokens, the context compressed
  with no question (the continuation is never shown to the compressor).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gistify_bench.cloze import BLANK, NUMBER, cloze_questions, tokenizer
from gistify_bench.eval.task import Example, Task, register


@dataclass
class ClozeQA(Task):
    length: int = 1024
    split: str = "eval"  # articles it draws from (gistify_bench.data); the RL controller trains on "train"
    name = "qa"
    max_new_tokens = 12
    chat = False  # a completion, not a chat turn

    def prompt(self, context: str, question: str) -> str:
        return f"{context}\n\n{question.split(BLANK)[0].rstrip()}"

    def score(self, example: Example, prediction: str) -> float:
        # The reader goes on after the number; only the first number it writes is its answer.
        first = NUMBER.search(prediction)
        return float(first is not None and first.group() == example.answers[0])

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        return [
            Example(id=q.id, context=q.context, question=q.question, answers=[q.answer], meta={"title": q.title})
            for q in cloze_questions(self.length, self.split, n, seed)
        ]


@dataclass
class ContinuationLM(Task):
    length: int = 1024
    continuation: int = 128
    split: str = "eval"  # articles it draws from (gistify_bench.data); experiments/reinforce_lm_dev.py: "dev", "train"
    name = "lm"
    metric = "perplexity"

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        from gistify_bench.data import wikipedia

        articles, tok = wikipedia(self.split), tokenizer()
        need = self.length + self.continuation
        titles = [t for t in sorted(articles) if len(articles[t]) > need * 6]  # ~4-5 characters per token
        out, attempt = [], 0
        while len(out) < n:
            rng = random.Random(f"lm-{self.length}-{seed}-{attempt}")
            attempt += 1
            text = articles[rng.choice(titles)]
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            starts = [a for a, _ in enc["offset_mapping"]]
            if len(starts) < need + 1:
                continue
            first = rng.randrange(len(starts) - need)
            # cut at whitespace so that context and continuation tokenize as they did together
            a = text.rfind("\n", 0, starts[first]) + 1
            b = text.rfind(" ", a, starts[first + self.length]) if self.length else a
            c_end = starts[min(len(starts) - 1, first + need)]
            context, continuation = text[a:b], text[b:c_end]
            if (
                not context.strip()
                or len(tok(continuation, add_special_tokens=False).input_ids) < self.continuation // 2
            ):
                continue
            out.append(
                Example(
                    id=f"{seed}-{len(out)}",
                    context=context,
                    question="",
                    answers=[],
                    meta={"continuation": continuation},
                )
            )
        return out

    def evaluate(self, reader, example: Example, context: str) -> dict:
        r = reader.continuation_nll(context, example.meta["continuation"])
        return {
            "prediction": None,
            "score": math.exp(r["nll"]),
            "nll": r["nll"],
            "prompt_tokens": r["prompt_tokens"],
            "prefill_s": r["forward_s"],
        }


for _k, _len in (("1k", 1024), ("2k", 2048), ("4k", 4096)):
    register(f"qa-{_k}", ClozeQA(length=_len))
    register(f"lm-{_k}", ContinuationLM(length=_len))
