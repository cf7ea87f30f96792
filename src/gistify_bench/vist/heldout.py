"""Held-out scoring of vist, shared by its trainer and its benchmarks: the same proximal tokens scored with vist's
memory, without it, with another window's, and after the distant text itself."""

from __future__ import annotations

import torch

from gistify_bench.device import to_device
from gistify_bench.vist.corpus import Corpus, Window, pad


def nll_after(model, prefixes: list[list[int]], ids: torch.Tensor, mask: torch.Tensor) -> tuple:
    """(B,) summed NLL of the proximal windows `ids` (every token after the first, as VistModel.nll) read by the
    plain LLM after the text tokens `prefixes[i]`, and (B,) how many tokens: the same tokens as VistModel.nll
    scores, with text instead of a memory."""
    rows, scored_at = [], []
    for prefix, row, m in zip(prefixes, ids, mask):
        rows.append(list(prefix) + row[: int(m.sum())].tolist())
        scored_at.append(len(prefix) + 1)
    tid, tmask = pad(rows)
    scored = torch.arange(tid.shape[1])[None, :] >= torch.tensor(scored_at)[:, None]
    return model.nll(tid, tmask, None, scored)


@torch.no_grad()
def evaluate(model, corpus: Corpus, windows: list[Window], batch: int = 8, text: bool = True) -> dict:
    """Mean per-token NLL of the proximal windows (every token after the first): without distant context
    ("base"), with vist ("vist"), with another window's memory ("shuffled"), with the distant text ("text",
    unless `text` is False)."""
    sums = {k: 0.0 for k in ("base", "vist", "shuffled", "text")[: 4 if text else 3]}
    counts = dict.fromkeys(sums, 0)  # per key: a last batch of one window has no shuffle
    model.eval()
    for s in range(0, len(windows), batch):
        part = windows[s : s + batch]
        b = to_device(corpus.batch(part), next(model.parameters()).device)
        ids, mask = b["ids"]
        memory = model.memory(b["pages"])
        for key, mem in (("base", None), ("vist", memory), ("shuffled", memory.roll(1) if len(part) > 1 else None)):
            if mem is None and key == "shuffled":
                continue
            total, n = model.nll(ids, mask, mem)
            sums[key] += total.sum().item()
            counts[key] += n.sum().item()
        if not text:
            continue
        # the ceiling: distant text then the proximal window, scoring the same tokens
        total, n = nll_after(model, [corpus.text_before_ids(w) for w in part], ids, mask)
        sums["text"] += total.sum().item()
        counts["text"] += n.sum().item()
    out = {k: round(v / counts[k], 4) for k, v in sums.items() if counts[k]}
    out["tokens_scored"] = int(counts["base"])
    out["windows"] = len(windows)
    return out
