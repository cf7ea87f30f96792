"""Dev check of where `reinforce-shallow` loses to `reinforce-fast`: its layer-2 node features, or its layer-2
surprisal head? Each arm runs `reinforce-fast`'s steps 1-6 (float32) with the node features from layer 2 or 4
and the self-information u from the layer-2 or the layer-4 head, so one source changes at a time. On the
"train" articles' needles and cloze questions (never the "eval" ones): the survival of the asked values
(needles) or of the answer (cloze QA).

    python experiments/shallow_loss_dev.py N KEEPS [KINDS] [--reader] [--adapter PATH]
    # e.g. 40 0.1,0.2 qa,single --reader

`--adapter PATH` adds an arm: layer 2's states through the small layer that experiments/deepen_dev.py trained
to predict layer 4's, with the layer-2 head's u (what a cheaper fast path would compute). With `--reader`,
also the benchmark's reader's score on each compressed text (its prompt and scoring; about 3 s per answer):
survival says whether the answer is still there, the reader whether the rest lets it be found.
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
paths = {layer: FastPath(scorer.model, layer) for layer in (2, 4)}


class Arm:
    """Stands in for the fast path: layer `states`' states (or "adapter": layer 2's through the trained small
    layer), the layer-`head` head's u."""

    def __init__(self, states: int | str, head: int):
        self.states, self.head = states, head

    def window(self, x):
        hs = paths[4].trunk(input_ids=x, output_hidden_states=True).hidden_states
        h = {layer: hs[layer][0].float() for layer in (2, 4)}
        if self.states == "adapter":
            h["adapter"] = run_adapter(adapter, scorer.model.model.rotary_emb, h[2]).float()
        return h[self.states], paths[self.head].head(h[self.head][:-1], h[self.head][1:])


ARMS = {"states 4, head 4 (fast)": (4, 4), "states 2, head 4": (2, 4), "states 4, head 2": (4, 2),
        "states 2, head 2 (shallow, fp32)": (2, 2)}  # fmt: skip
argv = sys.argv[1:]
if "--adapter" in argv:
    from deepen_dev import adapter_layer, run_adapter

    saved = torch.load(argv.pop(argv.index("--adapter") + 1))
    argv.remove("--adapter")
    adapter = adapter_layer(scorer.model, saved["heads"], saved["mlp"])
    adapter.load_state_dict(saved["state"])
    adapter.eval()
    ARMS["adapter (layer 2 + small layer), head 2"] = ("adapter", 2)
args = [a for a in argv if a != "--reader"]
N, KEEPS = int(args[0]), [float(k) for k in args[1].split(",")]
KINDS, READER = (args[2] if len(args) > 2 else "qa,single,multivalue,multikey").split(","), "--reader" in sys.argv
compressors = {}
for i, (name, (states, head)) in enumerate(ARMS.items()):
    layer = 10 + i  # a private slot per arm in the scorer's fast-path table; `layer` only names it
    scorer._fast[layer, torch.float32] = Arm(states, head)
    compressors[name] = gistify_compressor("reinforce-fast", reader, scorer, layer=layer)
scores = {}
for kind in KINDS:
    task = ClozeQA(length=1024, split="train") if kind == "qa" else Needle(kind=kind, length=1024, split="train")
    for ex in task.examples(N, seed=0):
        for name, run in compressors.items():
            for keep in KEEPS:
                text = run(ex.context, ex.question, keep).text
                kept = found(ex.answers, text, False) if kind == "qa" else task.survival(ex, text)
                scores.setdefault((kind, name, keep), []).append(float(kept))
                if READER:
                    scores.setdefault((kind, name, keep, "reader"), []).append(task.evaluate(reader, ex, text)["score"])
    for name in ARMS:
        row = " ".join(
            f"keep {k}: {statistics.mean(scores[kind, name, k]):.3f}"
            + (f" (reader {statistics.mean(scores[kind, name, k, 'reader']):.3f})" if READER else "")
            for k in KEEPS
        )
        print(f"{kind:<11} {name:<32} {row}", flush=True)
