"""gistify.reduce: visual tokens pruned or merged inside a vision-language model, for the span of a `with` block.

    with gistify.reduce(model, "recover", keep=0.1) as r:
        out = model.generate(**inputs, max_new_tokens=20)
    r.reductions, r.tokens_in, r.tokens_out, r.notes

The adapters (gistify/adapters) do the model surgery; the method (gistify/vision) only sees tensors.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from gistify.adapters import adapter_class
from gistify.adapters.base import Session
from gistify.budget import Budget
from gistify.method import get_method
from gistify.vision.base import VisionMethod


def reduce(
    model: nn.Module,
    method: str | VisionMethod,
    keep: float | list[float] | None = None,
    tokens: int | list[int] | None = None,
    text_tower: Any = None,
    tokenizer: Any = None,
    **method_options: Any,
) -> Session:
    """Reduce the visual tokens `model` reads inside the returned context manager.

    Inside the block, `model.generate(...)` and `model(...)` calls that carry images see each image's tokens
    reduced by `method`; generate returns the user's input_ids followed by the new tokens, a direct call returns
    logits for the shortened prompt (the Session's `inputs`). On exit, every hook and patched attribute is gone.

    Args:
        model: a supported HF vision-language model (gistify.adapters.FAMILIES).
        method: a vision method name ("recover", "random", "pool", "fastv", "visionzip", "prumerge", "tome",
            "reinforce") or a VisionMethod instance.
        keep: the fraction of each image's tokens kept, or one fraction per sample of a batch.
        tokens: the number of each image's tokens kept, or one number per sample. With neither, the method's own
            rule chooses (recover's LOF rule, prumerge's IQR rule, reinforce's threshold).
        text_tower: the CLIP text tower for recover's question guidance (LLaVA): a checkpoint path or id, a
            CLIPModel, or a gistify.adapters.llava.TextTower. Without it, the guidance is the analogue of
            research/methods.md §2.5, said so in the notes.
        tokenizer: the model's tokenizer or processor, to read the question as text for the text tower.
        **method_options: the method's hyperparameters (e.g. layer=2 for fastv).
    """
    chosen = get_method(method, kind="vision", **method_options)
    budget = _budget(chosen, keep, tokens)
    adapter = adapter_class(model)(model, text_tower=text_tower, tokenizer=tokenizer)
    return Session(model, chosen, budget, adapter)


def _budget(method: VisionMethod, keep, tokens) -> Budget | list[Budget] | None:
    if keep is None and tokens is None:
        if not method.dynamic:
            raise ValueError(f"{method.name} has no budget rule of its own: give keep= (a fraction) or tokens=")
        return None
    if keep is not None and tokens is not None:
        raise ValueError("give keep= or tokens=, not both")
    values, as_tokens = (tokens, True) if tokens is not None else (keep, False)
    if isinstance(values, (list, tuple)):
        if not values:
            raise ValueError("a per-sample budget list must not be empty")
        return [Budget(tokens=v) if as_tokens else Budget(keep=v) for v in values]
    return Budget(tokens=values) if as_tokens else Budget(keep=values)
