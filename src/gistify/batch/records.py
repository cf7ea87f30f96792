"""The files of a batch job: reading input records, checking each one, and writing and resuming the output.

Input is JSONL (one JSON object a line) or Parquet (a file ending in .parquet). Each record has an `id` (a
string or a whole number, unique in the file), a `text`, and optionally a `question` and its own budget
(`keep` or `tokens`, which override the job's). Any other field is passed through to the output unchanged.

The input is scanned once before any work: every record's id and where it lies in the file (a *locator*:
byte offset and length of a JSONL line, or row group and row of a Parquet file). A line that is not a JSON
object, or has no usable id, or repeats an id, stops the job there with the line number: without an id, its
output could not be matched to it, and a repeated id would make resuming ambiguous. Everything else that is
wrong with a record (no text, text that is not a string, empty text, text over the size limit, a bad budget)
is that record's own error, written to the output in its place.

Output lines are written in input order, one per record, flushed as they are written. Resuming reads the
ids already in the output and skips those records; a last line cut short by a crash is dropped and the file
truncated to its last whole line. Parquet output cannot be appended to, so a Parquet job writes its lines to
a journal beside it (OUT.parquet.part.jsonl) and turns the journal into OUT.parquet when every record is done.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gistify.text.options import TextOptions

RESULT_FIELDS = ("tokens_in", "tokens_out", "kept_spans", "method", "budget", "notes", "error")
DEFAULT_MAX_CHARS = 200_000


class BatchInputError(ValueError):
    """The input or output file cannot be used as given (the CLI's exit code 2)."""


@dataclass
class Settings:
    """What every record is compressed with, unless the record carries its own budget. Picklable: each worker
    and each Ray actor gets a copy."""

    text: TextOptions = field(default_factory=TextOptions)  # the budget, the method and the pipeline's options
    max_chars: int = DEFAULT_MAX_CHARS
    threads: int = 1  # torch threads per worker: scale with workers, not threads (see local.py)


def is_parquet(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(".parquet")


def id_key(value: Any) -> str | None:
    """A record id as a hashable key, or None when it is not a usable id (a string or a whole number)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
        return None
    return json.dumps(value)


def scan(path: str | os.PathLike) -> list[tuple[str, tuple[int, int]]]:
    """(id key, locator) of every record in input order; stops at the first unusable line or repeated id."""
    p = Path(path)
    if not p.is_file():
        raise BatchInputError(f"{path}: no such file" if not p.exists() else f"{path}: not a regular file")
    return _scan_parquet(p) if is_parquet(p) else _scan_jsonl(p)


def _add(entries: list, seen: dict, key: str, locator: tuple[int, int], where: str) -> None:
    if key in seen:
        raise BatchInputError(f"{where} repeats the id {key} of {seen[key]}; ids must be unique")
    seen[key] = where.rsplit(": ", 1)[-1]
    entries.append((key, locator))


def _scan_jsonl(p: Path) -> list[tuple[str, tuple[int, int]]]:
    entries, seen, offset = [], {}, 0
    with open(p, "rb") as f:
        for number, raw in enumerate(f, 1):
            if raw.strip():
                record = _parse_line(raw, f"{p}: line {number}")
                key = id_key(record.get("id"))
                if key is None:
                    got = "no id" if "id" not in record else f"the id {record['id']!r}, not a string or a whole number"
                    raise BatchInputError(f"{p}: line {number} has {got}; every record needs a unique id")
                _add(entries, seen, key, (offset, len(raw)), f"{p}: line {number}")
            offset += len(raw)
    return entries


def _parse_line(raw: bytes, where: str) -> dict:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise BatchInputError(f"{where} is not UTF-8 (invalid byte at offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise BatchInputError(f"{where} is not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise BatchInputError(f"{where} is a JSON {type(record).__name__}, not an object with an id and a text")
    return record


def _scan_parquet(p: Path) -> list[tuple[str, tuple[int, int]]]:
    pf = _parquet_file(p)
    if "id" not in pf.schema_arrow.names:
        raise BatchInputError(f"{p} has no id column (columns: {', '.join(pf.schema_arrow.names)})")
    entries, seen, row = [], {}, 0
    for group in range(pf.num_row_groups):
        for i, value in enumerate(pf.read_row_group(group, columns=["id"]).column("id").to_pylist()):
            row += 1
            key = id_key(value)
            if key is None:
                raise BatchInputError(f"{p}: row {row} has the id {value!r}, not a string or a whole number")
            _add(entries, seen, key, (group, i), f"{p}: row {row}")
    return entries


def _parquet_file(p: Path):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise BatchInputError("Parquet files need pyarrow: pip install 'gistify[ray]' or pip install pyarrow") from None
    try:
        return pq.ParquetFile(p)
    except Exception as e:  # pyarrow raises its own error types for a file that is not Parquet
        raise BatchInputError(f"{p} is not a Parquet file ({e})") from None


class Reader:
    """Reads records by locator. Each worker opens the input once; Parquet row groups are read whole and the
    last one kept, since a worker's records come in runs from the same group."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._parquet = _parquet_file(self.path) if is_parquet(self.path) else None
        self._file = None if self._parquet else open(self.path, "rb")  # noqa: SIM115 (closed in close())
        self._group: tuple[int, list[dict]] | None = None

    def read(self, locator: tuple[int, int]) -> dict:
        a, b = locator
        if self._parquet is None:
            self._file.seek(a)
            return _parse_line(self._file.read(b), f"{self.path} at byte {a}")
        if self._group is None or self._group[0] != a:
            self._group = (a, self._parquet.read_row_group(a).to_pylist())
        return self._group[1][b]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class Task:
    """A record that passed the checks: what to compress, for what question, under what budget."""

    text: str
    question: str | None
    keep: float | None
    tokens: int | None


def check(record: dict, settings: Settings) -> Task | str:
    """The record's task, or the reason it cannot be compressed (its error line)."""
    reserved = [k for k in RESULT_FIELDS if k in record and record[k] is not None]
    if reserved:
        return f"the field {reserved[0]!r} is reserved for gistify's output; rename it"
    text = record.get("text")
    if text is None:
        return "no text"
    if not isinstance(text, str):
        return f"text is not a string (got {type(text).__name__})"
    if not text.strip():
        return "text is empty (or only whitespace)"
    if len(text) > settings.max_chars:
        return f"text is over the size limit ({len(text)} characters > {settings.max_chars}; see --max-chars)"
    question = record.get("question")
    if question is not None and not isinstance(question, str):
        return f"question is not a string (got {type(question).__name__})"
    keep, tokens = record.get("keep"), record.get("tokens")
    if keep is not None and tokens is not None:
        return "give the record either keep or tokens, not both"
    if keep is None and tokens is None:
        keep, tokens = settings.text.keep, settings.text.tokens
        if keep is None and tokens is None:
            return "no budget: give the job --keep or --tokens, or the record a keep or tokens field"
    return Task(text, question or None, keep, tokens)


def output_line(record: dict, result: dict) -> str:
    """The record's output line: its fields as given, text replaced by the compressed text (or removed, for
    an error), then the results. No timing: the same input gives the same bytes on every engine and run."""
    out = {k: v for k, v in record.items() if k not in RESULT_FIELDS and not ("error" in result and k == "text")}
    out.update(result)
    return json.dumps(out, ensure_ascii=False, default=str)


@dataclass
class Output:
    """The output file, opened for resuming: the ids it already holds, appended to line by line."""

    path: Path
    journal: Path  # where lines are appended: the output itself, or a Parquet output's journal
    done: dict[str, dict] = field(default_factory=dict)  # id key -> its output line, parsed
    _file: Any = None

    @classmethod
    def open(cls, path: str | os.PathLike, input_keys: set[str]) -> Output:
        path = Path(path)
        if path.exists() and not path.is_file():
            raise BatchInputError(f"{path}: not a regular file; give the output file's path")
        journal = path.with_name(path.name + ".part.jsonl") if is_parquet(path) else path
        if is_parquet(path) and path.exists() and not journal.exists():
            _parquet_to_journal(path, journal)  # a finished Parquet output: resume from its rows
        out = cls(path, journal)
        if journal.exists():
            out.done = _read_done(journal, input_keys)
        journal.parent.mkdir(parents=True, exist_ok=True)
        out._file = open(journal, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        return out

    def write(self, line: str) -> dict:
        self._file.write(line + "\n")
        self._file.flush()  # a crash loses at most the line being written, which resuming drops
        return json.loads(line)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> None:
        """Make the Parquet output from the journal (nothing to do for JSONL)."""
        self.close()
        if self.journal != self.path:
            import pyarrow as pa
            import pyarrow.parquet as pq

            rows = [json.loads(line) for line in self.journal.read_text(encoding="utf-8").splitlines() if line]
            tmp = self.path.with_name(self.path.name + ".tmp")
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            os.replace(tmp, self.path)
            self.journal.unlink()


def _read_done(journal: Path, input_keys: set[str]) -> dict[str, dict]:
    """Ids already written; a torn last line (a crash mid-write) is cut off the file."""
    data = journal.read_bytes()
    done, good_end, start = {}, 0, 0
    while start < len(data):
        end = data.find(b"\n", start)
        raw = data[start : end if end >= 0 else len(data)]
        last = end < 0 or end == len(data) - 1
        try:
            row = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            if not last:
                raise BatchInputError(
                    f"{journal} holds a line that is not JSON at byte {start}; not a gistify output"
                ) from None
            break
        if end < 0:  # whole JSON but no newline: the write was cut before it; drop it and redo the record
            break
        if row is not None:
            key = id_key(row.get("id")) if isinstance(row, dict) else None
            if key is None:
                raise BatchInputError(f"{journal} holds a line without an id at byte {start}; not a gistify output")
            if key not in input_keys:
                raise BatchInputError(f"{journal} holds the id {key}, which is not in the input; wrong output file?")
            if key in done:
                raise BatchInputError(f"{journal} holds the id {key} twice; not a gistify output")
            done[key] = row
        good_end = end + 1
        start = end + 1
    if good_end < len(data):
        with open(journal, "r+b") as f:
            f.truncate(good_end)
    return done


def _parquet_to_journal(path: Path, journal: Path) -> None:
    pf = _parquet_file(path)
    with open(journal, "w", encoding="utf-8") as f:
        for row in pf.read().to_pylist():
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
