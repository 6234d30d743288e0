#!/usr/bin/env bash
# One GPU session's measurements for issue 13 (see benchmarks/gpu/pack.sh for what it
# carries). Runs on the device machine, in the repo root; results go to $OUT.
#   GPU_PART=throughput  train_throughput.py (Lite2 at 260 px) and encode_throughput.py
#   GPU_PART=recipe      reproduce.py with the 'gpu' recipe, 5 lesion-grouped folds
#                        (FOLDS="1 2" to run some; TIME_BUDGET minutes, default 8)
#   GPU_PART=tests       only the tests that skip without CUDA (also the first step of all)
#   GPU_PART=all         tests, throughput, recipe (default)
# SMOKE=1: a few images, to try the script on a CPU first.
# The device tool returns at most 8 files: everything is written under /tmp/gpu_results and
# packed into $OUT/results.tar after every step (a run cut short keeps what it measured).
set -uo pipefail
OUT="${OUT:-/tmp/gpu_out}"; mkdir -p "$OUT"
RES=/tmp/gpu_results; mkdir -p "$RES"
# written aside, then renamed: a command killed at its time limit leaves a whole tar
save() { tar -C /tmp -cf "$OUT/results.tmp" gpu_results && mv "$OUT/results.tmp" "$OUT/results.tar"; }
( while sleep 20; do save; done ) &  # finished folds come back even from a killed run
SAVER=$!
export PYTHONPATH="$PWD"
if ! python3 -c "import skorch, imblearn" 2>/dev/null; then  # the GPU image lacks them
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .carry/whl/*.whl || exit 1
    export PYTHONPATH="$PWD:/tmp/site"
fi
export PYTHONUNBUFFERED=1
DATA=/tmp/data/ham10000
if [ ! -d "$DATA" ]; then mkdir -p /tmp/data && tar -C /tmp/data -xf .carry/ham10000.tar; fi
WEIGHTS="$PWD/.carry/lite2_fp16.pt"
PART="${GPU_PART:-all}"
if [ "${SMOKE:-0}" = 1 ]; then
    TT=(--limit 64 --image-size 64 --batch-size 16 --epochs 2)
    ET=(--limit 64 --naive-limit 8 --image-size 64)
    RP=(--smoke --finetune-folds 1)
else
    TT=(--limit 4096 --image-size 260 --batch-size 64 --epochs 3)
    ET=(--limit 4096 --naive-limit 200 --image-size 260 --batch-size 256)
    RP=()
fi
python3 -c "import skinfuse; skinfuse.show_versions()" 2>&1 | tee "$RES/versions.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee -a "$RES/versions.txt"
save
if [ "$PART" = all ] || [ "$PART" = tests ]; then  # the tests that skip without CUDA
    python3 -m pytest -q -p no:cacheprovider -k "cuda or gpu or nvjpeg" tests/_nn \
        tests/encoders tests/test_fusion.py 2>&1 \
        | tee "$RES/cuda_tests.txt"
    save
fi
if [ "$PART" = all ] || [ "$PART" = throughput ]; then
    python3 benchmarks/train_throughput.py --data "$DATA" --backbone efficientnet_lite2 \
        --weights "$WEIGHTS" "${TT[@]}" --out "$RES" 2>&1 | tee "$RES/train_throughput.txt"
    save
    python3 benchmarks/encode_throughput.py --data "$DATA" --backbone efficientnet_lite2 \
        --weights "$WEIGHTS" "${ET[@]}" --out "$RES" 2>&1 | tee "$RES/encode_throughput.txt"
    save
fi
if [ "$PART" = all ] || [ "$PART" = recipe ]; then
    FOLD_ARGS=(); [ -n "${FOLDS:-}" ] && FOLD_ARGS=(--folds $FOLDS)
    python3 benchmarks/reproduce.py --data "$DATA" --approaches finetuned --no-image-only \
        --finetune-recipe gpu --finetune-weights "$WEIGHTS" "${RP[@]}" \
        "${FOLD_ARGS[@]}" --time-budget "${TIME_BUDGET:-8}" --out "$RES/recipe" 2>&1 \
        | tee "$RES/recipe.txt"
fi
kill "$SAVER" 2>/dev/null; wait "$SAVER" 2>/dev/null  # no save racing the last one
save
