"""Needle retrieval in real prose, RULER-style (Hsieh et al., 2024, https://arxiv.org/abs/2404.06654).

The haystack is Wikipedia articles of the "eval" split (gistify_bench.data; another with `split`, for dev
experiments), shuffled by the seed and cut at paragraph ends to about `length` reader tokens. Needles are RULER's
"special magic number" sentences placed at seeded paragraph boundaries:
- single: one needle, asked for;
- multikey: four needles with different keys, one asked for (the others are distractors);
- multivalue: four needles with the same key; all four values asked for (score: fraction found).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gistify_bench.eval.task import Example, Task, register

ADJECTIVES = [
    "amber",
    "brisk",
    "copper",
    "dusty",
    "eager",
    "fallow",
    "gentle",
    "hollow",
    "ivory",
    "jagged",
    "keen",
    "lunar",
    "mellow",
    "nimble",
    "opal",
    "placid",
    "quiet",
    "russet",
    "silent",
    "tawny",
]
NOUNS = [
    "anchor",
    "beacon",
    "canyon",
    "delta",
    "ember",
    "falcon",
    "glacier",
    "harbor",
    "island",
    "juniper",
    "kestrel",
    "lantern",
    "meadow",
    "nebula",
    "orchard",
    "pebble",
    "quarry",
    "river",
    "summit",
    "tundra",
]


@dataclass
class Needle(Task):
    kind: str = "single"  # "single", "multikey", "multivalue"
    length: int = 1024  # target context length in reader tokens
    needles: int = 4  # for multikey / multivalue
    split: str = "eval"  # the articles' split (gistify_bench.data); dev experiments use "dev" and "train"
    name = "needle"

    @property
    def max_new_tokens(self) -> int:  # SmolLM2 tends to echo the sentence before the number
        return 64 if self.kind == "multivalue" else 32

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        from gistify.models import load
        from gistify_bench.data import wikipedia

        articles = wikipedia(self.split)
        _, tokenizer = load(None)  # lengths in the default reader's tokens
        out = []
        for i in range(n):
            rng = random.Random(f"{seed}-{i}-{self.kind}-{self.length}")
            paras = _haystack(articles, rng, self.length, tokenizer)
            count = 1 if self.kind == "single" else self.needles
            keys = rng.sample([f"{a}-{b}" for a in ADJECTIVES for b in NOUNS], count)
            if self.kind == "multivalue":
                keys = [keys[0]] * count
            values = [str(rng.randrange(1_000_000, 10_000_000)) for _ in keys]
            for key, value in zip(keys, values):
                paras.insert(rng.randrange(len(paras) + 1), f"One of the special magic numbers for {key} is: {value}.")
            if self.kind == "multivalue":
                question = f"What are all the special magic numbers for {keys[0]} mentioned in the text?"
                answers = values
            else:
                question = f"What is the special magic number for {keys[0]} mentioned in the text?"
                answers = values[:1]
            out.append(
                Example(
                    id=f"{seed}-{i}",
                    context="\n".join(paras),
                    question=question,
                    answers=answers,
                    all_answers=self.kind == "multivalue",
                    meta={"keys": keys, "values": values},
                )
            )
        return out


def _haystack(articles: dict[str, str], rng: random.Random, length: int, tokenizer) -> list[str]:
    """Paragraphs of shuffled articles, whole paragraphs, until about `length` tokens."""
    titles = sorted(articles)
    rng.shuffle(titles)
    paras, used = [], 0
    for t in titles:
        for p in articles[t].split("\n"):
            if not p.strip():
                continue
            cost = len(tokenizer(p, add_special_tokens=False).input_ids) + 1
            if used + cost > length:
                return paras or [p]
            paras.append(p)
            used += cost
    return paras


# 16k is longer than the default reader's window (8,192 tokens): only compressed contexts are read there (runner.run)
for _kind in ("single", "multikey", "multivalue"):
    for _k, _len in (("1k", 1024), ("2k", 2048), ("4k", 4096), ("16k", 16384)):
        register(f"needle-{_kind}-{_k}", Needle(kind=_kind, length=_len))
