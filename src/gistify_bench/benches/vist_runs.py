"""What vist's trained runs hold: whether the memory depends on the text ("vist-diversity"; <out>/vist/diversity.json)
and the held-out numbers each run's trainer measured at its end ("vist-ablation"; <out>/vist/ablation.json).

Both read trained runs (a vist trainer's --out folders, options["runs"]: [(name, folder)]) rather than examples at a
budget: Measurements (see gistify_bench.benches.vist_lm).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gistify_bench.benches.vist_lm import load
from gistify_bench.eval.task import Measurement, register


@torch.no_grad()
def diversity(model, articles: dict, texts: int = 8, chars: int = 1500) -> dict:
    """How much vist's memory depends on what it reads: the mean cosine between the tokens in the same slot
    (image 0, latent j) of two different texts, and between neighbouring slots of one text. 1.0 and 1.0: every
    text gives the same memory and every latent the same token (a collapsed resampler: nothing to read)."""
    import torch.nn.functional as F

    sample = [t[:chars] for t in list(articles.values())[:texts]]
    memory = model.memory(model.read(sample))
    n = model.config.latents
    first = memory.tokens[:, :n].float()  # (texts, N, D): each text's first image
    across = [F.cosine_similarity(first[i], first[j], dim=-1).mean() for i in range(texts) for j in range(i + 1, texts)]
    slots = F.cosine_similarity(first[:, :-1], first[:, 1:], dim=-1).mean()
    return {"texts": texts, "across_texts": round(float(torch.stack(across).mean()), 4),
            "across_slots": round(float(slots), 4), "token_std": round(float(first.std()), 4)}  # fmt: skip


class VistDiversity(Measurement):
    family = "vist"
    result = "diversity"

    def run(self, options: dict) -> dict:
        """Several trained runs (options["runs"]), or the weights given (default: the shipped ones)."""
        runs = {}
        for name, folder in options.get("runs") or []:
            model, articles = load(str(Path(folder) / "vist.safetensors"))
            runs[name] = diversity(model, articles) | {"command": model.card.get("command")}
        if runs:
            print(json.dumps(runs, indent=1))
            return {"runs": runs}
        model, articles = load(options.get("weights"))
        return {"runs": {options.get("weights") or "shipped": diversity(model, articles)},
                "weights": model.card.get("command")}  # fmt: skip


class VistAblation(Measurement):
    family = "vist"
    result = "ablation"

    def run(self, options: dict) -> dict:
        """The held-out numbers each run's trainer measured at its end (its card, vist.json)."""
        runs = {}
        for name, folder in options.get("runs") or []:
            card = json.loads((Path(folder) / "vist.json").read_text())
            runs[name] = {"command": card["command"], "pve": card["training"]["pve"],
                          "held_out": card["held_out"]["nll_per_token"],
                          "pve_acc": card["training"]["loss_last"].get("pve_acc"),
                          "copy_loss": card["training"]["loss_last"].get("copy")}  # fmt: skip
        return {"runs": runs}


register("vist-diversity", VistDiversity())
register("vist-ablation", VistAblation())
