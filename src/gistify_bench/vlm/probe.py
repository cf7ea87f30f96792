"""Are the asked object's attributes in the frozen encoder's tokens? Linear probes on EfficientNet-Lite0's cells.

    python -m gistify_bench.vlm.probe [--n 1500] [--out ROOT]      -> ROOT/vision/probe.json

On generated "dev" images (gistify_bench.vlm.scenes), a linear classifier (softmax regression, Adam, 300 full-batch
steps on standardised inputs, 80% train / 20% test) reads the asked object's shape and colour (scenes) or word
(labels) from three views of the tokens: the mean of the cells its box covers, the single cell at its centre, and
the mean of all 196 cells (what a model that cannot find the object has). High accuracy from its own cells and
chance from the whole image means the features are there and the VLM's task is to find the right cells: to bind
the question to a region.
"""

from __future__ import annotations

import argparse

import torch

from gistify_bench.vlm import scenes


def named(e: scenes.Example, kind: str) -> str | None:
    """The asked object's `kind` ("shape" or "color"), when the question names it or asks it."""
    if e.qtype.endswith(kind):
        return e.answer
    if e.qtype.startswith(kind):  # "what shape is the red object?" / "what color is the star?"
        return next(w.rstrip("?") for w in e.question.split() if w.rstrip("?") in (*scenes.SHAPES, *scenes.COLORS))
    return None


def linear_probe(x: torch.Tensor, labels: list[str], steps: int = 300) -> float:
    """Held-out accuracy of softmax regression on (x, labels): the first 80% train, the rest test."""
    classes = sorted(set(labels))
    y = torch.tensor([classes.index(v) for v in labels])
    cut = int(0.8 * len(y))
    x = (x - x[:cut].mean(0)) / (x[:cut].std(0) + 1e-5)
    torch.manual_seed(0)
    lin = torch.nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.Adam(lin.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(lin(x[:cut]), y[:cut])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (lin(x[cut:]).argmax(-1) == y[cut:]).float().mean().item()


def probe(n: int = 1500, seed: int = 0) -> dict:
    from gistify_bench.vlm.efficientnet import load_encoder
    from gistify_bench.vlm.model import GRID, GistVLM

    encoder = load_encoder().eval()
    out = {"n": n, "split": "dev", "seed": seed, "probes": {}}
    for task in scenes.TASKS:
        data = scenes.examples(task, "dev", n, seed=seed)
        with torch.no_grad():
            f = torch.cat([encoder(GistVLM.pixels([e.image for e in data[j : j + 50]])).flatten(2).transpose(1, 2)
                           for j in range(0, n, 50)])  # fmt: skip
        masks = torch.stack([e.target for e in data]).float()
        centre = [((e.box[1] + e.box[3]) // 2 // scenes.CELL) * GRID + (e.box[0] + e.box[2]) // 2 // scenes.CELL
                  for e in data]  # fmt: skip
        views = {
            "object cells (mean)": (f * masks[..., None]).sum(1) / masks.sum(1, keepdim=True),
            "centre cell": f[torch.arange(n), torch.tensor(centre)],
            "whole image (mean)": f.mean(1),
        }
        kinds = ("shape", "color") if task == "scenes" else ("word",)
        for kind in kinds:
            rows = [i for i, e in enumerate(data) if kind == "word" or named(e, kind) is not None]
            labels = [data[i].answer if kind == "word" else named(data[i], kind) for i in rows]
            for view, x in views.items():
                acc = linear_probe(x[rows], labels)
                out["probes"][f"{task}: {kind} from {view}"] = {"accuracy": round(acc, 3), "classes": len(set(labels))}
                print(f"{task}: {kind} from {view}: {acc:.3f} ({len(set(labels))} classes)", flush=True)
    return out


def main(argv=None) -> int:
    from gistify_bench.eval.cells import write_json
    from gistify_bench.options import resolve_out

    p = argparse.ArgumentParser(prog="python -m gistify_bench.vlm.probe", description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1500, help="generated dev images per task")
    p.add_argument("--out", help="results root (default ./results); writes ROOT/vision/probe.json")
    args = p.parse_args(argv)
    if args.n < 20:
        raise SystemExit("--n must be at least 20 (a 20% test split of at least 4)")
    torch.set_num_threads(1)
    result = probe(args.n)
    print(write_json(resolve_out(args.out) / "vision" / "probe.json", result, 1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
