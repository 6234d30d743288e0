"""A bounded load check of ``skinfuse serve`` on the loopback address.

Trains a tiny model (tiny CNN at 32 px + metadata, 60 synthetic lesions), serves it in this
process on 127.0.0.1 and sends ``--requests`` uploads (synthetic 256 x 256 PNG lesions with
metadata, Grad-CAM included) from ``--clients`` concurrent clients; prints the latency
percentiles and the failures, writes JSON with versions and hardware.

    python benchmarks/serve_load.py            # 100 requests, 4 clients
    python benchmarks/serve_load.py --smoke    # 12 requests, 2 clients
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import tempfile
import threading
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _model(folder: Path) -> Path:
    from sklearn.linear_model import LogisticRegression

    import skinfuse
    from skinfuse.conformal import PredictionSets
    from skinfuse.datasets import make_synthetic_lesions
    from skinfuse.encoders import FrozenCNNEncoder
    from skinfuse.metrics import dataset_summary
    from skinfuse.pipeline import make_fusion_pipeline

    lesions = make_synthetic_lesions(60, image_size=24, random_state=3, data_dir=folder / "data")
    X, y = lesions.data, lesions.target
    encoder = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32, verbose=0)
    pipeline = make_fusion_pipeline(encoder, classifier=LogisticRegression(max_iter=200),
                                    sampler=None, random_state=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pipeline.fit(X.iloc[:40], y[:40])
        sets = PredictionSets(pipeline, coverage=0.9).fit(X.iloc[40:], y[40:])
    summary = dataset_summary(X, y, classes=pipeline.classes_)
    return skinfuse.save(sets, folder / "tiny.skinfuse", training_data=summary)


def _uploads(n, side=256):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        image = rng.normal(180, 30, (side, side, 3))
        yy, xx = np.mgrid[:side, :side]
        r = rng.uniform(0.2, 0.4) * side
        image[(yy - side / 2) ** 2 + (xx - side / 2) ** 2 < r**2] *= 0.4
        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="12 requests from 2 clients")
    parser.add_argument("--out", default="serve_load.json", help="JSON results file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.requests, args.clients = 12, 2

    import torch

    from skinfuse._app import ModelPage, make_server

    with tempfile.TemporaryDirectory() as tmp:
        page = ModelPage.from_file(_model(Path(tmp)))
    server = make_server(page, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/api/analyse?age=55&sex=male&localization=back"
    uploads = _uploads(8)

    def one(i):
        start = time.perf_counter()
        try:
            request = urllib.request.Request(url, data=uploads[i % len(uploads)], method="POST")
            with urllib.request.urlopen(request, timeout=120) as response:
                body = json.loads(response.read())
                ok = response.status == 200 and body.get("overlay") is not None
        except Exception:  # a failure is counted, not raised
            ok = False
        return time.perf_counter() - start, ok

    one(0)  # warm-up: the first Grad-CAM builds its hooks
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - start
    server.shutdown()
    latencies = np.array([t for t, _ in results]) * 1000
    failures = sum(not ok for _, ok in results)
    record = {
        "requests": args.requests, "clients": args.clients, "failures": failures,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "max_ms": float(latencies.max()), "throughput_per_s": args.requests / wall,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(), "torch": torch.__version__,
    }  # fmt: skip
    Path(args.out).write_text(json.dumps(record, indent=2))
    print("| requests | clients | p50 (ms) | p95 (ms) | max (ms) | requests/s | failures |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.requests} | {args.clients} | {record['p50_ms']:.0f} | "
          f"{record['p95_ms']:.0f} | {record['max_ms']:.0f} | "
          f"{record['throughput_per_s']:.1f} | {failures} |")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
