"""``compile=True`` (torch.compile through skorch) against eager PyTorch, end to end.

    python benchmarks/compile_speed.py [--data PATH] [--images 3000] [--epochs 4]

The partial recipe's network (``make_recipe("partial", calibrate=False)``) fitted on
``--images`` share images (a seeded random draw, lesion-grouped early-stopping split) for
``--epochs`` epochs, with ``compile`` False, True, False, True in one process: the
activations are cached on disk by the first fit (``--cache-dir``), so the fits after it
time training alone; the second compiled fit reuses the compiled code. Prints skorch's
epoch durations and each fit's wall time, saves JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import skinfuse
from skinfuse.datasets import load_ham10000
from skinfuse.recipes import make_recipe


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    )
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--cache-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    ham = load_ham10000(args.data)
    rows = np.sort(np.random.default_rng(0).permutation(len(ham.target))[: args.images])
    X, y = ham.data.iloc[rows].reset_index(drop=True), np.asarray(ham.target)[rows]
    groups = np.asarray(ham.groups)[rows]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_recipe("partial", calibrate=False).set_params(
            max_epochs=args.epochs, patience=args.epochs + 1, verbose=0,
            cache_dir=args.cache_dir or tmp,
        )  # fmt: skip
        for compile_ in (False, True, False, True):
            start = time.perf_counter()
            model.set_params(compile=compile_).fit(X, y, groups=groups)
            wall = time.perf_counter() - start
            epochs = [round(h["dur"], 2) for h in model.history_]
            results.append({"compile": compile_, "fit_s": round(wall, 1), "epochs_s": epochs,
                            "valid_loss": model.history_[-1]["valid_loss"]})  # fmt: skip
            print(f"compile={compile_!s:5}  fit {wall:6.1f} s  epochs (s) {epochs}  "
                  f"valid loss {model.history_[-1]['valid_loss']:.4f}", flush=True)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"settings": {**vars(args), "out": str(args.out)},
               "versions": skinfuse.show_versions(), "results": results}  # fmt: skip
    (args.out / "compile_speed.json").write_text(json.dumps(payload, indent=2, default=str))
    return payload


if __name__ == "__main__":
    main()
