"""The local engine: a pool of worker processes on this machine, each loading the scorer once.

Lines come back in input order whatever order the workers finish in: a window of a few records per worker
is in flight, and the oldest is written first. That keeps the output deterministic (the same bytes as Ray's
and as a run with another number of workers) and memory bounded on inputs of millions of records. With one
worker, records are compressed in this process and no pool is started.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from gistify.batch.records import Settings
from gistify.batch.work import Worker

_WORKER: Worker | None = None  # the pool process's own worker
_FAILED: Exception | None = None  # why it could not start (a model that does not load), raised on first use


def _start(settings: Settings, path: str) -> None:
    global _WORKER, _FAILED
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: one message, no tracebacks
    try:
        _WORKER = Worker(settings, path)
    except Exception as e:  # raised from _line, so that the job fails with it, not with a broken pool
        _FAILED = e


def _line(locator: tuple[int, int]) -> str:
    if _FAILED is not None:
        raise _FAILED
    return _WORKER.line(locator)


def run(
    settings: Settings, path: str | os.PathLike, locators: list[tuple[int, int]], workers: int = 1, scorer: Any = None
) -> Iterator[str]:
    """Output lines of the records at `locators`, in their order."""
    if not locators:
        return
    if workers <= 1:
        yield from _in_process(settings, path, locators, scorer)
        return
    # spawn, not fork: a forked copy of a process that has started torch's thread pools can hang
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start, initargs=(settings, str(path)))
    pending: deque = deque()
    todo = iter(locators)
    try:
        for loc in todo:
            pending.append(pool.submit(_line, loc))
            if len(pending) >= 4 * workers:
                break
        while pending:
            line = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_line, nxt))
            yield line
    finally:
        if pending:  # interrupted (Ctrl-C, an error): stop the workers now; their records were not written yet
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
        pool.shutdown(wait=not pending, cancel_futures=True)


def _in_process(settings, path, locators, scorer) -> Iterator[str]:
    import torch

    threads = torch.get_num_threads()  # the worker sets its own; give the caller's back afterwards
    worker = Worker(settings, path, scorer)
    try:
        for loc in locators:
            yield worker.line(loc)
    finally:
        worker.close()
        torch.set_num_threads(threads)
