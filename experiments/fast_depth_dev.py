"""Dev check of how deep the fast path must read: `reinforce-fast`'s steps 1-6 with the node features taken from layer
L of the scorer (0 = input embeddings) and the self-information from the shipped layer-4 head in every case, so
only the features' depth changes. On the "train" articles' needles and cloze questions (never the "eval" ones).

    python experiments/fast_depth_dev.py LAYERS N KEEPS     # e.g. 0,1,2,4 12 0.1,0.33

Prints, per kind and layer, the survival of the asked values (needles) or of the answer (cloze QA, the qa task's
construction) at each keep. Used to choose layer 2 for `reinforce-shallow` (docs/methods.md §1.2.3).
"""

import statistics
import sys

import torch

from gistify.text.fast import FastPath
from gistify.text.scorer import Scorer
from gistify_bench.eval.reader import Reader
from gistify_bench.eval.runner import gistify_compressor
from gistify_bench.eval.task import found
from gistify_bench.eval.tasks.needle import Needle
from gistify_bench.eval.tasks.wiki import ClozeQA

torch.set_num_threads(1)
reader = Reader.load()
scorer = Scorer(reader.model, reader.tokenizer)
four = FastPath(scorer.model, 4)
last = {}


def run4(x: torch.Tensor):
    """Every layer's states of one window and the layer-4 head's u, once per window for all the layers asked."""
    key = tuple(x[0].tolist())
    if key not in last:
        last.clear()
        states = four.trunk(input_ids=x, output_hidden_states=True).hidden_states
        h4 = states[4][0].float()
        last[key] = ([h[0].float() for h in states], four.head(h4[:-1], h4[1:]))
    return last[key]


class Depth:
    """Stands in for the fast path of layer L: layer L's states, the layer-4 head's u."""

    def __init__(self, layer: int):
        self.layer = layer

    def window(self, x):
        states, u = run4(x)
        return states[self.layer], u


LAYERS = [int(a) for a in sys.argv[1].split(",")]
N, KEEPS = int(sys.argv[2]), [float(k) for k in sys.argv[3].split(",")]
for layer in LAYERS:
    if layer != 4:
        scorer._fast[layer, torch.float32] = Depth(layer)
compressors = {layer: gistify_compressor("reinforce-fast", reader, scorer, layer=layer) for layer in LAYERS}
scores = {}
for kind in ("multivalue", "multikey", "single", "qa"):
    task = ClozeQA(length=1024, split="train") if kind == "qa" else Needle(kind=kind, length=1024, split="train")
    for ex in task.examples(N, seed=0):
        for layer in LAYERS:
            for keep in KEEPS:
                text = compressors[layer](ex.context, ex.question, keep).text
                kept = found(ex.answers, text, False) if kind == "qa" else task.survival(ex, text)
                scores.setdefault((kind, layer, keep), []).append(float(kept))
    for layer in LAYERS:
        row = " ".join(f"keep {k}: {statistics.mean(scores[kind, layer, k]):.3f}" for k in KEEPS)
        print(f"{kind:<11} layer {layer}: {row}", flush=True)
