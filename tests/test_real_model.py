"""Behaviour on the real embedded SmolLM2-135M (fetched by scripts/setup.sh): a planted fact survives.

A fact is planted in real Wikipedia prose at a seeded paragraph; its question does not contain the answer.
At keep=0.2 `reinforce` and its fast path `reinforce-fast` must keep the answer in at least 90% of 20
placements, where `random` keeps it in roughly 20% (issue 2).
"""

import random

import pytest

import gistify
from conftest import prose

pytestmark = pytest.mark.real

FACTS = [
    (
        "The archive password chosen by the committee was Nightingale.",
        "What was the archive password chosen by the committee?",
        "Nightingale",
    ),
    ("The lighthouse keeper's cat was named Biscuit.", "What was the name of the lighthouse keeper's cat?", "Biscuit"),
    (
        "The treaty was finally signed in the mountain town of Velmora.",
        "In which town was the treaty signed?",
        "Velmora",
    ),
    (
        "The expedition's supply ship was painted bright turquoise.",
        "What colour was the expedition's supply ship painted?",
        "turquoise",
    ),
    (
        "The secret code for the north gate of the museum is 4817.",
        "What is the secret code for the north gate of the museum?",
        "4817",
    ),
    (
        "Professor Alvarez kept her spare keys inside a blue teapot.",
        "Where did Professor Alvarez keep her spare keys?",
        "teapot",
    ),
    (
        "The winning horse at the county fair was called Thunderbolt.",
        "What was the winning horse at the county fair called?",
        "Thunderbolt",
    ),
    ("The village bakery opens every morning at 5:45.", "At what time does the village bakery open?", "5:45"),
    ("The pilot's lucky charm was a silver harmonica.", "What was the pilot's lucky charm?", "harmonica"),
    ("The new library was designed by the architect Ingrid Solberg.", "Who designed the new library?", "Solberg"),
]
ARTICLES = ["aardwolf.txt", "international_atomic_time.txt", "atomic_number.txt", "a_modest_proposal.txt", "ampere.txt"]


def placements(n=20, chars=4000):
    """(document, question, answer) for seeds 0..n-1: article, fact and paragraph all drawn from the seed."""
    for seed in range(n):
        rng = random.Random(seed)
        paras = [p for p in prose(rng.choice(ARTICLES))[:chars].split("\n") if p.strip()][:-1]
        fact, question, answer = FACTS[seed % len(FACTS)]
        i = rng.randrange(len(paras) + 1)
        yield "\n".join(paras[:i] + [fact] + paras[i:]), question, answer


@pytest.fixture(scope="module")
def survival():
    counts = {"reinforce": 0, "reinforce-fast": 0, "random": 0}
    for seed, (doc, question, answer) in enumerate(placements()):
        assert answer not in question and doc.count(answer) == 1
        for method in counts:
            params = {"seed": seed} if method == "random" else {}
            r = gistify.compress(doc, question, keep=0.2, method=method, **params)
            # the budget, unless the fidelity fallback had to go over it, which its note says
            assert abs(r.tokens_out - r.target_tokens) <= 1 or "over the budget" in r.notes[-1]
            counts[method] += answer in r.text
    print(f"\nanswer kept at keep=0.2 over 20 placements: {counts}")
    return counts


def test_reinforce_keeps_the_planted_fact(survival):
    assert survival["reinforce"] >= 18


def test_the_fast_path_keeps_it_as_well(survival):
    assert survival["reinforce-fast"] >= 18


def test_random_keeps_it_about_a_fifth_of_the_time(survival):
    assert 1 <= survival["random"] <= 9


def test_real_scorer_and_tokenizers():
    text = prose("ampere.txt")
    q = "What is the SI unit of electric current?"
    r = gistify.compress(text, q, keep=0.3, tokenizer="o200k_base", fallback="off")  # the raw cut: its budget
    assert r.tokenizer == "o200k_base" and abs(r.tokens_out - r.target_tokens) <= 1
    assert r.method == "reinforce-fast" and r.seconds > 0 and not r.notes  # the default, on its trained head
