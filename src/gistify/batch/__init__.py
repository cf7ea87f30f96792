"""Batch compression of a corpus: `gistify compress-batch`, or `compress_batch` from Python.

    from gistify.batch import compress_batch
    summary = compress_batch("in.jsonl", "out.jsonl", keep=0.3, workers=2)            # local processes
    summary = compress_batch("in.jsonl", "out.jsonl", keep=0.3, workers=8, engine="ray")  # Ray Data actors

records.py says what the files hold and how a job resumes; local.py and ray_engine.py are the engines.
Nothing heavy is imported here: Ray only with engine="ray", torch only in the workers.
"""

from gistify.batch.job import Summary, compress_batch
from gistify.batch.records import BatchInputError

__all__ = ["BatchInputError", "Summary", "compress_batch"]
