"""Progress on long work: a rich progress bar on stderr, shown only where asked (a person is watching)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


@contextmanager
def progress_bar(total: int, description: str, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yield an `advance()` callable; with `enabled` and more than one step, draw a transient bar."""
    if not enabled or total <= 1:
        yield lambda: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def track(items: Iterable[T], total: int, description: str, enabled: bool) -> Iterator[T]:
    """Yield `items`, advancing a progress bar after each."""
    with progress_bar(total, description, enabled) as advance:
        for item in items:
            yield item
            advance()
