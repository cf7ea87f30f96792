"""The `gistify` command: compress, compress-batch, render, methods, models, serve, and the subcommands other
packages register in the `gistify.commands` entry-point group (the harness registers `gistify bench`; the library
never imports it).

Exit codes, for scripts: 0 success; 1 internal error (a bug: please report it); 2 bad input or usage;
3 a model is not available or does not load. Errors are one line on stderr; set GISTIFY_DEBUG=1 for the
traceback.

A little over 400 lines, most of them flags: one small function per subcommand that maps its flags and hands
over to its family (text pipeline, batch, serve, rendering, models), and one parser that lists them all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from gistify.text.options import TextOptions
from gistify.text.options import add_arguments as add_options

EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 3
BIG = 200_000  # characters: an input that takes the scorer minutes on a CPU
COMMANDS = "gistify.commands"  # the entry-point group of subcommands that live outside the library
BUILTIN = (
    "compress",
    "compress-batch",
    "render",
    "methods",
    "models",
    "serve",
)  # a registered command never shadows these


class InputError(ValueError):
    """Bad input from the user: exit code 2."""


def _read_text(path: str) -> str:
    """The file's text, or stdin's for "-". Binary and non-UTF-8 input is refused, never altered."""
    if path == "-":
        data = sys.stdin.buffer.read()
        where = "standard input"
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{path}: no such file" if not p.exists() else f"{path}: not a regular file")
        data = p.read_bytes()
        where = path
    if b"\x00" in data[:8192]:
        raise InputError(f"{where} looks binary (it holds NUL bytes); give a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(
            f"{where} is not UTF-8 text (invalid byte at offset {e.start}); convert it first, e.g. iconv -t utf-8"
        ) from None


def _show(result) -> None:
    """Print the source with what was kept in bold and what was dropped dimmed and struck through; off a
    terminal (a pipe, a file), dropped text is marked ~~like this~~ instead. A word kept only in part is
    followed by [cut]. The summary line goes to stderr (`cmd_compress`), whole, as with the plain output."""
    from rich.console import Console
    from rich.text import Text

    console = Console()
    pieces, pos = [], 0
    cut_ends = {e for _, e in result.cut}
    for s, e in result.kept_spans:
        pieces += [(result.source[pos:s], False), (result.source[s:e], True)]
        if e in cut_ends:  # a word kept only in part: say where it was cut
            pieces.append(("[cut]", None))
        pos = e
    pieces.append((result.source[pos:], False))
    t = Text()
    for piece, kept in pieces:
        if kept is None:
            t.append(piece, style="reverse")
        elif kept or not piece.strip():
            t.append(piece, style="bold" if kept else "")
        elif console.is_terminal:
            t.append(piece, style="dim strike red")
        else:  # keep the surrounding whitespace outside the markers
            core = piece.strip()
            lead = piece[: len(piece) - len(piece.lstrip())]
            t.append(f"{lead}~~{core}~~{piece[len(lead) + len(core) :]}")
    console.print(t, soft_wrap=True)


def _summary(r) -> str:
    line = (
        f"{r.method}: {r.tokens_in} -> {r.tokens_out} tokens ({r.tokenizer}), kept {r.keep_ratio:.2f} "
        f"for {r.budget}, {r.seconds:.2f} s"
    )
    if r.risk:
        from gistify.text.fidelity import summary

        line += f"; {summary(r.risk)}"
    return line


def _check_compress(args, text: str) -> tuple[TextOptions, list[str]]:
    """Everything about `gistify compress`'s input and options that can be checked without a model, checked
    before anything heavy is imported (torch, transformers, the scorer): a mistake costs a fraction of a
    second, not a model load. Returns the options, and notes for stderr (a file whose content and name
    disagree)."""
    options = TextOptions.from_args(args)  # each option checked: a ValueError names the first that is wrong
    return options, _check_structure(args, options, text)


def _check_structure(args, options, text: str) -> list[str]:
    name = "standard input" if args.file == "-" else args.file
    try:
        json.loads(text)
        why = None
    except ValueError as e:
        why = str(e)
    if options.structure == "json" and why is not None:
        raise InputError(f"{name} is not valid JSON ({why}), but --structure json was given: fix the file, or "
                         "drop --structure to compress it as text")  # fmt: skip
    if options.structure == "markdown" and why is None:
        return [f"{name} is JSON, but --structure markdown cuts it as Markdown text: its output may not parse; "
                "drop --structure to keep it valid JSON"]  # fmt: skip
    if options.structure == "auto" and why is not None and args.file.lower().endswith(".json"):
        return [f"{name} is named .json but is not valid JSON ({why}): compressed as text, not as JSON"]
    return []


def cmd_compress(args) -> int:
    text = _read_text(args.file)
    if not text.strip():
        raise InputError(f"{'standard input' if args.file == '-' else args.file} is empty (or only whitespace)")
    options, notes = _check_compress(args, text)
    for note in notes:  # now, not after minutes of work
        print(f"gistify: note: {note}", file=sys.stderr)
    if len(text) >= BIG and not args.quiet:  # minutes of work ahead: say so before the imports and the model
        print(f"gistify: {len(text):,} characters to compress; progress follows on stderr", file=sys.stderr)

    import gistify
    from gistify.api import compressor_class

    cls = compressor_class(options.method)  # an unknown method or a bad --set, before the model loads
    fields = {f.name for f in dataclasses.fields(cls)}
    gistify.get_method(options.method, **{k: v for k, v in options.params.items() if k in fields})
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the model loads in about a second: no "Loading weights" bar
    # only what was asked for (each family takes its own options); an explicit False (--no-protect-negations) counts
    kwargs = options.compress_kwargs()
    if "progress" in cls.options:
        kwargs["progress"] = not args.quiet  # a bar on a terminal, plain lines elsewhere (gistify.progress)
    from gistify.text.pipeline import ProtectedOverflow

    try:
        result = gistify.compress(text, args.question, keep=options.keep, tokens=options.tokens, **kwargs)
    except ProtectedOverflow as e:
        raise InputError(
            f"the protected content alone takes {e.taken} tokens, over the budget of {e.target}: raise --tokens or "
            "--keep, protect less, or add --on-protected-overflow keep (keep it all, over the budget) or "
            "--on-protected-overflow trim (protect only what fits)"
        ) from None
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    elif args.show:
        _show(result)
        print(_summary(result), file=sys.stderr)
    else:
        sys.stdout.write(result.text + ("\n" if not result.text.endswith("\n") else ""))
        sys.stdout.flush()  # the text before the summary, when both go to one terminal
        print(_summary(result), file=sys.stderr)
    for note in result.notes:
        print(f"gistify: note: {note}", file=sys.stderr)
    return EXIT_OK


def cmd_render(args) -> int:
    from gistify.rendering import Layout, render

    text = _read_text(args.file)
    if not text.strip():
        raise InputError(f"{'standard input' if args.file == '-' else args.file} is empty (or only whitespace)")
    changes = {k: v for k, v in (("font", args.font), ("font_size", args.font_size), ("width", args.width)) if v}
    layout = (Layout.fold if args.layout == "fold" else Layout.line)(**changes)
    rendering = render(text, layout)
    stem = "page" if args.file == "-" else Path(args.file).stem
    paths = rendering.save(args.output, stem)
    width, height = layout.size
    print(
        f"{len(paths)} images of {width}x{height} ({layout.rows} rows of {layout.row_height} px) for {len(text)} "
        f"characters in {args.output}/ ({stem}-0001.png ..., spans in {stem}.json)",
        file=sys.stderr,
    )
    if rendering.missing:
        print(f"gistify: note: no font has {rendering.missing!r}; drawn as boxes", file=sys.stderr)
    return EXIT_OK


def cmd_methods(args) -> int:
    from gistify.method import REGISTRY, methods

    for name, description in methods().items():
        print(f"{name:<16} {REGISTRY[name].kind:<8} {description}")
        if args.verbose:
            for f in dataclasses.fields(REGISTRY[name]):
                default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
                print(f"{'':<21}{f.name} = {default!r}")
    return EXIT_OK


def cmd_models(args) -> int:
    from gistify import models

    if args.action == "fetch":
        names = [args.name] if args.name else [models.DEFAULT_MODEL]
        for name in names:
            if name in models.EMBEDDED and models.EMBEDDED[name].is_cached() and not args.force:
                print(f"{name}: already cached in {models.EMBEDDED[name].path}")
                continue
            print(f"{name}: fetching and converting (about 20-60 s) ...", file=sys.stderr)
            print(f"{name}: cached in {models.fetch(name, force=args.force)}")
        return EXIT_OK
    rows = models.status()
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"model cache: {models.cache_dir()}  (set GISTIFY_HOME to move it)")
    for r in rows:
        state = (
            f"cached, {r['bytes'] / 1e6:.0f} MB" if r["cached"] else f"not cached: run gistify models fetch {r['name']}"
        )
        print(f"{r['name']}  [{state}]\n  {r['title']}\n  licence {r['licence']}; from {r['source']}\n  {r['path']}")
    return EXIT_OK


def cmd_compress_batch(args) -> int:
    """Delegates to gistify.batch (records, resume, engines): this only maps flags and prints the summary."""
    from gistify.batch import BatchInputError, compress_batch

    try:
        options = TextOptions.from_args(args)
        summary = compress_batch(
            args.input, args.output, workers=args.workers, engine=args.engine, ray_address=args.ray_address,
            max_chars=args.max_chars, progress=not args.quiet, options=options,
        )  # fmt: skip
    except BatchInputError as e:
        raise InputError(str(e)) from None
    except KeyboardInterrupt:
        print(f"gistify: interrupted; {args.output} holds the records finished: rerun to resume", file=sys.stderr)
        return 130
    print(summary, file=sys.stderr)
    return EXIT_OK


def registered_commands() -> dict:
    """name -> entry point: the subcommands other packages register in the `gistify.commands` group."""
    return {ep.name: ep for ep in entry_points(group=COMMANDS)}


def cmd_registered(args) -> int:
    """A subcommand registered by another package: its `main(argv)` gets the rest of the command line."""
    try:
        command = args.entry_point.load()
    except ImportError as e:
        raise InputError(
            f"`gistify {args.entry_point.name}` needs packages that are missing ({e.name}): install its extras, "
            "e.g. pip install 'gistify[bench]'"
        ) from None
    return command(args.rest)


def cmd_serve(args) -> int:
    from gistify.serve.server import main as serve_main

    return serve_main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gistify", description="Cut the tokens a language model must read; keep the answers right."
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress a text for a question under a token budget")
    c.add_argument("file", help="a UTF-8 text file, or - for standard input (never modified)")
    c.add_argument("-q", "--question", help="the question the compressed text must still answer")
    add_options(c, "compress", budget_required=True)
    c.add_argument("--quiet", action="store_true", help="no progress on stderr (shown on long work by default)")
    out = c.add_mutually_exclusive_group()
    out.add_argument("--show", action="store_true", help="show the source with the dropped text struck through")
    out.add_argument("--json", action="store_true", help="print the full result as JSON")
    c.set_defaults(run=cmd_compress)

    cb = sub.add_parser(
        "compress-batch",
        help="compress every record of a JSONL or Parquet file; resumable (gistify.batch)",
        description="A record's own keep or tokens overrides the job's --keep or --tokens.",
    )
    cb.add_argument("input", help="JSONL or .parquet: records with id, text, optional question, keep or tokens")
    cb.add_argument("output", help="JSONL or .parquet: one line per id; records already in it are skipped")
    add_options(cb, "compress-batch")
    cb.add_argument("--workers", type=int, default=1, help="worker processes, or Ray actors (default 1)")
    cb.add_argument("--engine", choices=["local", "ray"], default="local", help="local processes or Ray Data")
    cb.add_argument("--ray-address", help="an existing Ray cluster (default: a local Ray instance for the job)")
    cb.add_argument("--max-chars", type=int, default=200_000, help="longer texts are errors (default 200000)")
    cb.add_argument("--quiet", action="store_true", help="no progress on stderr (records/s and time left otherwise)")
    cb.set_defaults(run=cmd_compress_batch)

    r = sub.add_parser("render", help="render a text into images (vist's input), with the span each row holds")
    r.add_argument("file", help="a UTF-8 text file, or - for standard input (never modified)")
    r.add_argument("-o", "--output", required=True, help="folder for the PNG images and their JSON record")
    r.add_argument(
        "--layout",
        choices=["fold", "line"],
        default="fold",
        help="fold: the paper's 224x224 canvases, 16 rows of 14 px (default); line: one 48-px line per image",
    )
    r.add_argument("--font", help="font file name or path (`fc-list`); default DejaVuSans.ttf")
    r.add_argument("--font-size", type=int, help="in px (default: 10 for fold, 32 for line)")
    r.add_argument("--width", type=int, help="image width in px (default: 224 for fold, 768 for line)")
    r.set_defaults(run=cmd_render)

    for ep in registered_commands().values():  # e.g. `gistify bench`, which gistify_bench registers
        if ep.name not in sub.choices:
            extra = sub.add_parser(
                ep.name, help=f"`gistify {ep.name} --help` ({ep.value.split(':')[0]})", add_help=False
            )
            extra.add_argument("rest", nargs=argparse.REMAINDER)
            extra.set_defaults(run=cmd_registered, entry_point=ep)

    m = sub.add_parser("methods", help="list the methods with a one-line description")
    m.add_argument("-v", "--verbose", action="store_true", help="also list each method's parameters")
    m.set_defaults(run=cmd_methods)

    mo = sub.add_parser("models", help="show the embedded models, or fetch one")
    mo.add_argument("action", nargs="?", choices=["list", "fetch"], default="list")
    mo.add_argument("name", nargs="?", help="model to fetch (default: the default model)")
    mo.add_argument("--force", action="store_true", help="fetch and convert again even if cached")
    mo.add_argument("--json", action="store_true", help="print the listing as JSON")
    mo.set_defaults(run=cmd_models)

    from gistify.serve.settings import add_arguments as serve_arguments

    se = sub.add_parser("serve", help="an OpenAI-compatible proxy that compresses long contents (extra: serve)")
    serve_arguments(se)
    se.set_defaults(run=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    registered = registered_commands()
    if argv and argv[0] in registered and argv[0] not in BUILTIN:
        # argparse's REMAINDER drops a leading option ("bench --help"): hand the rest over untouched
        args = argparse.Namespace(run=cmd_registered, entry_point=registered[argv[0]], rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    from gistify.models import ModelError

    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK
    except Exception as e:
        if os.environ.get("GISTIFY_DEBUG"):
            raise
        if isinstance(e, ModelError):
            code, msg = EXIT_MODEL, str(e)
        elif isinstance(e, (InputError, ValueError, TypeError)):
            code, msg = EXIT_INPUT, str(e)
        else:  # a bug: say so in one line, keep the traceback for GISTIFY_DEBUG
            code, msg = (
                EXIT_BUG,
                f"internal error ({type(e).__name__}: {e}); rerun with GISTIFY_DEBUG=1 for the traceback",
            )
    print(f"gistify: error: {msg}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
