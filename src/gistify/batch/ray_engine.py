"""The Ray engine: the same job on Ray Data, for corpora one machine is too small for.

The driver (this process) scans the input and the output as the local engine does, and makes a dataset of
the locators of the records still to do: small, whatever the size of the texts. An actor pool
(`map_batches(..., concurrency=N)`) reads the records by locator and compresses them; each actor is a
`Worker` and loads the scorer once. The driver writes the lines back as they stream in, in input order
(Ray Data's `preserve_order`), so the output, resuming included, is the same as the local engine's, byte
for byte.

Ray reads the texts where the actors run, not through the driver: on a cluster the input path must be one
every node sees (a shared filesystem), gistify must be installed on every node, and each node needs the
model in its cache (`gistify models fetch`, or GISTIFY_HOME on the shared filesystem). Without an address,
a local Ray instance is started for the job and stopped after it; one already running in this process is
used as it is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

from gistify.batch.records import Settings
from gistify.batch.work import Worker


class _Actor:
    """A Ray Data actor: one Worker, so one scorer load per actor."""

    def __init__(self, settings: Settings, path: str):
        self.worker = Worker(settings, path)

    def __call__(self, batch: dict) -> dict:
        lines = [self.worker.line((int(a), int(b))) for a, b in zip(batch["a"], batch["b"])]
        return {"line": lines}


def run(
    settings: Settings,
    path: str | os.PathLike,
    locators: list[tuple[int, int]],
    actors: int = 1,
    address: str | None = None,
    batch_size: int = 1,
) -> Iterator[str]:
    """Output lines of the records at `locators`, in their order, from `actors` Ray actors.

    A batch is one record by default: a record costs the scorer a forward pass (tens of milliseconds to
    seconds), so Ray's per-batch overhead is small beside it, and single records spread best over actors."""
    if not locators:
        return
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray: pip install 'gistify[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # lines in input order: deterministic output
        ctx.enable_progress_bars = False  # the job draws its own bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # and prints its own summary
        ds = ray.data.from_items([{"a": a, "b": b} for a, b in locators])
        ds = ds.map_batches(
            _Actor,
            fn_constructor_kwargs={"settings": settings, "path": os.path.abspath(path)},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),  # `concurrency=N`, in Ray >= 2.51's spelling
            num_cpus=max(1, settings.threads),
        )
        for row in ds.iter_rows():
            yield str(row["line"])
    finally:
        if started:
            ray.shutdown()
