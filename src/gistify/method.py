"""The Method base class and its registry.

A method is one small dataclass whose fields are its hyperparameters, validated in `__post_init__` with the
helpers below (the error names the method and the field). Defining a subclass with a `name` registers it;
`gistify.methods()` lists what exists. Text, vision and rendered-text methods share this base; each family adds
only what it needs (`text/base.py`, `vision/base.py`, `vist/method.py`), and what a caller may ask of a method
is declared here: `compress` (a text in, a `Compressed` out) for the families that compress text.

This module knows no family. The built-in families, like any third-party package, register their methods
through the `gistify.methods` entry-point group (pyproject.toml): each entry names a module whose import defines
its Method subclasses. They are imported on the first lookup, so `import gistify` stays light.

Names are unique within a kind, not across kinds: "random" is a text method and a vision method. The registry
keys on (kind, name). A plain name resolves in the order of KINDS (text first: it came first, and
`gistify.compress` and the CLI's `compress` are text), so "random" is the text method; "vision:random" or
`get_method("random", kind="vision")` is the vision one. A name only one kind uses (e.g. "recover") needs
no prefix.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
from abc import ABC
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from gistify.result import Compressed

KINDS = ("text", "vision")  # the order in which a plain name is resolved; other kinds ("rendered") follow
ENTRY_POINTS = "gistify.methods"  # the entry-point group through which families register their methods


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

    def items_by_id(self) -> list[tuple[str, type[Method]]]:
        """(id, class) of every registered method, sorted by id (the ids `methods()` lists)."""
        return sorted((self.method_id(cls), cls) for cls in self.values())

    def method_id(self, cls: type[Method]) -> str:
        """The shortest id that resolves to `cls`: its name, or "kind:name" where another kind owns the name."""
        return cls.name if self.resolve(cls.name) is cls else f"{cls.kind}:{cls.name}"


REGISTRY: Registry = Registry()


@dataclass
class Method(ABC):
    """Base of every compression method. Dataclass fields are the hyperparameters."""

    name: ClassVar[str]
    kind: ClassVar[str]  # which inputs the method reduces: "text", "vision" or "rendered" (vist)
    # The keyword options `compress` takes besides the budget (not hyperparameters: they say how to run, e.g.
    # which scorer or tokenizer). Empty for methods that do not compress text (the vision family).
    options: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # abstract family bases define no name
            key = (cls.kind, cls.name)
            if key in REGISTRY:
                raise TypeError(f"two {cls.kind} methods are named {cls.name!r}: {REGISTRY[key]} and {cls}")
            REGISTRY[key] = cls

    @classmethod
    def description(cls) -> str:
        """The first sentence of the class docstring, whole even when it wraps over several lines."""
        paragraph = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        end = re.search(r"[.!?](?=\s|$)", paragraph)
        return paragraph[: end.end()] if end else paragraph

    def params(self) -> dict[str, Any]:
        """The hyperparameters as a plain dict (for results and reports)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def compress(
        self, text: str, question: str | None = None, *, keep: float | None = None, tokens: int | None = None, **options
    ) -> Compressed:
        """Compress `text` for `question` to `keep` (fraction of tokens) or `tokens` (count). The families that
        compress text override this; `gistify.compress` calls it with the options of `self.options`."""
        raise ValueError(
            f"method {self.name!r} reduces {self.kind} inputs, it does not compress text"
            + (f": use gistify.reduce(model, {self.name!r}, ...)" if self.kind == "vision" else "")
        )

    # -- validation shared by the method dataclasses: the error names the method and the field -------------------

    def _check_int(self, name: str, lo: int, optional: bool = False) -> None:
        v = getattr(self, name)
        if optional and v is None:
            return
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{self.name}.{name} must be an int >= {lo}{' or None' if optional else ''}, got {v!r}")

    def _check_number(self, name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> None:
        v = getattr(self, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        ok = ok and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        if not ok:
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
            raise ValueError(f"{self.name}.{name} must be a number in {interval}, got {v!r}")

    def _check_choice(self, name: str, choices: tuple) -> None:
        check_choice(self.name, name, getattr(self, name), choices)


def check_choice(owner: str, name: str, value, choices) -> None:
    """A hyperparameter that must be one of `choices`; the error names the method and the field."""
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_text(text: Any) -> str:
    """The text a method compresses: a non-empty str, returned as given (never altered)."""
    if not isinstance(text, str):
        raise TypeError(f"the text to compress must be a str, got {type(text).__name__}")
    if not text.strip():
        raise ValueError("the text to compress is empty (or only whitespace)")
    return text


_loaded = False


def _load_builtin_methods() -> None:
    """Import every module registered in the `gistify.methods` entry-point group (once): importing a family's
    module defines, and so registers, its methods."""
    global _loaded
    if _loaded:
        return
    found = entry_points(group=ENTRY_POINTS)
    if not any(ep.value.startswith("gistify.") for ep in found):
        raise RuntimeError(
            "gistify's methods are not registered: the package's metadata is missing (install it, e.g. "
            "pip install -e . from the repository, rather than adding src/ to the path)"
        )
    for ep in found:
        importlib.import_module(ep.value)
    _loaded = True


def methods(kind: str | None = None) -> dict[str, str]:
    """Every registered method's id with its one-line description, optionally of one `kind`.

    With a `kind`, the ids are the plain names; without, a name that several kinds use is prefixed with the
    kind ("vision:random") everywhere but in the first kind of KINDS, so every id resolves to its method.
    """
    _load_builtin_methods()
    if kind is not None:
        return {n: cls.description() for (k, n), cls in sorted(REGISTRY.items()) if k == kind}
    return dict(sorted((REGISTRY.method_id(cls), cls.description()) for cls in REGISTRY.values()))


def method_class(method: str, kind: str | None = None) -> type[Method]:
    """The class a method id names ("name" or "kind:name"), within `kind` if given; a ValueError listing the
    known methods if none."""
    if not isinstance(method, str):
        raise TypeError(f"a method is a name or a gistify Method instance, got {type(method).__name__}")
    _load_builtin_methods()
    cls = REGISTRY.resolve(method, kind)
    if cls is None:
        other = REGISTRY.resolve(method) if kind is not None else None
        what = f"method {method!r} reduces {other.kind} inputs" if other else f"unknown method {method!r}"
        known = ", ".join(methods(kind))
        raise ValueError(f"{what}; known {kind + ' ' if kind else ''}methods: {known}")
    return cls


def get_method(method: str | Method, kind: str | None = None, **params: Any) -> Method:
    """Resolve a method name (or instance) to an instance, with `params` as its hyperparameters.

    Unknown names and unknown or invalid parameters raise ValueError with the list of what is known.
    """
    if isinstance(method, Method):
        if params:
            method = dataclasses.replace(method, **params)
        chosen = method
    else:
        cls = method_class(method, kind)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - names)
        if unknown:
            its = ", ".join(sorted(names)) or "none"
            raise ValueError(f"method {method!r} has no parameter {', '.join(unknown)}; its parameters: {its}")
        chosen = cls(**params)
    if kind is not None and chosen.kind != kind:
        raise ValueError(f"method {chosen.name!r} reduces {chosen.kind} inputs, not {kind}")
    return chosen
