"""gistify.reduce and its Session: visual tokens pruned or merged inside a vision-language model, for the span of
a `with` block.

    with gistify.reduce(model, "recover", keep=0.1) as r:
        out = model.generate(**inputs, max_new_tokens=20)
    r.reductions, r.tokens_in, r.tokens_out, r.notes

The adapters (vision/adapters) do the model surgery; the method (vision/*.py) only sees tensors. The Session is
what they share: it applies the method and the budgets, records what happened, and undoes every hook and patch
the adapter registered through it when the block ends.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from gistify.budget import Budget
from gistify.method import get_method
from gistify.vision.adapters import adapter_class
from gistify.vision.base import Reduction, VisionMethod, VisualContext


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
        model: a supported HF vision-language model (gistify.vision.adapters.FAMILIES).
        method: a vision method name ("recover", "random", "pool", "fastv", "visionzip", "prumerge", "tome",
            "reinforce") or a VisionMethod instance.
        keep: the fraction of each image's tokens kept, or one fraction per sample of a batch.
        tokens: the number of each image's tokens kept, or one number per sample. With neither, the method's own
            rule chooses (recover's LOF rule, prumerge's IQR rule, reinforce's threshold).
        text_tower: the CLIP text tower for recover's question guidance (LLaVA): a checkpoint path or id, a
            CLIPModel, or a gistify.vision.adapters.llava.TextTower. Without it, the guidance is the analogue of
            docs/methods.md §2.5, said so in the notes.
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


_ACTIVE: weakref.WeakSet = weakref.WeakSet()  # models inside a `with gistify.reduce(...)` block


class Session:
    """What `gistify.reduce` returns: a context manager that applies a method inside a model, and afterwards
    the record of the last call.

    Attributes:
        reductions: one list per sample of the last call, with one Reduction per image (placeholder order).
        notes: what the user should know about the last call (the methods' and the adapter's notes, once each).
        inputs: the shortened prompt of the last call ({"input_ids", "attention_mask"}), or None.
    """

    def __init__(self, model: nn.Module, method: VisionMethod, budget: Budget | list[Budget] | None, adapter):
        self.model, self.method, self.budget, self.adapter = model, method, budget, adapter
        self.reductions: list[list[Reduction]] = []
        self.notes: list[str] = []
        self.inputs: dict[str, torch.Tensor] | None = None
        self._undo: list[Callable[[], None]] = []

    # -- the context manager ---------------------------------------------------------------------------------

    def __enter__(self) -> Session:
        if self.model in _ACTIVE:
            raise RuntimeError("this model is already inside a gistify.reduce block: leave that block first")
        _ACTIVE.add(self.model)
        try:
            self.adapter.install(self)
        except BaseException:
            self._restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        errors = []
        while self._undo:  # every undo runs, even after one fails
            try:
                self._undo.pop()()
            except Exception as e:  # the first is re-raised below
                errors.append(e)
        _ACTIVE.discard(self.model)
        if errors:
            raise errors[0]

    # -- what adapters call ----------------------------------------------------------------------------------

    def hook(self, handle: torch.utils.hooks.RemovableHandle) -> None:
        """Remove this hook when the block ends."""
        self._undo.append(handle.remove)

    def patch(self, obj: Any, name: str, value: Any) -> None:
        """Set obj.name = value until the block ends; then restore the instance attribute, or delete it if the
        instance had none (so a patched method falls back to the class's again)."""
        had = name in vars(obj)
        old = vars(obj).get(name)
        setattr(obj, name, value)
        self._undo.append(lambda: setattr(obj, name, old) if had else delattr(obj, name))

    def budgets(self, n_samples: int) -> list[Budget | None]:
        """One budget per sample: the same for all, or the per-sample list given to gistify.reduce."""
        if not isinstance(self.budget, list):
            return [self.budget] * n_samples
        if len(self.budget) != n_samples:
            raise ValueError(f"gistify.reduce got {len(self.budget)} per-sample budgets for a batch of {n_samples}")
        return self.budget

    def reduce_images(
        self, contexts: list[VisualContext], samples: list[int], n_samples: int, notes: list[str] = ()
    ) -> list[Reduction]:
        """Reduce each image with its sample's budget; record the result (per sample) and the notes."""
        budgets = self.budgets(n_samples)
        reductions = [self.method.reduce(ctx, budgets[s]) for ctx, s in zip(contexts, samples)]
        for red in reductions:
            red.notes.extend(n for n in notes if n not in red.notes)
        self.reductions = [[r for r, s in zip(reductions, samples) if s == b] for b in range(n_samples)]
        self.notes = list(dict.fromkeys(n for r in reductions for n in r.notes))
        return reductions

    # -- what users read -------------------------------------------------------------------------------------

    @property
    def tokens_in(self) -> list[int]:
        """Visual tokens per sample of the last call, before reduction."""
        return [sum(r.n_in for r in rs) for rs in self.reductions]

    @property
    def tokens_out(self) -> list[int]:
        """Visual tokens per sample of the last call, after reduction."""
        return [sum(r.n_out for r in rs) for rs in self.reductions]

    def __repr__(self) -> str:
        return f"Session({self.method.name}, budget={self.budget}, tokens {self.tokens_in} -> {self.tokens_out})"
