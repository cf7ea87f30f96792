"""The frozen LLM's training-step cost in float32 against bfloat16 (issue 24, item 5): forward and backward of
SmolLM2-135M on 4 x 128 tokens, one thread, both dtypes alternated in one process (so the machine's load is
shared). `python experiments/vist_bf16_step.py`; the distillation trains through the bfloat16 copy
(`--train-dtype`)."""

import copy
import time

import torch

from gistify.models import load

torch.set_num_threads(1)
lm, tok = load()
lm = lm.float().eval().requires_grad_(False)
lb = copy.deepcopy(lm).to(torch.bfloat16)
ids = torch.randint(0, 40000, (4, 128))
for name, m in (("fp32", lm), ("bf16", lb), ("fp32", lm), ("bf16", lb)):
    ts = []
    for _ in range(2):
        x = m.get_input_embeddings()(ids).detach().requires_grad_(True)
        t = time.perf_counter()
        out = m(inputs_embeds=x).logits.float()
        out.logsumexp(-1).mean().backward()
        ts.append(time.perf_counter() - t)
    print(name, [round(v, 2) for v in ts], flush=True)
