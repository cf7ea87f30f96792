"""Batch compression of a corpus: `gistify compress-batch`, or `compress_batch` from Python.

    from gistify.batch import compress_batch
    summary = compress_batch("in.jsonl", "out.jsonl", keep=0.3, workers=2)            # local processes
    summary = compress_batch("in.jsonl", "out.jsonl", keep=0.3, workers=8, engine="ray")  # Ray Data actors

records.py says what the files hold and how a job resumes; local.py and ray_engine.py are the engines.
Nothing heavy is imported here: Ray only with engine="ray", torch only in the workers.
"""

import importlib

_EXPORTS = {
    "BatchInputError": "gistify.batch.records",
    "Summary": "gistify.batch.job",
    "compress_batch": "gistify.batch.job",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # Loaded on first use, as `gistify` itself does: the package's modules import each other, never this file.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gistify.batch' has no attribute {name!r}")
