"""The Method base class and its registry.

A method is one small dataclass whose fields are its hyperparameters (research/aesthetics.md §8.3). Defining
a subclass with a `name` registers it; `gistify.methods()` lists what exists. Text and vision methods share
this base; each family adds only what it needs (`text/base.py`, `vision/base.py`).

Names are unique within a kind, not across kinds: "random" is a text method and a vision method. The registry
keys on (kind, name). A plain name resolves in the order of KINDS (text first: it came first, and
`gistify.compress` and the CLI's `compress` are text), so "random" is the text method; "vision:random" or
`get_method("random", kind="vision")` is the vision one. A name only one kind uses (e.g. "recover") needs
no prefix.
"""

from __future__ import annotations

import dataclasses
from abc import ABC
from dataclasses import dataclass
from typing import Any, ClassVar

KINDS = ("text", "vision")  # the order in which a plain name is resolved


class Registry(dict):
    """(kind, name) -> method class. Also answers `REGISTRY["name"]` and `REGISTRY["kind:name"]` (the ids that
    `methods()` lists), so code that looks a listed id up keeps working."""

    def __missing__(self, key):
        if isinstance(key, str):
            cls = self.resolve(key)
            if cls is not None:
                return cls
        raise KeyError(key)

    def resolve(self, key: str, kind: str | None = None) -> type[Method] | None:
        """The class a method id names ("name" or "kind:name"), within `kind` if given; None if none."""
        if ":" in key:
            prefix, key = key.split(":", 1)
            if kind is not None and prefix != kind:
                return None
            kind = prefix
        kinds = [kind] if kind is not None else [*KINDS, *sorted({k for k, _ in self} - set(KINDS))]
        return next((self[k, key] for k in kinds if (k, key) in self), None)

    def method_id(self, cls: type[Method]) -> str:
        """The shortest id that resolves to `cls`: its name, or "kind:name" where another kind owns the name."""
        return cls.name if self.resolve(cls.name) is cls else f"{cls.kind}:{cls.name}"


REGISTRY: Registry = Registry()


@dataclass
class Method(ABC):
    """Base of every compression method. Dataclass fields are the hyperparameters."""

    name: ClassVar[str]
    kind: ClassVar[str]  # which inputs the method reduces: "text", "vision" or "rendered" (vist)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # abstract family bases define no name
            key = (cls.kind, cls.name)
            if key in REGISTRY:
                raise TypeError(f"two {cls.kind} methods are named {cls.name!r}: {REGISTRY[key]} and {cls}")
            REGISTRY[key] = cls

    @classmethod
    def description(cls) -> str:
        """The first line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def params(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict (for results and reports)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def check_choice(owner: str, name: str, value, choices) -> None:
    """A hyperparameter that must be one of `choices`; the error names the method and the field."""
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _load_builtin_methods() -> None:
    # Importing a family package registers its methods; done lazily so `import gistify` stays light.
    from gistify import text, vision  # noqa: F401
    from gistify.vist import method  # noqa: F401


def methods(kind: str | None = None) -> dict[str, str]:
    """Every registered method's id with its one-line description, optionally of one `kind`.

    With a `kind`, the ids are the plain names; without, a name that several kinds use is prefixed with the
    kind ("vision:random") everywhere but in the first kind of KINDS, so every id resolves to its method.
    """
    _load_builtin_methods()
    if kind is not None:
        return {n: cls.description() for (k, n), cls in sorted(REGISTRY.items()) if k == kind}
    return dict(sorted((REGISTRY.method_id(cls), cls.description()) for cls in REGISTRY.values()))


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
        cls = REGISTRY.resolve(method, kind)
        if cls is None:
            other = REGISTRY.resolve(method) if kind is not None else None
            what = f"method {method!r} reduces {other.kind} inputs" if other else f"unknown method {method!r}"
            known = ", ".join(methods(kind))
            raise ValueError(f"{what}; known {kind + ' ' if kind else ''}methods: {known}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            its = ", ".join(sorted(names)) or "none"
            raise ValueError(f"method {method!r} has no parameter {', '.join(unknown)}; its parameters: {its}")
        chosen = cls(**params)
    if kind is not None and chosen.kind != kind:
        raise ValueError(f"method {chosen.name!r} reduces {chosen.kind} inputs, not {kind}")
    return chosen
