"""Training throughput: FusionNetClassifier's fit epochs against a hand-written loop.

    python benchmarks/train_throughput.py [--data PATH] [--limit N] [--backbone NAME]
        [--image-size 224] [--batch-size 128] [--epochs 3] [--device auto] [--smoke]

Rows, all with the same network (``ClassifierNetwork``: backbone + metadata branch + head),
image size, batch size, optimizer (AdamW) and loss, on the same images, in one run:

(a) a minimal hand-written loop: images decoded once and kept on the device, augmentation
    on the device (``BatchAugment``), bf16 autocast and channels-last on CUDA, no
    validation, no per-batch bookkeeping: what the hardware does;
(b) ``FusionNetClassifier(image_store="memory")``: the decoded-image store (the default on
    CUDA);
(c) ``FusionNetClassifier(image_store=None)``: DataLoader workers decode and augment every
    image again in every epoch (the default on the CPU).

Images/s are over training epochs only: the median of epochs 2..E (the first one warms up:
cuDNN autotuning, allocator), timed by skorch for (b) and (c), and the once-per-fit decoding
is reported apart. The issue's bar (on a GPU): (b) >= 0.8 x (a). Prints a markdown table
and saves JSON with versions and hardware. On a CPU, use a small size (``--image-size 96
--limit 256``); ``--smoke`` is a tiny synthetic run for CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from skinfuse import show_versions
from skinfuse._nn.augment import BatchAugment
from skinfuse._nn.data import decode_images
from skinfuse._nn.device import resolve_device, torch_seed
from skinfuse._nn.inference import autocast
from skinfuse._nn.modules import ClassifierNetwork
from skinfuse.datasets import load_ham10000, make_synthetic_lesions
from skinfuse.fusion import FusionNetClassifier

DEFAULT_DATA = os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")


def hand_written_loop(args, images, metadata, y, n_classes, device):
    """Train with a plain PyTorch loop; return (epoch seconds, decode seconds)."""
    t0 = time.perf_counter()
    pixels = decode_images(images, args.image_size, batch_size=args.batch_size)
    pixels = pixels.to(device)
    meta = torch.from_numpy(metadata).to(device)
    target = torch.from_numpy(y).to(device)
    decode_s = time.perf_counter() - t0
    cuda = device.startswith("cuda")
    with torch_seed(0, device):
        model = ClassifierNetwork(
            backbone=args.backbone, weights=args.weights, n_classes=n_classes,
            image_size=args.image_size, n_metadata=metadata.shape[1], dropout=0.2,
        ).to(device)  # fmt: skip
        if cuda:
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        loss_fn = torch.nn.CrossEntropyLoss()
        augment = BatchAugment()
        epochs = []
        n = len(pixels)
        for _ in range(args.epochs):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.train()
            for idx in torch.randperm(n, device=device).split(args.batch_size):
                x = augment(pixels[idx])
                if cuda:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(device):
                    loss = loss_fn(model(x, metadata=meta[idx]).float(), target[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            epochs.append(time.perf_counter() - t0)
    return epochs, decode_s


def library_fit(args, X, y, device, image_store):
    """Fit FusionNetClassifier; return (epoch seconds, seconds outside the epochs)."""
    net = FusionNetClassifier(
        args.backbone, weights=args.weights, image_size=args.image_size,
        batch_size=args.batch_size, max_epochs=args.epochs, lr=1e-3, class_weight=None,
        validation_fraction=0.0, patience=None, image_store=image_store, device=device,
        num_workers=args.num_workers, random_state=0,
    )  # fmt: skip
    t0 = time.perf_counter()
    net.fit(X, y)
    total = time.perf_counter() - t0
    epochs = [float(row["dur"]) for row in net.history_]
    return epochs, total - sum(epochs)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="HAM10000 folder")
    parser.add_argument("--limit", type=int, default=2048, help="training images (0 = all)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="DEFAULT", help="DEFAULT, or 'none' (random)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="timed: epochs 2..E")
    parser.add_argument("--num-workers", type=int, default=None, help="row (c)'s workers")
    parser.add_argument(
        "--rows", nargs="+", default=["loop", "store", "loader"],
        choices=["loop", "store", "loader"], help="which rows to run",
    )  # fmt: skip
    parser.add_argument("--device", default="auto")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run, for CI")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON")
    args = parser.parse_args(argv)
    args.weights = None if args.weights.lower() == "none" else args.weights

    if args.smoke:
        bunch = make_synthetic_lesions(n_samples=48, image_size=32, n_classes=3, random_state=0)
        args.backbone, args.weights, args.image_size = "tiny_cnn", None, 32
        args.limit, args.batch_size, args.epochs = 48, 16, 2
        source = "synthetic (smoke)"
    else:
        bunch = load_ham10000(args.data)
        source = f"HAM10000 at {args.data}"
    X, y = bunch.data, bunch.target
    if args.limit:
        X, y = X.iloc[: args.limit], y.iloc[: args.limit]
    device = resolve_device(args.device)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # both sides: fixed input sizes
    n = len(X)
    classes, y_idx = np.unique(np.asarray(y), return_inverse=True)

    rows, extra = {}, {}
    if "loop" in args.rows:
        # the loop's metadata: the same preprocessing the estimator fits
        from skinfuse.metadata import make_metadata_preprocessor

        meta = np.asarray(make_metadata_preprocessor().fit_transform(X), dtype=np.float32)
        epochs, decode_s = hand_written_loop(
            args, X["image_path"].tolist(), meta, y_idx.astype(np.int64), len(classes), device
        )
        rows["(a) hand-written loop (decoded once, on the device)"] = epochs
        extra["(a) hand-written loop (decoded once, on the device)"] = decode_s
    for key, store, name in [
        ("store", "memory", "(b) FusionNetClassifier, image_store='memory'"),
        ("loader", None, "(c) FusionNetClassifier, image_store=None (loader workers)"),
    ]:
        if key in args.rows:
            rows[name], extra[name] = library_fit(args, X, y, device, store)

    def rate(epochs):
        timed = epochs[1:] if len(epochs) > 1 else epochs
        return n / statistics.median(timed)

    rates = {name: rate(epochs) for name, epochs in rows.items()}
    reference = next((r for name, r in rates.items() if name.startswith("(a)")), None)
    table = [
        f"| method ({args.backbone}, {args.image_size} px, batch {args.batch_size}, {device}) "
        "| images/s | x loop | epochs (s) | outside epochs (s) |",
        "|---|---|---|---|---|",
    ]
    for name, r in rates.items():
        ratio = f"{r / reference:.2f}" if reference else "-"
        epochs = ", ".join(f"{e:.1f}" for e in rows[name])
        table.append(f"| {name} | {r:,.1f} | {ratio} | {epochs} | {extra[name]:.1f} |")
    summary = {}
    store_name = "(b) FusionNetClassifier, image_store='memory'"
    if reference and store_name in rates:
        summary["store_vs_loop"] = rates[store_name] / reference
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": "train_throughput",
        "data": source,
        "n_images": n,
        "args": vars(args),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device.startswith("cuda") else None,
        "epoch_seconds": rows,
        "seconds_outside_epochs": extra,
        "images_per_second": rates,
        "summary": summary,
        "torch_threads": torch.get_num_threads(),
        "versions": show_versions(),
    }
    name = "train_throughput_smoke.json" if args.smoke else f"train_throughput_{device}.json"
    (out / name).write_text(json.dumps(result, indent=2, default=str))
    print(f"{source}: {n} images, {args.epochs} epochs per row, device {device}")
    print("\n".join(table))
    if summary:
        print(f"store / hand-written loop: {summary['store_vs_loop']:.2f} (bar on a GPU: 0.8)")
    return result


if __name__ == "__main__":
    main()
