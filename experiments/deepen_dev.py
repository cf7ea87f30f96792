"""Dev experiment: can one small decoder layer on the trunk's layer-2 states stand in for layers 3 and 4?

    python experiments/deepen_dev.py TOKENS HEADS MLP STEPS LR OUT   # e.g. 150000 2 512 1200 1e-3 adapter.pt

`reinforce-shallow` reads layer 2 and loses to `reinforce-fast` (layer 4) at keep 0.1; experiments/
shallow_loss_dev.py puts the loss in the layer-2 states, not its surprisal head. This trains a LlamaDecoderLayer
(HEADS heads of 64, an MLP of width MLP: about a third of a SmolLM2 layer's multiply-adds for 2 and 512) on the
float32 trunk's layer-2 states of the "train" articles' windows (BOS + 1,024 tokens) to predict their layer-4
states (mean squared error per dimension, standardised by the train states' mean and deviation; o_proj and
down_proj start at zero, so it starts as the identity), and prints the mean cosine between predicted and true
layer-4 states of the "dev" articles, each centred on the true states' mean (what reinforce's graph and prior
compare), beside layer 2's own cosine. The layer's weights go to OUT, for
`python experiments/shallow_loss_dev.py N KEEPS --adapter OUT`.
"""

import copy
import math
import sys
import time

import torch
import torch.nn.functional as F
from transformers.models.llama.modeling_llama import LlamaDecoderLayer

from gistify.text.fast import FastPath
from gistify.text.scorer import Scorer
from gistify_bench.data import wikipedia


def adapter_layer(model, heads: int, mlp: int) -> LlamaDecoderLayer:
    """The small layer: the scorer's config with `heads` heads (and as many key-value heads) and an MLP of `mlp`."""
    config = copy.deepcopy(model.config)
    config.num_attention_heads = config.num_key_value_heads = heads
    config.intermediate_size, config.head_dim = mlp, model.config.hidden_size // model.config.num_attention_heads
    return LlamaDecoderLayer(config, layer_idx=0)


def run_adapter(layer, rotary, h2: torch.Tensor) -> torch.Tensor:
    """(T, d) layer-2 states of one window -> (T, d) predicted layer-4 states (causal, positions 0..T-1)."""
    x, pos = h2[None], torch.arange(len(h2))[None]
    out = layer(x, attention_mask=None, position_ids=pos, position_embeddings=rotary(x, pos))
    return (out[0] if isinstance(out, tuple) else out)[0]


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokens, heads, mlp, steps, lr, out = sys.argv[1:7]
    scorer = Scorer.load()
    four, bos = FastPath(scorer.model, 4), scorer.tokenizer.bos_token_id

    def windows(split: str, cap: int) -> list[list[int]]:
        found = []
        for text in wikipedia(split).values():
            ids, _ = scorer.encode(text)
            found += [[bos] + ids[s : s + 1024] for s in range(0, len(ids), 1024)]
            if sum(map(len, found)) > cap:
                break
        return found

    @torch.inference_mode()
    def states(ws: list[list[int]]) -> tuple[list, list]:
        h2, h4 = [], []
        for w in ws:
            hs = four.trunk(input_ids=torch.tensor([w]), output_hidden_states=True).hidden_states
            h2.append(hs[2][0].clone())
            h4.append(hs[4][0].clone())
        return h2, h4

    t0 = time.time()
    (tr2, tr4), (dv2, dv4) = states(windows("train", int(tokens))), states(windows("dev", 30000))
    print(f"states: {sum(map(len, tr2))} train, {sum(map(len, dv2))} dev tokens in {time.time() - t0:.0f} s")
    every = torch.cat([h[1:] for h in tr4])  # BOS left out: its states are outliers
    mu, sd = every.mean(0), every.std(0).clamp_min(1e-3)
    layer, rotary = adapter_layer(scorer.model, int(heads), int(mlp)), scorer.model.model.rotary_emb
    torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
    torch.nn.init.zeros_(layer.mlp.down_proj.weight)

    def dev_cosine() -> tuple[float, float]:
        cos, base = [], []
        with torch.no_grad():
            for h2, h4 in zip(dv2, dv4):
                p, t = run_adapter(layer, rotary, h2)[1:], h4[1:]
                m = t.mean(0)
                cos.append(F.cosine_similarity(p - m, t - m, dim=-1))
                base.append(F.cosine_similarity(h2[1:] - h2[1:].mean(0), t - m, dim=-1))
        return torch.cat(cos).mean().item(), torch.cat(base).mean().item()

    steps = int(steps)
    opt = torch.optim.AdamW(layer.parameters(), lr=float(lr), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1, (s + 1) / 50) * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    params = sum(p.numel() for p in layer.parameters())
    print(f"{params} parameters; dev cosine at the start {dev_cosine()[0]:.3f}, layer 2's {dev_cosine()[1]:.3f}")
    t0 = time.time()
    for step in range(steps):
        i = torch.randint(len(tr2), (1,)).item()
        loss = (((run_adapter(layer, rotary, tr2[i]) - tr4[i]) / sd) ** 2)[1:].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 200 == 0 or step + 1 == steps:
            seconds = time.time() - t0
            print(f"step {step + 1}: loss {loss.item():.4f}, dev cosine {dev_cosine()[0]:.4f} ({seconds:.0f} s)")
    torch.save({"heads": int(heads), "mlp": int(mlp), "state": layer.state_dict()}, out)
