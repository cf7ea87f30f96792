"""Training vist: its settings (config.VistTrainConfig) and its loop (loop.train); the data it reads is
gistify_bench.vist's (shared with the benchmarks). `python -m gistify_bench.train.vist` runs it."""

from gistify_bench.train.vist.config import VistTrainConfig
from gistify_bench.train.vist.loop import main, parse, train

__all__ = ["VistTrainConfig", "main", "parse", "train"]
