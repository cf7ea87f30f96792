"""Model adapters: the only code that knows where a model keeps its visual tokens. One file per family.

FAMILIES lists them; an adapter module is imported only when a model of its family is reduced. A model matches
a family when its class, or one of its base classes, has one of the family's class names. To add a family,
write a module with an `Adapter` subclass (base.py says how) and add one line here; code outside gistify that
defines a model of its own adds its family with `register` (gistify_bench's small VLM does).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Family:
    name: str  # as errors and reports name it
    classes: tuple[str, ...]  # the model class names it handles
    module: str  # where its adapter lives
    adapter: str  # the adapter class in that module


FAMILIES = [
    Family("LLaVA-1.5", ("LlavaForConditionalGeneration",), "gistify.vision.adapters.llava", "LlavaAdapter"),
    Family(
        "Qwen2.5-VL", ("Qwen2_5_VLForConditionalGeneration",), "gistify.vision.adapters.qwen2_5_vl", "Qwen2_5_VLAdapter"
    ),
    Family(
        "SmolVLM / Idefics3",
        ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"),
        "gistify.vision.adapters.idefics3",
        "Idefics3Adapter",
    ),
]


def register(family: Family) -> None:
    """Add a model family (once; a family of the same name is replaced)."""
    FAMILIES[:] = [f for f in FAMILIES if f.name != family.name] + [family]


def family_of(model: nn.Module) -> Family:
    """The family that handles `model`; a ValueError naming the supported families if none does."""
    names = {cls.__name__ for cls in type(model).__mro__}
    for family in FAMILIES:
        if names & set(family.classes):
            return family
    supported = "; ".join(f"{f.name} ({', '.join(f.classes)})" for f in FAMILIES)
    raise ValueError(
        f"gistify.reduce does not support {type(model).__name__}; supported families: {supported}. Load the model "
        "with its ...ForConditionalGeneration class"
    )


def adapter_class(model: nn.Module) -> type:
    family = family_of(model)
    return getattr(importlib.import_module(family.module), family.adapter)
