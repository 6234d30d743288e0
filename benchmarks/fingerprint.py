"""Fingerprints of every estimator's outputs on real images, to prove a refactor changes nothing.

Fits each approach at a small size (a few dozen HAM10000 images, one or two epochs, one
thread, no DataLoader workers, an empty cache) and prints the SHA-256 of what it returns:
``transform`` / ``fit_transform`` embeddings, ``predict_proba``, and the same after a
``skinfuse.save`` / ``skinfuse.load`` round trip. Run it before and after a change and
compare (``--out`` saves them as JSON, ``--compare`` checks against such a file)::

    python benchmarks/fingerprint.py --out /tmp/before.json          # on the old code
    python benchmarks/fingerprint.py --compare /tmp/before.json      # on the new code

On a CPU with native bf16 units (AMX, AVX512-BF16, Arm BF16) ``precision="auto"`` runs
bf16: there, compare the new code's ``--precision fp32`` with the old code's default.

The digests are of this machine's floating point: compare runs of one machine and one
torch build. The data folder is ``--data``, else ``SKINFUSE_DATA``, else
``../shared/data/ham10000``; without it, the synthetic lesions stand in (say so).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def digest(array) -> str:
    """SHA-256 of an array's dtype, shape and bytes (first 16 hex digits)."""
    array = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{array.dtype}{array.shape}".encode())
    h.update(array.tobytes())
    return h.hexdigest()[:16]


def load_data(data_home, n):
    """``n`` images (and their metadata frame, labels and lesions) of a few classes."""
    from skinfuse.datasets import load_ham10000, make_synthetic_lesions

    if data_home is not None and Path(data_home).is_dir():
        bunch = load_ham10000(data_home)
        source = f"HAM10000 at {data_home}"
    else:
        bunch = make_synthetic_lesions(n_samples=12 * n, image_size=32, random_state=0,
                                       data_dir=tempfile.mkdtemp())  # fmt: skip
        source = "synthetic lesions (no HAM10000 folder found)"
    frame = bunch.frame.reset_index(drop=True)
    rng = np.random.default_rng(0)
    keep = []
    for label in ("nv", "mel", "bkl"):  # balanced: every fold sees every class
        rows = np.flatnonzero(frame["dx"].to_numpy() == label)
        keep.extend(rng.choice(rows, n // 3, replace=False).tolist())
    frame = frame.iloc[sorted(keep)].reset_index(drop=True)
    groups = frame["lesion_id"].to_numpy() if "lesion_id" in frame else None
    return frame, frame["dx"].to_numpy(), groups, source


def cases(precision=None):
    """(name, factory, how it is used) for every approach; ``precision`` (``None``: the
    estimators' default) is set on each."""
    from skinfuse.encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
    from skinfuse.fusion import FusionNetClassifier

    run = dict(num_workers=0, device="cpu")
    if precision is not None:
        run["precision"] = precision
    common = dict(random_state=0, **run)
    small = dict(image_size=64, batch_size=8, max_epochs=2, **common)
    return [
        ("frozen", lambda: FrozenCNNEncoder("efficientnet_lite0", **run), "transform"),
        (
            "frozen-multi-tta",
            lambda: FrozenCNNEncoder(
                "efficientnet_lite0", image_size=96, pooling="multi", tta=2, **run
            ),
            "transform",
        ),
        (
            "finetuned",
            lambda: FineTunedCNNEncoder(
                "efficientnet_lite0",
                validation_fraction=0.25,
                patience=1,
                cross_fit=2,
                warmup_epochs=0.5,
                label_smoothing=0.1,
                **small,
            ),
            "encoder",
        ),
        (
            "finetuned-store",
            lambda: FineTunedCNNEncoder(
                "efficientnet_lite0",
                image_store="memory",
                validation_fraction=0.25,
                cross_fit=None,
                **small,
            ),
            "encoder",
        ),
        (
            "partial",
            lambda: FineTunedCNNEncoder(
                "efficientnet_lite0",
                trainable_blocks=2,
                cached_views=2,
                tta=2,
                validation_fraction=0.25,
                cross_fit=2,
                class_weight="balanced",
                **small,
            ),
            "encoder",
        ),
        (
            "autoencoder",
            lambda: ConvAutoencoderEncoder(
                16, image_size=32, channels=(8, 16), max_epochs=2, batch_size=8, **common
            ),
            "transform",
        ),
        (
            "fusionnet",
            lambda: FusionNetClassifier(
                "efficientnet_lite0", validation_fraction=0.25, class_weight="sqrt", **small
            ),
            "classifier",
        ),
        (
            "fusionnet-partial",
            lambda: FusionNetClassifier(
                "efficientnet_lite0",
                trainable_blocks=2,
                cached_views=4,
                tta=4,
                validation_fraction=0.25,
                label_smoothing=0.1,
                class_weight="sqrt",
                **small,
            ),
            "classifier",
        ),
        (
            "fusionnet-image-only",
            lambda: FusionNetClassifier(
                "tiny_cnn", weights=None, metadata=None, freeze=1, validation_fraction=0, **small
            ),
            "classifier",
        ),
    ]


def run(data_home, n, only=None, precision=None):
    import torch

    import skinfuse

    torch.set_num_threads(1)
    frame, y, groups, source = load_data(data_home, n)
    print(f"data: {source}; {len(frame)} images, classes {sorted(set(y))}", flush=True)
    images = frame["image_path"].to_numpy()
    out = {}
    for name, make, use in cases(precision):
        if only and name not in only:
            continue
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as saved:
            est = make().set_params(cache_dir=cache)
            if use == "transform":
                values = {"fit_transform": est.fit_transform(images),
                          "transform": est.transform(images)}  # fmt: skip
                again = lambda m: m.transform(images)  # noqa: E731
            elif use == "encoder":
                values = {"fit_transform": est.fit_transform(images, y, groups=groups),
                          "transform": est.transform(images),
                          "predict_proba": est.predict_proba(images)}  # fmt: skip
                again = lambda m: m.predict_proba(images)  # noqa: E731
            else:
                X = frame if est.metadata is not None else images
                est.fit(X, y, groups=groups)
                values = {"predict_proba": est.predict_proba(X)}
                again = lambda m, X=X: m.predict_proba(X)  # noqa: E731
            path = Path(saved) / "model.skinfuse"
            skinfuse.save(est, path)
            values["loaded_proba_or_transform"] = again(skinfuse.load(path))
            if hasattr(est, "history_"):
                values["history"] = np.asarray(
                    [[h.get("train_loss", np.nan), h.get("valid_loss", np.nan)]
                     if hasattr(h, "get") else [h, np.nan] for h in est.history_],
                    dtype=np.float64,
                )  # fmt: skip
        out[name] = {k: digest(v) for k, v in values.items()}
        print(f"{name:22s} {time.perf_counter() - start:6.1f} s  "
              + "  ".join(f"{k}={v}" for k, v in out[name].items()), flush=True)  # fmt: skip
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    )
    parser.add_argument("--n", type=int, default=36, help="images (a third per class)")
    parser.add_argument("--only", nargs="*", help="case names to run (default: all)")
    parser.add_argument("--out", help="save the digests as JSON here")
    parser.add_argument("--compare", help="a JSON of an earlier run: exit 1 on any difference")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default=None,
        help="the estimators' precision (default: theirs; 'auto' is bf16 on a CPU with native "
        "bf16 units: force fp32 there to compare with a code without the parameter)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    out = run(args.data, args.n, args.only, args.precision)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        diff = [f"{case}.{key}: {value} -> {out.get(case, {}).get(key)}"
                for case, values in before.items() if case in out
                for key, value in values.items() if out[case].get(key) != value]  # fmt: skip
        print("identical" if not diff else "DIFFERENT:\n  " + "\n  ".join(diff))
        return 1 if diff else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
