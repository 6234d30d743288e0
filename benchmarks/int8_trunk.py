"""The partial recipe's frozen trunk in onnxruntime, fp32 against int8 (issue 25's 7 minutes).

    PYTHONPATH=. python benchmarks/int8_trunk.py [--data PATH] [--images 256] [--calibration 128]

EfficientNet-Lite0's trunk as ``FusionNetClassifier(trainable_blocks=2)`` caches it (ImageNet
weights, 224 px, everything before the last two stages), exported to ONNX as
``skinfuse.set_config(engine="onnxruntime")`` exports it, then quantized statically by
``onnxruntime.quantization.quantize_static`` (QDQ, weights int8 per channel, activations
uint8, calibrated on ``--calibration`` share images with each ``--method``). On
``--images`` other share images (decoded beforehand: the trunk alone is timed), in batches
of 32, fp32 and int8 alternated three times (median rate): images per second and how far
the int8 activations are from fp32's (mean absolute error, cosine per image). A probe: no
recipe uses int8.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch

from skinfuse._nn.backbones import backbone_stages
from skinfuse._nn.modules import ClassifierNetwork
from skinfuse._nn.partial import split_network
from skinfuse.datasets import load_ham10000
from skinfuse.images import read_image


def _session(path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _run(session, images, batch=32):
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i : i + batch]})[0]
                           for i in range(0, len(images), batch)])  # fmt: skip


def main(argv=None):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000"))
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--calibration", type=int, default=128)
    p.add_argument("--method", nargs="+", default=["MinMax", "Percentile"],
                   choices=["MinMax", "Percentile", "Entropy"])  # fmt: skip
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ham = load_ham10000(args.data)
    paths = ham.data["image_path"].to_numpy()
    order = np.random.default_rng(0).permutation(len(paths))

    def decoded(rows):
        return np.stack([read_image(paths[i], size=224) for i in rows]).transpose(0, 3, 1, 2).copy()

    calibration = decoded(order[: args.calibration])
    test = decoded(order[args.calibration : args.calibration + args.images])
    net = ClassifierNetwork("efficientnet_lite0", n_classes=7, image_size=224).eval()
    net.freeze(len(backbone_stages(net.embedder.features)) - 2)
    trunk, _, _ = split_network(net, 2, 224)
    folder = tempfile.mkdtemp(prefix="skinfuse-int8-")
    fp32, int8 = os.path.join(folder, "trunk.onnx"), os.path.join(folder, "int8.onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch", min=1, max=1 << 16)
        torch.onnx.export(trunk.staged(), (torch.from_numpy(test[:2]),),
                          dynamic_shapes=({0: batch},), dynamo=True, optimize=True,
                          verbose=False).save(fp32)  # fmt: skip
    s32 = _session(fp32, args.threads)
    name = s32.get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{name: calibration[i : i + 16]}
                                 for i in range(0, len(calibration), 16)])  # fmt: skip

        def get_next(self):
            return next(self.batches, None)

    print(f"{len(test)} share images, 224 px, {args.threads} threads, calibrated on "
          f"{len(calibration)} others", flush=True)  # fmt: skip
    for method in args.method:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method))  # fmt: skip
        quantized_s = time.perf_counter() - start
        s8 = _session(int8, args.threads)
        rates = {"fp32": [], "int8": []}
        for _ in range(3):
            for key, session in (("fp32", s32), ("int8", s8)):
                start = time.perf_counter()
                out = _run(session, test)
                rates[key].append(len(test) / (time.perf_counter() - start))
                if key == "fp32":
                    a = out.reshape(len(test), -1)
                else:
                    b = out.reshape(len(test), -1)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        r32, r8 = np.median(rates["fp32"]), np.median(rates["int8"])
        print(f"{method}: quantized in {quantized_s:.0f} s; fp32 {r32:.1f} img/s, int8 "
              f"{r8:.1f} img/s ({r8 / r32:.2f}x); activations |a| <= {np.abs(a).max():.1f}, "
              f"mean |a| {np.abs(a).mean():.3f}, mean abs error {np.abs(a - b).mean():.3f}, "
              f"cosine per image min {cosine.min():.4f}, median {np.median(cosine):.4f}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
