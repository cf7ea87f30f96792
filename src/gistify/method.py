"""The Method base class and its registry.

A method is one small dataclass whose fields are its hyperparameters (research/aesthetics.md §8.3). Defining
a subclass with a `name` registers it; `gistify.methods()` lists what exists. Text and vision methods share
this base; each family adds only what it needs (`text/base.py`, later `vision/`).
"""

from __future__ import annotations

import dataclasses
from abc import ABC
from dataclasses import dataclass
from typing import Any, ClassVar

REGISTRY: dict[str, type[Method]] = {}


@dataclass
class Method(ABC):
    """Base of every compression method. Dataclass fields are the hyperparameters."""

    name: ClassVar[str]
    kind: ClassVar[str]  # "text" or "vision": which inputs the method reduces

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # abstract family bases define no name
            if cls.name in REGISTRY:
                raise TypeError(f"two methods are named {cls.name!r}: {REGISTRY[cls.name]} and {cls}")
            REGISTRY[cls.name] = cls

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def params(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict (for results and reports)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _load_builtin_methods() -> None:
    # Importing a family package registers its methods; done lazily so `import gistify` stays light.
    from gistify import text  # noqa: F401


def methods(kind: str | None = None) -> dict[str, str]:
    """Every registered method's name with its one-line description, optionally of one `kind`."""
    _load_builtin_methods()
    return {n: cls.description() for n, cls in sorted(REGISTRY.items()) if kind is None or cls.kind == kind}


def get_method(method: str | Method, kind: str | None = None, **params: Any) -> Method:
    """Resolve a method name (or instance) to an instance, with `params` as its hyperparameters.

    Unknown names and unknown or invalid parameters raise ValueError with the list of what is known.
    """
    if isinstance(method, Method):
        if params:
            method = dataclasses.replace(method, **params)
        chosen = method
    else:
        _load_builtin_methods()
        known = {n: c for n, c in REGISTRY.items() if kind is None or c.kind == kind}
        if method not in known:
            raise ValueError(
                f"unknown method {method!r}; known {kind + ' ' if kind else ''}methods: {', '.join(sorted(known))}"
            )
        cls = known[method]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            raise ValueError(
                f"method {method!r} has no parameter {', '.join(unknown)}; its parameters: {', '.join(sorted(names)) or 'none'}"
            )
        chosen = cls(**params)
    if kind is not None and chosen.kind != kind:
        raise ValueError(f"method {chosen.name!r} reduces {chosen.kind} inputs, not {kind}")
    return chosen
