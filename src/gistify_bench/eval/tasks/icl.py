"""In-context classification with many demonstrations (Vist's ICL protocol, docs/methods.md §3.7, at small scale).

Labelled data available offline: sentences of Wikipedia articles ("eval" split), labelled with their
article's title. Each example draws `classes` articles; the context holds `per_class` labelled
demonstration sentences of each, shuffled; the query is another sentence of one of them. The
demonstrations are what gets compressed; the reader must name the query's topic.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from gistify_bench.eval.task import Example, Task, normalize, register

_SENTENCE = re.compile(r"[^.!?\n]+[.!?]")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(text) if 8 <= len(s.split()) <= 30]


@dataclass
class TopicICL(Task):
    classes: int = 4
    per_class: int = 8
    name = "icl"
    max_new_tokens = 8
    chat = False  # the demonstrations are a pattern to continue, so the reader reads plain text

    def examples(self, n: int, seed: int = 0) -> list[Example]:
        from gistify_bench.data import wikipedia

        articles = wikipedia("eval")
        pools = {t: sentences(text) for t, text in articles.items() if "(" not in t}
        pools = {t: s for t, s in pools.items() if len(s) > self.per_class + 1}
        titles = sorted(pools)
        out = []
        for i in range(n):
            rng = random.Random(f"icl-{self.classes}-{self.per_class}-{seed}-{i}")
            labels = rng.sample(titles, self.classes)
            demos, query_label = [], labels[rng.randrange(self.classes)]
            query = None
            for label in labels:
                picked = rng.sample(pools[label], self.per_class + (label == query_label))
                if label == query_label:
                    query = picked.pop()
                demos += [(s, label) for s in picked]
            rng.shuffle(demos)
            context = "\n".join(f"Sentence: {s}\nTopic: {label}" for s, label in demos)
            out.append(
                Example(
                    id=f"{seed}-{i}", context=context, question=query, answers=[query_label], meta={"labels": labels}
                )
            )
        return out

    def prompt(self, context: str, question: str) -> str:
        return f"{context}\nSentence: {question}\nTopic:"

    def score(self, example: Example, prediction: str) -> float:
        """Correct when the prediction names the right topic and no other of the example's topics."""
        first_line = prediction.strip().split("\n")[0]  # the reader goes on with the next "Sentence:" line
        named = [lab for lab in example.meta["labels"] if f" {normalize(lab)} " in f" {normalize(first_line)} "]
        return float(named == example.answers)

    def survival(self, example: Example, compressed: str) -> float:
        """Share of the right topic's demonstrations whose label line survived compression."""
        label = example.answers[0]
        return min(1.0, compressed.count(f"Topic: {label}") / self.per_class)


register("icl-topics", TopicICL())
