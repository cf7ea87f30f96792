#!/usr/bin/env bash
# vist's remaining training on one accelerator (issue 24, item 7): run on the device machine from the repo root.
#
#   bash scripts/device/train_vist.sh stage   # keep this call's carried .device/part-NN in $STAGE (a warm machine
#                                             # keeps /tmp between calls)
#   bash scripts/device/train_vist.sh run     # the same, then: unpack, install, and train (features on the 16
#                                             # CPU cores, targets, regression, end to end, evaluation) into $OUT
#
# On this side, `DEVICE=cpu SMOKE=1 bash scripts/device/train_vist.sh run` runs the same steps at toy size with
# the local venv and caches (the check that the script works before device time is spent on it; CACHE=DIR: a
# vist trainer's --out whose features/ are already encoded, default ./results/train/vist).
set -euo pipefail
verb=${1:?usage: train_vist.sh stage|run}
STAGE=${STAGE:-/tmp/vist-stage}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-results/device}
mkdir -p "$STAGE" "$OUT"
if [ -d .device ]; then cp .device/part-* "$STAGE/" 2>/dev/null || true; fi
echo "staged parts: $(ls "$STAGE" | grep -c '^part-' || true)"
[ "$verb" = stage ] && exit 0
[ "$verb" = run ] || { echo "usage: train_vist.sh stage|run" >&2; exit 2; }

if [ "${SMOKE:-0}" = 1 ]; then
    PY=${PYTHON:-.venv/bin/python}
    export PYTHONPATH=$PWD/src
    steps=(--steps 4 --e2e-steps 2 --eval-every 2 --eval-n 2 --train-windows 8 --warmup 1)
    threads=1
    STOP_AFTER=${STOP_AFTER:-0}
else
    PY=python3
    cat "$STAGE"/part-* | tar -x -C "$STAGE"
    python3 -m pip install --quiet --no-index --no-deps --no-compile --target /tmp/site "$STAGE"/wheels/*.whl
    export PYTHONPATH=$PWD/src:/tmp/site GISTIFY_HOME=/tmp/gistify-home
    mkdir -p "$GISTIFY_HOME/data" && cp -r "$STAGE/wikipedia" "$GISTIFY_HOME/data/"
    nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
    # the paper's 2,000 regression steps at batch 8, then 400 end-to-end steps at batch 16 (CPU runs: 2 and 4)
    steps=(--steps 2000 --batch 8 --e2e-steps 400 --e2e-batch 16 --eval-every 250 --eval-n 64)
    threads=$(nproc)
fi
export PYTHONUNBUFFERED=1
start=$(date +%s)
# the committed vision path is the starting point; every setting but these is distill's default (README)
"$PY" -m gistify_bench.train.distill --device "$DEVICE" --threads "$threads" --no-progress \
    --init docs/results/vist/checkpoints/vision-issue24.safetensors "${steps[@]}" --out "$OUT/distill" \
    ${CACHE:+--cache "$CACHE"} \
    --stop-after "${STOP_AFTER:-7}" 2>&1 | tee "$OUT/distill.log"  # 7 min: the device call's limit leaves room
echo "train_vist: $(( $(date +%s) - start )) s on $DEVICE"
# what comes back: at most 16 MiB a file, so the 28 MB vision checkpoint comes in parts (cat them back together)
for f in "$OUT"/distill/vision.safetensors; do
    [ -f "$f" ] && split -b 15M -d -a 1 "$f" "$OUT/vision.safetensors.part-"
done
cp "$OUT"/distill/distill.json "$OUT"/ 2>/dev/null || true
rm -rf "$OUT/distill"
ls -la "$OUT"
