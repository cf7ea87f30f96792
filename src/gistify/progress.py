"""Progress on long work, on stderr, wherever the work runs.

On a terminal: a rich progress bar (transient). Off a terminal (a CI log, nohup, a pipe): a plain line every
`PERIOD` seconds, "gistify: scoring 25/440 windows, 2.1/s, 3:18 left", and one when the stage ends; nothing at all
for a stage that ends within `DELAY` seconds, so short jobs and scripts stay quiet. The lines come from a
background thread, so a slow single step (a window of the scorer on a loaded machine) still shows the stage is
alive. `enabled=False` (the command line's --quiet) draws nothing.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
DELAY = 2.0  # seconds a stage runs before it says anything off a terminal
PERIOD = 5.0  # seconds between two plain lines


@contextmanager
def progress_bar(total: int, description: str, enabled: bool, unit: str = "") -> Iterator[Callable[[], None]]:
    """Yield an `advance()` callable; with `enabled` and more than one step, show progress on stderr."""
    if not enabled or total <= 1:
        yield lambda: None
        return
    if not _is_terminal():
        with _Lines(total, description, unit) as lines:
            yield lines.advance
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task):
            return Text(f"{task.speed:.2f} {unit}/s" if task.speed else "")

    rate = (Rate(),) if unit else ()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *rate, TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


@contextmanager
def stage(description: str, enabled: bool) -> Iterator[None]:
    """One step of unknown length (a model loading): off a terminal, the same plain lines with the time spent."""
    if not enabled or _is_terminal():
        yield
        return
    with _Lines(1, description, ""):
        yield


def track(items: Iterable[T], total: int, description: str, enabled: bool, unit: str = "") -> Iterator[T]:
    """Yield `items`, advancing a progress bar after each."""
    with progress_bar(total, description, enabled, unit) as advance:
        for item in items:
            yield item
            advance()


def _is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


def clock(seconds: float) -> str:
    """0:07, 3:18, 1:02:09."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class _Lines:
    """Plain progress lines from a daemon thread: stage, done/total, rate, time left."""

    def __init__(self, total: int, description: str, unit: str):
        self.total, self.description, self.unit = total, description, unit
        self.done, self.said = 0, False
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"gistify-progress-{description}")

    def __enter__(self) -> _Lines:
        self.thread.start()
        return self

    def advance(self) -> None:
        self.done += 1

    def line(self, final: bool = False) -> str:
        elapsed = time.monotonic() - self.t0
        what = f"{self.description} {self.done}/{self.total}{' ' + self.unit if self.unit else ''}"
        if self.total == 1:  # a stage of one step: only the time it takes
            return f"gistify: {self.description}, " + (
                f"done in {clock(elapsed)}" if final else f"{clock(elapsed)} elapsed"
            )
        if final:
            return f"gistify: {what}, done in {clock(elapsed)}"
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f"{clock((self.total - self.done) / rate)} left" if rate > 0 else "time left unknown yet"
        return f"gistify: {what}, {rate:.2f}/s, {clock(elapsed)} elapsed, {left}"

    def _say(self, text: str) -> None:
        try:
            print(text, file=sys.stderr, flush=True)
            self.said = True
        except (OSError, ValueError):  # stderr closed under us: progress is never worth an error
            pass

    def _run(self) -> None:
        if self.stop.wait(DELAY):
            return
        while True:
            self._say(self.line())
            if self.stop.wait(PERIOD):
                return

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        if self.said and exc[0] is None:
            self._say(self.line(final=True))
