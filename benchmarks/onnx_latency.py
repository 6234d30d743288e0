"""Latency of the ONNX export under onnxruntime against the same network in torch, on the CPU.

    python benchmarks/onnx_latency.py [--image-size 224] [--batches 1 32] [--repeats 20]

Two networks, exported by :func:`skinfuse.export_onnx`: a FrozenCNNEncoder
(EfficientNet-Lite0, the image encoder of a fusion pipeline: image -> embedding) and a
FusionNetClassifier (EfficientNet-Lite0 + the metadata branch: image + metadata ->
probabilities). Each is timed on pre-decoded uint8 batches (no decoding, no resize), torch
eager under ``inference_mode`` against an onnxruntime session, with the same number of
threads. The two are alternated call by call (torch, onnxruntime, torch, ...), so load from
other processes on a shared machine hits both alike. Weights are random (``weights=None``):
latency does not depend on them. Prints a markdown table last (median milliseconds per
batch) and saves JSON with versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import skinfuse
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder
from skinfuse.fusion import FusionNetClassifier


def build(backbone, size, folder):
    """A fitted frozen encoder and a fitted fusion network (one epoch on a few images)."""
    lesions = make_synthetic_lesions(16, image_size=size, n_classes=2, data_dir=folder,
                                     random_state=0)  # fmt: skip
    common = dict(weights=None, image_size=size, num_workers=0, verbose=0)
    encoder = FrozenCNNEncoder(backbone, **common).fit(lesions.data[["image_path"]])
    fusion = FusionNetClassifier(backbone, **common, max_epochs=1, batch_size=8,
                                 validation_fraction=0.0, random_state=0)  # fmt: skip
    return {"frozen encoder": encoder, "fusion network": fusion.fit(lesions.data, lesions.target)}


def time_pair(model, onnx_path, batch, size, repeats, threads):
    """Median seconds per batch of torch and of onnxruntime, alternated; max |difference|."""
    import onnxruntime as ort

    from skinfuse._export._onnx import _exported_part, _prepare

    part, kind = _exported_part(model)
    module, _, names, _, info = _prepare(part, kind, torch)
    module = module.eval()
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8)
    feeds = {"image": image}
    if "metadata" in names:
        n_meta = len(info["inputs"]["metadata"]["feature_names"])
        feeds["metadata"] = rng.standard_normal((batch, n_meta)).astype(np.float32)
    tensors = [torch.from_numpy(feeds[n]) for n in names]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run_torch():
        with torch.inference_mode():
            return module(*tensors).numpy()

    def run_ort():
        return session.run(None, feeds)[0]

    difference = float(np.abs(run_torch() - run_ort()).max())  # and the warm-up
    run_torch(), run_ort()
    times = {"torch": [], "onnxruntime": []}
    for _ in range(repeats):
        for label, fn in (("torch", run_torch), ("onnxruntime", run_ort)):
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(t) for label, t in times.items()} | {
        "max_abs_difference": difference, "times": times,
    }  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads of both runtimes (default: torch's)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--smoke", action="store_true", help="tiny_cnn, 32 px: CI's check")
    args = parser.parse_args(argv)
    if args.smoke:
        args.backbone, args.image_size, args.batches, args.repeats = "tiny_cnn", 32, [1, 4], 3
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        models = build(args.backbone, args.image_size, folder)
        for name, model in models.items():
            onnx_path = Path(folder) / f"{name.replace(' ', '_')}.onnx"
            skinfuse.export_onnx(model, onnx_path)  # once: the batch axis is dynamic
            for batch in args.batches:
                result = time_pair(model, onnx_path, batch, args.image_size, args.repeats,
                                   threads)  # fmt: skip
                rows[f"{name}, batch {batch}"] = result
    payload = {
        "settings": {**vars(args), "out": str(args.out), "threads": threads},
        "versions": skinfuse.show_versions(),
        "results": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "onnx_latency_smoke.json" if args.smoke else "onnx_latency.json"
    (args.out / name).write_text(json.dumps(payload, indent=2))
    print(f"\n{args.backbone}, {args.image_size} px, {threads} threads, median of "
          f"{args.repeats} alternated calls\n")  # fmt: skip
    print("| network, batch | torch ms | onnxruntime ms | torch / onnxruntime | max abs diff |")
    print("|---|---|---|---|---|")
    for key, r in rows.items():
        print(f"| {key} | {1e3 * r['torch']:.1f} | {1e3 * r['onnxruntime']:.1f} | "
              f"{r['torch'] / r['onnxruntime']:.2f} | {r['max_abs_difference']:.1e} |")  # fmt: skip
    return payload


if __name__ == "__main__":
    main()
