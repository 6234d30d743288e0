"""Peak memory of partial fine-tuning as the number of images grows, and the epoch time of
the top on float32 vs float16-stored activations.

    PYTHONPATH=. python benchmarks/activation_memory.py --sizes 2000 8000 16000 \\
        --budget 100MB [--unique 1000] [--views 4] [--out runs/activation_memory]
    PYTHONPATH=. python benchmarks/activation_memory.py --epoch-timing [--timing-n 2000]

**Sizes.** Each size runs in a fresh process: ``FusionNetClassifier(trainable_blocks=2,
cached_views=4, image_size=224, max_epochs=1, batch_size=128)`` (EfficientNet-Lite0, the
``partial`` recipe's network) fitted on ``N`` rows made of ``--unique`` distinct HAM10000
images repeated (the trunk encodes each distinct image once per view, through an empty
``cache_dir``, or ``--cache-dir``, shared by the sizes; every row still has its own
activations in the fit's array), with
``activation_memory=--budget`` (``--budget none``: no limit, all in memory). A thread reads
``/proc/self/status`` every 20 ms: the peak resident memory (``VmHWM``) and the peaks of its
two parts, ``RssAnon`` (heap: what the process holds) and ``RssFile`` (pages of mapped files,
the memory-mapped activations among them: the kernel can drop them and read them back).
Without the data folder (``--data``, ``SKINFUSE_DATA``), synthetic lesions stand in.

**Epoch timing** (``--epoch-timing``): one training epoch of the top (the last 2 stages of
Lite0, the head) on ``--timing-n`` random activations stored as float32 and as float16 (the
float16 batches converted to float32 as they are gathered), alternated, ``--repeats`` times.

**Agreement** (``--agreement OUT.npz``): the ``partial`` recipe's network (3 epochs) fitted on
``--train-n`` share images (a seeded sample) and predicting ``--test-n`` others; the
probabilities are saved. Run it on two versions of skinfuse (``PYTHONPATH``) and compare
with ``--compare A.npz B.npz``: the largest and mean absolute difference of the
probabilities and the share of identical predicted classes.

Linux only (``/proc``). Prints a markdown table last; ``--out`` also writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _status() -> dict:
    """``/proc/self/status`` in kB, the memory fields."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[name] = int(value.split()[0])
    return out


class _PeakWatcher(threading.Thread):
    """The peaks of ``RssAnon`` and ``RssFile``, sampled every ``every`` seconds."""

    def __init__(self, every=0.02):
        super().__init__(daemon=True)
        self.every, self.peaks, self.stop = every, {"RssAnon": 0, "RssFile": 0}, False

    def run(self):
        while not self.stop:
            now = _status()
            for key in self.peaks:
                self.peaks[key] = max(self.peaks[key], now.get(key, 0))
            time.sleep(self.every)


def _rows(data, n, unique):
    """A DataFrame of ``n`` rows made of ``unique`` distinct images, repeated."""
    import pandas as pd

    from skinfuse.datasets import load_ham10000, make_synthetic_lesions

    if data and Path(data).is_dir():
        frame = load_ham10000(data).frame
    else:
        folder = tempfile.mkdtemp()
        frame = make_synthetic_lesions(n_samples=unique, image_size=64, random_state=0,
                                       data_dir=folder).frame  # fmt: skip
    frame = frame.sample(n=min(unique, len(frame)), random_state=0).reset_index(drop=True)
    reps = -(-n // len(frame))
    return pd.concat([frame] * reps, ignore_index=True).iloc[:n]


def child(args) -> dict:
    """One size, in this process: fit, then the memory peaks."""
    import torch

    from skinfuse.fusion import FusionNetClassifier

    torch.set_num_threads(args.threads)
    frame = _rows(args.data, args.n, args.unique)
    watcher = _PeakWatcher()
    watcher.start()
    budget = None if args.budget.lower() == "none" else args.budget
    params = dict(
        trainable_blocks=2, cached_views=args.views, image_size=224, max_epochs=1,
        batch_size=128, num_workers=0, device="cpu", random_state=0,
        validation_fraction=args.validation_fraction,
    )  # fmt: skip
    net = FusionNetClassifier(**params)
    if "activation_memory" in net.get_params():  # absent before issue 25: all in memory
        net.set_params(activation_memory=budget)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as empty:
        net.set_params(cache_dir=args.cache_dir or empty).fit(frame, frame["dx"].to_numpy())
    wall = time.perf_counter() - start
    watcher.stop = True
    watcher.join()
    status = _status()
    return {
        "n": args.n,
        "budget": args.budget,
        "activations_mb": args.views * args.n * 192 * 7 * 7 * 2 / 1e6,
        "peak_rss_mb": status["VmHWM"] / 1024,
        "peak_anon_mb": watcher.peaks["RssAnon"] / 1024,
        "peak_file_mb": watcher.peaks["RssFile"] / 1024,
        "wall_s": wall,
        "epoch_s": float(net.history_[-1, "dur"]),
    }


def epoch_timing(n, repeats, threads) -> list[dict]:
    """One epoch of the top on float32 and on float16-stored activations, alternated."""
    from dataclasses import replace

    import torch

    from skinfuse._nn.modules import ClassifierNetwork
    from skinfuse._nn.partial import ActivationDataset, split_network
    from skinfuse._nn.spec import TrainingConfig
    from skinfuse._nn.store import StoreLoader
    from skinfuse._nn.training import train_network

    torch.set_num_threads(threads)
    net = ClassifierNetwork("efficientnet_lite0", n_classes=7, image_size=224)
    net.freeze(7)
    _, top, shape = split_network(net, 2, 224)
    top.features_only = False
    rng = np.random.default_rng(0)
    acts32 = rng.normal(0, 2, (4, n, int(np.prod(shape)))).astype(np.float32)
    acts16 = acts32.astype(np.float16)
    y = rng.integers(0, 7, n)
    config = TrainingConfig(device="cpu", max_epochs=1, lr=1e-3, batch_size=128, num_workers=0,
                            precision="fp32", lr_schedule=None)  # fmt: skip
    rows = []
    for r in range(repeats):
        for name, acts in (("float32", acts32), ("float16", acts16)):
            data = ActivationDataset(acts, shape, y=y, random_view=True)
            start = time.perf_counter()
            train_network(top, {}, data, config=replace(config), seed=r, n_classes=7,
                          iterator=StoreLoader)  # fmt: skip
            rows.append({"repeat": r, "storage": name, "epoch_s": time.perf_counter() - start})
            print(f"repeat {r} {name}: {rows[-1]['epoch_s']:.2f} s", flush=True)
    return rows


def agreement(args) -> None:
    """Fit the partial recipe's network on ``--train-n`` images, save its probabilities."""
    import torch

    from skinfuse.datasets import load_ham10000
    from skinfuse.fusion import FusionNetClassifier

    torch.set_num_threads(args.threads)
    frame = load_ham10000(args.data).frame.sample(n=args.train_n + args.test_n, random_state=0)
    train = frame.iloc[: args.train_n]
    test = frame.iloc[args.train_n : args.train_n + args.test_n]
    net = FusionNetClassifier(
        trainable_blocks=2, cached_views=4, tta=4, class_weight="sqrt", label_smoothing=0.1,
        max_epochs=3, lr=1e-3, batch_size=128, num_workers=0, device="cpu", random_state=0,
    ).fit(train, train["dx"].to_numpy())  # fmt: skip
    np.savez(args.agreement, proba=net.predict_proba(test), classes=net.classes_)


def compare(a, b) -> str:
    pa, pb = np.load(a)["proba"], np.load(b)["proba"]
    diff = np.abs(pa - pb)
    same = float(np.mean(pa.argmax(1) == pb.argmax(1)))
    return (f"{len(pa)} images: max |dp| {diff.max():.2e}, mean |dp| {diff.mean():.2e}, "
            f"identical predicted classes {same:.1%}")  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000"))
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000])
    p.add_argument("--budget", default="100MB", help="activation_memory; 'none': no limit")
    p.add_argument("--unique", type=int, default=1000, help="distinct images")
    p.add_argument("--views", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cache-dir", default="", help="shared by the sizes (default: an empty "
                   "one each): the first size encodes, the next ones read its shards")  # fmt: skip
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--epoch-timing", action="store_true")
    p.add_argument("--timing-n", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, synthetic images")
    p.add_argument("--out", default=None)
    p.add_argument("--agreement", metavar="OUT.npz", help="fit, predict, save probabilities")
    p.add_argument("--train-n", type=int, default=600)
    p.add_argument("--test-n", type=int, default=300)
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two --agreement files")
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)  # one size, in this process
    args = p.parse_args(argv)
    if args.compare:
        print(compare(*args.compare))
        return None
    if args.agreement:
        agreement(args)
        return None
    if args.smoke:
        args.data, args.sizes, args.unique, args.views, args.budget = "", [40, 80], 20, 2, "1MB"
        args.timing_n, args.repeats, args.validation_fraction = 64, 1, 0.0
    if args.n is not None:
        print(json.dumps(child(args)))
        return None
    import torch

    meta = {"python": sys.version.split()[0], "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "args": vars(args)}  # fmt: skip
    if args.epoch_timing:
        rows = epoch_timing(args.timing_n, args.repeats, args.threads)
        result = {**meta, "epoch_timing": rows}
        table = ["| storage | epoch (s), each repeat |", "|---|---|"]
        for name in ("float32", "float16"):
            times = ", ".join(f"{r['epoch_s']:.2f}" for r in rows if r["storage"] == name)
            table.append(f"| {name} | {times} |")
    else:
        rows = []
        for n in args.sizes:
            cmd = [sys.executable, __file__, "--n", str(n), "--budget", args.budget,
                   "--unique", str(args.unique), "--views", str(args.views),
                   "--threads", str(args.threads), "--data", args.data,
                   "--validation-fraction", str(args.validation_fraction),
                   "--cache-dir", args.cache_dir]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"size {n} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
        result = {**meta, "sizes": rows}
        table = ["| images | budget | activations (MB) | peak RSS (MB) | peak anon (MB) | "
                 "peak file (MB) | wall (s) |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in rows:
            table.append(f"| {r['n']:,} | {r['budget']} | {r['activations_mb']:.0f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['peak_anon_mb']:.0f} | "
                         f"{r['peak_file_mb']:.0f} | {r['wall_s']:.0f} |")  # fmt: skip
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        name = "epoch_timing" if args.epoch_timing else "activation_memory"
        (Path(args.out) / f"{name}.json").write_text(json.dumps(result, indent=1))
    print("\n".join(table))
    return result


if __name__ == "__main__":
    main()
