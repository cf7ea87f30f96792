"""Command lines from dataclass configs, and the one place results go by default.

Every trainer takes its settings as a `@dataclass` whose fields carry their defaults and help (`option(default,
"help", choices=...)`); `parser_for` builds the ArgumentParser from the fields (a field `lines_per_image` is the
flag `--lines-per-image`; a bool is `--x/--no-x`), and `from_args` turns the parsed flags back into the dataclass,
whose `__post_init__` validates them. The argparse layer maps flags to fields and does nothing else.

Output: every command writes under `--out`. Left out, it is `./results` (resolved against the working directory
where the command starts, and printed), with one sub-folder per family (`results/text`, `results/vision`,
`results/vist`) and per trainer (`results/train/<trainer>`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

DEFAULT_ROOT = Path("results")


def option(default: Any, help: str = "", choices: tuple | None = None, type: Any = None) -> Any:
    """A dataclass field with its command-line help (and choices, checked by `check`); `type` where the default
    does not tell it (None)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "type": type})


def default_out(*parts: str) -> Path:
    """The default folder of a command: ./results[/parts...], resolved now."""
    return DEFAULT_ROOT.joinpath(*parts).resolve()


def resolve_out(path: str | Path | None, *parts: str, announce: bool = True) -> Path:
    """`path` (or the default ./results/<parts>) as an absolute path; printed on stderr, so a run says where it
    writes."""
    out = Path(path).expanduser().resolve() if path else default_out(*parts)
    if announce:
        print(f"output: {out}", file=sys.stderr)
    return out


def check(config: Any) -> None:
    """Validate the fields that declare choices; configs call it from `__post_init__`."""
    for f in dataclasses.fields(config):
        choices = f.metadata.get("choices")
        if choices and getattr(config, f.name) not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {getattr(config, f.name)!r}")


def _field_type(cls: type, f: dataclasses.Field) -> Any:
    if f.metadata.get("type") is not None:
        return f.metadata["type"]
    if f.default is not None and f.default is not dataclasses.MISSING:
        return type(f.default)
    hint = typing.get_type_hints(cls).get(f.name)
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else (hint or str)


def add_fields(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """One flag per field of the dataclass `cls` (except `skip`)."""
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "").replace("%", "%%")  # argparse formats help with %
        kind = _field_type(cls, f)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif isinstance(default, (list, tuple)):
            item = type(default[0]) if default else str
            parser.add_argument(flag, type=item, nargs="+", default=list(default), help=help_text)
        else:
            choices = f.metadata.get("choices")
            shown = f"{help_text} (default {default})" if help_text and default not in (None, "") else help_text
            parser.add_argument(flag, type=kind, default=default, choices=choices, help=shown)
    return parser


def parser_for(cls: type, prog: str, description: str = "", skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """An ArgumentParser whose flags are the fields of the dataclass `cls`."""
    return add_fields(argparse.ArgumentParser(prog=prog, description=description), cls, skip)


def from_args(cls: type, args: argparse.Namespace | dict, parser: argparse.ArgumentParser | None = None,
              **overrides: Any):  # fmt: skip
    """The dataclass `cls` from parsed flags (other attributes of the namespace are ignored). With the `parser`, a
    setting the config refuses is the parser's one-line error (before anything loads), not a traceback."""
    values = vars(args) if isinstance(args, argparse.Namespace) else dict(args)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: v for k, v in values.items() if k in names}
    kwargs.update(overrides)
    for k, v in kwargs.items():
        if isinstance(v, list):
            kwargs[k] = tuple(v)
    if parser is None:
        return cls(**kwargs)
    try:
        return cls(**kwargs)
    except ValueError as e:
        parser.error(str(e))


# Fields that say how a run is carried out (where it reads and writes, threads, when it stops and resumes), not
# what it computes: left out of a rerun command, and a resumed run may change them.
RUN_ONLY = ("threads", "cache", "progress", "out", "resume", "stop_after", "stop_at_step", "save_every", "device")


def rerun_command(prog: str, config: Any, skip: tuple[str, ...] = RUN_ONLY) -> str:
    """The command line `python -m prog ...` that reruns the dataclass `config` (the fields in `skip`, which say
    where a run reads, writes, how many threads it takes and when it stops, and unset fields, left out)."""
    flags = []
    for key, value in dataclasses.asdict(config).items():
        flag = "--" + key.replace("_", "-")
        if key in skip or value in (None, ""):
            continue
        flags.append((flag if value else "--no-" + flag[2:]) if isinstance(value, bool) else f"{flag} {value}")
    return f"python -m {prog} " + " ".join(flags)


def parse_config(cls: type, prog: str, doc: str, argv: list[str] | None = None) -> Any:
    """The dataclass `cls` from the command line `argv` of `python -m prog` (its help: doc's first line)."""
    parser = parser_for(cls, f"python -m {prog}", doc.split("\n")[0])
    return from_args(cls, parser.parse_args(argv), parser)


def with_params(name: str) -> tuple[str, dict]:
    """A method with parameters, `truncate[side=tail]` or `reinforce[recency=0;k=4]`: its registered name and
    the parameters (read as `gistify compress --set` reads them). The cell is named by the whole string."""
    from gistify.text.options import parse_sets

    if not name.endswith("]") or "[" not in name:
        return name, {}
    base, body = name[:-1].split("[", 1)
    return base, parse_sets(list(filter(None, body.split(";"))), f"{name}: each parameter (separated by ';')")
