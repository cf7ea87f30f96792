"""Dev set for choosing reinforce's defaults: planted facts in articles and with facts no test uses.

    python experiments/reinforce_dev.py KEEP '[{"method": "reinforce"}, {"sigma": 32, "layer": 2, "query": "mean"}]'

Each config (method parameters; "method" defaults to reinforce) compresses 16 seeded placements of 8 facts
in three articles (abacus, arithmetic mean, astronaut: none used by tests/test_real_model.py) at KEEP,
and the script prints how often the answer survives, with the failing seeds. The defaults `layer=4`,
`sigma=4`, `query="max"` were chosen with it; the tests' own placements were not used for the choice.
"""

import json
import random
import sys
from pathlib import Path

import gistify

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
FACTS = [
    (
        "The harbour master's favourite drink was cardamom tea.",
        "What was the harbour master's favourite drink?",
        "cardamom",
    ),
    (
        "The stolen painting was later found in a garage in Lisbon.",
        "Where was the stolen painting later found?",
        "Lisbon",
    ),
    ("The team's mascot is a purple penguin named Oskar.", "What is the name of the team's mascot?", "Oskar"),
    ("Entry to the observatory costs 37 dollars per person.", "How much does entry to the observatory cost?", "37"),
    (
        "The first prize in the poetry contest went to Marguerite Okafor.",
        "Who won the first prize in the poetry contest?",
        "Okafor",
    ),
    (
        "The bridge was built using granite from the quarry at Dunmore.",
        "Where did the granite for the bridge come from?",
        "Dunmore",
    ),
    ("The submarine's call sign was Kestrel Nine.", "What was the submarine's call sign?", "Kestrel"),
    ("The festival is always held on the second Sunday of October.", "When is the festival held?", "October"),
]
ARTICLES = ["abacus.txt", "arithmetic_mean.txt", "astronaut.txt"]


def placements(n=16, chars=4000):
    for seed in range(n):
        rng = random.Random(1000 + seed)
        text = (DATA / rng.choice(ARTICLES)).read_text(encoding="utf-8")[:chars]
        paras = [p for p in text.split("\n") if p.strip()][:-1]
        fact, question, answer = FACTS[seed % len(FACTS)]
        i = rng.randrange(len(paras) + 1)
        doc = "\n".join(paras[:i] + [fact] + paras[i:])
        assert doc.count(answer) == 1, answer
        yield doc, question, answer


def main():
    keep, configs = float(sys.argv[1]), json.loads(sys.argv[2])
    hits, fails = [0] * len(configs), [[] for _ in configs]
    for seed, (doc, question, answer) in enumerate(placements()):
        for i, cfg in enumerate(configs):
            params = {k: v for k, v in cfg.items() if k != "method"}
            r = gistify.compress(doc, question, keep=keep, method=cfg.get("method", "reinforce"), **params)
            hits[i] += answer in r.text
            if answer not in r.text:
                fails[i].append(seed)
    for cfg, h, f in zip(configs, hits, fails):
        print(f"{h}/16 kept at keep={keep}  {json.dumps(cfg)}  failing seeds {f}")


if __name__ == "__main__":
    main()
