"""Throughput of FrozenCNNEncoder against a naive loop and the model alone.

    python benchmarks/encode_throughput.py [--data PATH] [--limit N] [--image-size 224]

Rows: (a) a naive loop (PIL open -> resize -> normalise -> model, one image at a time, on
the CPU); (b) the model alone on pre-decoded tensors already on the device, in batches
(bf16 autocast on CUDA, as the encoder runs): the compute limit;
(c) FrozenCNNEncoder.transform, first pass, decode="pil" (PIL decodes in DataLoader
workers + model); (d) the same call again (served by the embedding cache);
(e) FrozenCNNEncoder.transform, first pass, decode="device" (the workers read the files,
torchvision decodes and resizes each batch on the device: nvjpeg on CUDA, where
decode="auto" does this; libjpeg-turbo in the main process on the CPU).
The "x model alone" column is each row's rate over (b); on a GPU the bar for (e) is 0.6.
Prints a markdown table last and saves JSON with versions and hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from skinfuse import show_versions
from skinfuse.datasets import load_ham10000, make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder, clear_cache
from skinfuse.images import load_images

DEFAULT_DATA = os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")


def naive_loop(encoder, paths, image_size):
    from PIL import Image

    module = encoder.embedder_.eval()
    out = []
    with torch.no_grad():
        for path in paths:
            img = Image.open(path).convert("RGB").resize((image_size, image_size), Image.BILINEAR)
            x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None]
            out.append(module(x).numpy())
    return np.concatenate(out)


def model_alone(encoder, pixels, batch_size):
    """The network's best eager setting on tensors already in memory, on the encoder's
    device (bf16 autocast on CUDA, as the encoder runs): the compute limit."""
    import copy

    from skinfuse._nn.inference import CPU_CHUNK, autocast

    device = torch.device(encoder.device_)
    module = encoder.embedder_.eval()
    if device.type != "cpu":
        module = copy.deepcopy(module).to(device)
    module.to(memory_format=torch.channels_last)
    step = CPU_CHUNK if device.type == "cpu" else batch_size
    tensor = torch.from_numpy(pixels).permute(0, 3, 1, 2)  # NHWC memory: channels_last view
    tensor = tensor.to(device)  # on the device before the clock starts: no decode, no copy
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    with torch.inference_mode(), autocast(device):
        out = [module(tensor[i : i + step]) for i in range(0, len(tensor), step)]
        out = torch.cat(out).float().cpu().numpy()  # waits for the device
    seconds = time.perf_counter() - start
    module.to(memory_format=torch.contiguous_format)
    return out, seconds


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help="HAM10000 folder (default: %(default)s)"
    )
    parser.add_argument("--limit", type=int, default=1000, help="images to encode (0 = all)")
    parser.add_argument(
        "--naive-limit", type=int, default=200, help="images for the slow naive loop"
    )
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument(
        "--weights", default="DEFAULT", help="DEFAULT, or a checkpoint path (benchmarks/gpu)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run, for CI")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    args = parser.parse_args(argv)

    if args.smoke:
        bunch = make_synthetic_lesions(
            n_samples=32, image_size=64, image_format="jpg", random_state=0
        )
        args.limit, args.naive_limit, args.image_size = 32, 8, 64
        source = "synthetic (smoke)"
    else:
        bunch = load_ham10000(args.data)
        source = f"HAM10000 at {args.data}"
    paths = bunch.data["image_path"].tolist()
    if args.limit:
        paths = paths[: args.limit]
    n = len(paths)
    enc = FrozenCNNEncoder(
        args.backbone, weights=args.weights, image_size=args.image_size,
        batch_size=args.batch_size, decode="pil", device=args.device,
    ).fit(paths[:1])  # fmt: skip
    rows = {}

    t0 = time.perf_counter()
    naive_loop(enc, paths[: args.naive_limit], args.image_size)
    rows["naive loop (PIL -> model, 1 image at a time)"] = args.naive_limit / (
        time.perf_counter() - t0
    )

    pixels, _ = load_images(paths, size=args.image_size)
    model_alone(enc, pixels[: args.batch_size], args.batch_size)  # warm-up
    _, seconds = model_alone(enc, pixels, args.batch_size)
    rows["model alone on pre-decoded tensors"] = n / seconds
    del pixels

    clear_cache()
    t0 = time.perf_counter()
    first = enc.transform(paths)
    rows["FrozenCNNEncoder.transform, first pass"] = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    second = enc.transform(paths)
    rows["FrozenCNNEncoder.transform, cached pass"] = n / (time.perf_counter() - t0)
    assert np.array_equal(first, second)

    on_device = clone(enc).set_params(decode="device").fit(paths[:1])
    on_device.transform(paths[: args.batch_size])  # warm-up (nvjpeg's handles, kernels)
    clear_cache()
    t0 = time.perf_counter()
    decoded = on_device.transform(paths)
    rows["FrozenCNNEncoder.transform, device decoding"] = n / (time.perf_counter() - t0)
    # the pixels differ by a level or two from PIL's: the embeddings by about bf16 rounding
    device_change = float(np.abs(decoded - first).mean() / np.abs(first).mean())

    limit = rows["model alone on pre-decoded tensors"]
    naive = rows["naive loop (PIL -> model, 1 image at a time)"]
    first_rate = rows["FrozenCNNEncoder.transform, first pass"]
    device_rate = rows["FrozenCNNEncoder.transform, device decoding"]
    table = [
        f"| method ({args.backbone}, {args.image_size} px, {enc.device_}) | images/s | x model alone | x naive |",
        "|---|---|---|---|",
    ]
    for name, rate in rows.items():
        table.append(f"| {name} | {rate:,.1f} | {rate / limit:.2f} | {rate / naive:.2f} |")
    summary = {
        "encoder_vs_model_alone": first_rate / limit,
        "encoder_vs_naive": first_rate / naive,
        "cached_speedup": rows["FrozenCNNEncoder.transform, cached pass"] / first_rate,
        "device_decoding_vs_model_alone": device_rate / limit,
        "device_decoding_vs_pil": device_rate / first_rate,
        "device_decoding_relative_change": device_change,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "encode_throughput",
        "data": source,
        "n_images": n,
        "naive_images": args.naive_limit,
        "args": vars(args),
        "images_per_second": rows,
        "summary": summary,
        "torch_threads": torch.get_num_threads(),
        "versions": show_versions(),
    }
    name = "encode_throughput_smoke.json" if args.smoke else f"encode_throughput_{enc.device_}.json"
    (out / name).write_text(json.dumps(result, indent=2))
    print(f"\nsaved {out / name}")
    print(
        f"encoder/model-alone {summary['encoder_vs_model_alone']:.2f} (target >= 0.8), "
        f"encoder/naive {summary['encoder_vs_naive']:.2f} (target >= 3), "
        f"cached speed-up {summary['cached_speedup']:.0f}x (target >= 50), "
        f"device decoding/model-alone {summary['device_decoding_vs_model_alone']:.2f} "
        f"(target on a GPU >= 0.6; embeddings {device_change:.2%} apart from PIL's)\n"
    )
    print("\n".join(table))
    return result


if __name__ == "__main__":
    main()
