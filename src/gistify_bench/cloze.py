"""Cloze questions over real Wikipedia articles (gistify_bench.data), checked to have one answer: a sentence of the
context holding a number that occurs exactly once in the context, with that number blanked.

Shared by the evaluation task `qa-<len>` (gistify_bench.eval.tasks.wiki, on the "eval" articles) and the RL
controller's training inputs (gistify_bench.train.controller, on the "train" articles), so that training imports
no evaluation module.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

BLANK = "___"
NUMBER = re.compile(r"(?<![\w.,])\d{1,4}(?:,\d{3})*(?:\.\d+)?(?![\w]|[.,]\d)")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")


@dataclass
class Cloze:
    id: str
    context: str
    question: str  # the sentence with its number blanked (BLANK)
    answer: str  # the number
    title: str  # the article's


def tokenizer():
    """The embedded SmolLM2's tokenizer: the lengths of contexts are counted in it."""
    from gistify.models import load

    return load(None)[1]


def _paragraph_window(text: str, rng: random.Random, length: int, tok) -> str:
    """Whole paragraphs of `text` from a seeded paragraph on, about `length` tokens."""
    paras = [p for p in text.split("\n") if p.strip()]
    start = rng.randrange(max(1, len(paras) // 2))
    out, used = [], 0
    for p in paras[start:]:
        cost = len(tok(p, add_special_tokens=False).input_ids) + 1
        if used + cost > length and out:
            break
        out.append(p)
        used += cost
    return "\n".join(out)


def cloze_questions(length: int, split: str, n: int, seed: int = 0) -> list[Cloze]:
    """`n` questions with contexts of about `length` tokens from the `split` articles, the same for the same
    (length, split, n, seed)."""
    from gistify_bench.data import wikipedia

    articles, tok = wikipedia(split), tokenizer()
    titles = sorted(articles)
    out, attempt = [], 0
    while len(out) < n:
        rng = random.Random(f"qa-{length}-{seed}-{attempt}")
        attempt += 1
        title = rng.choice(titles)
        context = _paragraph_window(articles[title], rng, length, tok)
        candidates = []
        for m in _SENTENCE.finditer(context):
            sentence = m.group().strip()
            if not 8 <= len(sentence.split()) <= 45:
                continue
            for num in NUMBER.finditer(sentence):
                if len(sentence[: num.start()].split()) < 3:
                    continue  # the reader needs the sentence's start to know which number is asked
                if len(re.findall(rf"(?<![\w.,]){re.escape(num.group())}(?![\w]|[.,]\d)", context)) == 1:
                    candidates.append((sentence, num))
        if len(tok(context).input_ids) < length * 0.6 or not candidates:
            continue  # a short article or one without a checkable number: draw again
        sentence, num = rng.choice(candidates)
        blanked = sentence[: num.start()] + BLANK + sentence[num.end() :]
        out.append(Cloze(f"{seed}-{len(out)}", context, blanked, num.group(), title))
    return out
