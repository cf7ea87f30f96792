"""Training vist: its settings (config.VistTrainConfig) and its loop (loop.train, loop.parse, loop.main); the data
it reads is gistify_bench.vist's (shared with the benchmarks). `python -m gistify_bench.train.vist` runs it.

This file imports neither module: loop imports config, and a package that imported loop would run it whenever
config is imported (an import cycle through the package)."""
