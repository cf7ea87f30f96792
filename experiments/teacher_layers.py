"""Issue 13, step 2: which memory layer and which block layers make a memory the copied blocks read at step 0
(no training, no gate). Held-out copy windows (eval articles), per-token NLL with the window's own memory,
another window's, and none.

    python experiments/teacher_layers.py --config 6:2,5,8,11,14,17,20,23,26,29 --config 4:4,5,6,7 [--n 8]

Each --config is MEMORY_LAYER:BLOCK_LAYERS.
"""

import argparse
import json
import random
from pathlib import Path

import torch

from gistify.models import load
from gistify.vist.config import VistConfig
from gistify.vist.model import VistModel
from gistify_bench.data import wikipedia
from gistify_bench.options import default_out
from gistify_bench.train.teacher import Teacher, TeacherConfig
from gistify_bench.vist.corpus import Corpus, Windowing, eval_windows

p = argparse.ArgumentParser()
p.add_argument("--config", action="append", required=True)
p.add_argument("--n", type=int, default=8)
args = p.parse_args()
lm, tok = load()
lm = lm.float().eval()
host = VistModel(lm, tok, VistConfig())
folder = Path(default_out("train", "vist")) / "features"
held = Corpus(wikipedia("eval"), host, host.encoder, folder, Windowing(), "eval")
copies = [w.copied(random.Random("teacher-0")) for w in eval_windows(held, args.n, 1)]
batch = held.batch(copies)
with torch.no_grad():
    total, count = Teacher(lm, TeacherConfig(layer=2, xattn_layers="2", gate=-1)).nll(batch, "none")
print(json.dumps({"memory": "none", "copy": round(float(total.sum() / count.sum()), 4)}), flush=True)
for spec in args.config:
    layer, blocks = spec.split(":")
    teacher = Teacher(lm, TeacherConfig(layer=int(layer), xattn_layers=blocks, gate=-1))
    row = {"layer": int(layer), "blocks": blocks}
    with torch.no_grad():
        for memory in ("own", "other"):
            total, count = teacher.nll(batch, memory)
            row[memory] = round(float(total.sum() / count.sum()), 4)
    print(json.dumps(row), flush=True)
