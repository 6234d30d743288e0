"""Scaling out on a Dask LocalCluster: embedding rate, memory per worker, grid-search time.

    python benchmarks/scale_out.py [--data PATH] [--workers 1 2] [--synthetic N] [--quick]

Three parts, all with FrozenCNNEncoder("efficientnet_lite0", pooling="avg") on the CPU
(``--backbone``, ``--image-size``, ``--pooling``), each cluster a fresh ``LocalCluster(n_workers=k, threads_per_worker=1)``
of worker processes (torch runs one thread per worker):

1. Embedding rate (images/s) of ``--throughput-images`` HAM10000 images: the single-process
   encoder (``FrozenCNNEncoder.transform``, no cache) with 1 torch thread and no loader
   worker, and with ``--threads`` torch threads and its default loader workers; then
   ``embed_images`` on clusters of each ``--workers`` count, each warmed up first (torch
   imported, weights loaded) and writing to an empty cache folder. Same images, same run.
2. Peak memory (VmHWM) of each worker while ``embed_images`` embeds ``--memory-sizes``
   HAM10000 images (and ``--synthetic N`` synthetic ones), a fresh 2-worker cluster per
   size so no peak carries over; also the cache's bytes per image.
3. A grid search (5 lesion-grouped folds x 6 candidates + refit, the grid of
   grid_search_cost.py) of a frozen-encoder fusion pipeline over ``--grid-images`` images,
   under ``joblib.parallel_config(backend="dask")``, with 1 and 2 workers: from an empty
   cache (the search encodes), and after ``embed_images`` (the recipe of docs/scaling.md).

Prints a markdown table last and saves JSON (with versions and hardware) and a PNG.
``--quick``: the same on a few dozen images (about 2-3 minutes on 2 cores).
``--smoke``: tiny synthetic images and network, for CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

GRID = {"select__k": [128, 256], "classifier__C": [0.1, 1.0, 10.0]}
SMOKE_GRID = {"select__k": [8, 16], "classifier__C": [0.1, 1.0, 10.0]}  # tiny_cnn: 64 features
DEFAULT_DATA = os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")


# -- measured inside the workers -----------------------------------------------------------------
def _peak_rss_mb() -> float:
    """This process's peak resident memory since it started (MB): ``VmHWM`` on Linux.

    Not ``ru_maxrss``: Linux carries the parent's peak into it across fork and exec, so a
    worker spawned by a driver holding 4 GB reported 4 GB before doing anything.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024**2 if sys.platform == "darwin" else peak / 1024  # bytes vs KB


def _warm_worker():
    import skinfuse.encoders  # noqa: F401  (and torch)


# -- helpers ---------------------------------------------------------------------------------------
def _cluster(n_workers):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    client.run(_warm_worker)
    return cluster, client


def _close(cluster, client):
    client.close()
    cluster.close()


def _encoder(args, **kwargs):
    from skinfuse.encoders import FrozenCNNEncoder

    weights = None if args.backbone == "tiny_cnn" else "DEFAULT"
    return FrozenCNNEncoder(
        args.backbone, weights=weights, image_size=args.image_size, pooling=args.pooling,
        batch_size=32, **kwargs,
    )  # fmt: skip


def _chunk_size(args, n_images, n_workers):
    """Several chunks per worker, so that the last one does not leave the others idle."""
    if args.chunk_size:
        return args.chunk_size
    return int(np.clip(n_images // (8 * n_workers), 8, 1024))


def _embed(args, client, encoder, paths, cache_dir, n_workers):
    from skinfuse.encoders import embed_images

    return embed_images(
        encoder,
        paths,
        cache_dir=cache_dir,
        client=client,
        chunk_size=_chunk_size(args, len(paths), n_workers),
        verbose=0,
    )


def _folder_bytes(folder) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*.v2.npz"))


# -- 1. embedding rate -----------------------------------------------------------------------------
def single_process_rate(args, paths, threads, num_workers):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        encoder = _encoder(args, cache=False, num_workers=num_workers).fit(paths[:1])
        encoder.transform(paths[:16])  # warm-up
        start = time.perf_counter()
        encoder.transform(paths)
        return len(paths) / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(before)


def cluster_rate(args, paths, warmup, n_workers, scratch):
    cluster, client = _cluster(n_workers)
    try:
        encoder = _encoder(args).fit(paths[:1])
        _embed(args, client, encoder, warmup, scratch / f"warm-{n_workers}", n_workers)
        start = time.perf_counter()
        done = _embed(args, client, encoder, paths, scratch / f"rate-{n_workers}", n_workers)
        seconds = time.perf_counter() - start
        assert done.encoded == len(set(paths)), done
        return len(paths) / seconds, done.encoded / done.worker_seconds
    finally:
        _close(cluster, client)


# -- 2. memory per worker --------------------------------------------------------------------------
def memory_per_worker(args, paths, scratch, label):
    cluster, client = _cluster(2)
    try:
        encoder = _encoder(args).fit(paths[:1])
        _embed(args, client, encoder, paths[:16], scratch / f"warm-mem-{label}", 2)
        warm = client.run(_peak_rss_mb)
        cache_dir = scratch / f"mem-{label}"
        start = time.perf_counter()
        done = _embed(args, client, encoder, paths, cache_dir, 2)
        seconds = time.perf_counter() - start
        peak = client.run(_peak_rss_mb)
    finally:
        _close(cluster, client)
    bytes_per_image = _folder_bytes(cache_dir) / max(1, done.encoded)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        "n_images": len(paths),
        "peak_rss_mb_per_worker": sorted(peak.values()),
        "peak_rss_mb_after_warmup": sorted(warm.values()),
        "images_per_second_2_workers": len(paths) / seconds,
        "images_per_second_per_worker_in_chunks": done.encoded / done.worker_seconds,
        "cache_bytes_per_image": bytes_per_image,
    }


def synthetic_paths(n, image_size, folder):
    """``n`` synthetic lesion JPEGs, written 2,000 at a time (the generator holds its masks)."""
    from skinfuse.datasets import make_synthetic_lesions

    paths = []
    for i, start in enumerate(range(0, n, 2000)):
        bunch = make_synthetic_lesions(
            min(2000, n - start), image_size=image_size, data_dir=folder / f"part{i}",
            image_format="jpg", random_state=1000 + i,
        )  # fmt: skip
        paths += bunch.data["image_path"].tolist()
    return paths


# -- 3. grid search --------------------------------------------------------------------------------
def grid_search_times(args, X, y, groups, n_workers, scratch):
    import joblib
    from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold

    from skinfuse.pipeline import make_fusion_pipeline

    param_grid = SMOKE_GRID if args.smoke else GRID

    def search(cache_dir):
        model = make_fusion_pipeline(
            _encoder(args, cache_dir=str(cache_dir)), select_k=param_grid["select__k"][0],
            sampler=None, classifier="logreg", class_weight="balanced", random_state=0,
        )  # fmt: skip
        cv = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=0)
        grid = GridSearchCV(
            model, param_grid, cv=cv, scoring="balanced_accuracy", n_jobs=-1, error_score="raise"
        )
        start = time.perf_counter()
        with joblib.parallel_config(backend="dask"):
            grid.fit(X, y, groups=groups)
        return time.perf_counter() - start, grid.cv_results_["mean_test_score"]

    cluster, client = _cluster(n_workers)
    try:
        paths = X["image_path"].tolist()
        _embed(args, client, _encoder(args).fit(paths[:1]), paths[:16], scratch / "warm-grid", 1)
        cold, scores = search(scratch / f"grid-cold-{n_workers}")
        start = time.perf_counter()
        _embed(args, client, _encoder(args).fit(paths[:1]), paths, scratch / f"grid-{n_workers}",
               n_workers)  # fmt: skip
        embed = time.perf_counter() - start
        warm, warm_scores = search(scratch / f"grid-{n_workers}")
    finally:
        _close(cluster, client)
    return {
        "n_workers": n_workers,
        "cold_cache_s": cold,
        "embed_images_s": embed,
        "search_after_embed_s": warm,
        "mean_test_scores": scores.tolist(),
        "mean_test_scores_after_embed": warm_scores.tolist(),
    }


# -- the run ---------------------------------------------------------------------------------------
def _parse(argv):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="HAM10000 folder (%(default)s)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--pooling", default="avg", help="FrozenCNNEncoder's (%(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2, help="torch threads, single process")
    parser.add_argument("--throughput-images", type=int, default=1000)
    parser.add_argument("--memory-sizes", type=int, nargs="+", default=[2000, 8000])
    parser.add_argument(
        "--synthetic",
        type=int,
        default=None,
        help="also measure memory on N synthetic images (default 20000; --quick: none)",
    )
    parser.add_argument("--synthetic-size", type=int, default=256, help="their side (px)")
    parser.add_argument("--grid-images", type=int, default=1000)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=0, help="0: several per worker")
    parser.add_argument("--scratch", default=None, help="folder for caches (a temporary one)")
    parser.add_argument("--out", default="benchmarks/results", help="folder for JSON and PNG")
    parser.add_argument("--quick", action="store_true", help="a few dozen images (~2-3 min)")
    parser.add_argument("--smoke", action="store_true", help="tiny synthetic run, for CI")
    args = parser.parse_args(argv)
    if args.quick or args.smoke:
        args.throughput_images, args.memory_sizes, args.grid_images = 64, [48, 96], 120
        args.folds, args.synthetic = 3, min(args.synthetic or 0, 200)
    elif args.synthetic is None:
        args.synthetic = 20000
    if args.smoke:
        args.backbone, args.image_size, args.synthetic_size = "tiny_cnn", 32, 32
    return args


def _load(args, scratch):
    if args.smoke:
        from skinfuse.datasets import make_synthetic_lesions

        bunch = make_synthetic_lesions(
            160, image_size=32, data_dir=scratch / "smoke-images", random_state=0
        )
        return bunch, "synthetic (smoke)"
    from skinfuse.datasets import load_ham10000

    return load_ham10000(args.data), f"HAM10000 at {args.data}"


def main(argv=None):
    import torch

    from skinfuse import show_versions

    args = _parse(argv)
    warnings.simplefilter("ignore", UserWarning)  # unseen categories in small folds
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="skinfuse-scale-out-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        bunch, source = _load(args, scratch)
        order = np.random.default_rng(0).permutation(len(bunch.data))  # every class in a prefix
        data, target = bunch.data.iloc[order], bunch.target.iloc[order]
        groups = np.asarray(bunch.groups)[order]
        all_paths = data["image_path"].tolist()
        paths = all_paths[: args.throughput_images]
        warmup = all_paths[-16:]

        print(f"== embedding rate, {len(paths)} images ({source})", flush=True)
        rates = {
            "single process, 1 thread": single_process_rate(args, paths, 1, 0),
            f"single process, {args.threads} threads": single_process_rate(
                args, paths, args.threads, None
            ),
        }
        per_worker = {}
        for k in args.workers:
            label = f"{k} worker{'s' * (k > 1)} x 1 thread"
            rates[label], per_worker[label] = cluster_rate(args, paths, warmup, k, scratch)
            print(f"   {label}: {rates[label]:.1f} images/s", flush=True)

        print("== memory per worker", flush=True)
        memory = {}
        for size in args.memory_sizes:
            if size > len(all_paths):
                print(f"   skipped {size}: only {len(all_paths)} images")
                continue
            memory[f"{size} images"] = memory_per_worker(args, all_paths[:size], scratch, size)
        if args.synthetic:
            synthetic = synthetic_paths(args.synthetic, args.synthetic_size, scratch / "syn")
            memory[f"{args.synthetic} synthetic images ({args.synthetic_size} px)"] = (
                memory_per_worker(args, synthetic, scratch, "synthetic")
            )
            shutil.rmtree(scratch / "syn", ignore_errors=True)

        print("== grid search", flush=True)
        n = min(args.grid_images, len(all_paths))
        X, y = data.iloc[:n], target.iloc[:n]
        grids = [grid_search_times(args, X, y, groups[:n], k, scratch) for k in (1, 2)]
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)

    result = _summarise(args, source, rates, per_worker, memory, grids)
    result["versions"] = show_versions()
    result["torch_threads_driver"] = torch.get_num_threads()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "scale_out_smoke" if args.smoke else "scale_out_quick" if args.quick else "scale_out"
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    _plot(rates, out / f"{name}.png")
    print(f"\nsaved {out / name}.json and .png\n")
    print(result["table"])
    return result


def _summarise(args, source, rates, per_worker, memory, grids):
    one = rates.get("1 worker x 1 thread")
    two = rates.get("2 workers x 1 thread")
    threaded = rates[f"single process, {args.threads} threads"]
    checks = {}
    if one and two:
        checks["2 workers / 1 worker (target >= 1.7)"] = two / one
        checks[f"2 workers / single process with {args.threads} threads (target >= 1.0)"] = (
            two / threaded
        )
    peaks = [max(m["peak_rss_mb_per_worker"]) for m in memory.values()]
    if len(peaks) >= 2:
        checks["peak MB per worker, largest minus smallest size (target ~0)"] = peaks[-1] - peaks[0]
    lines = [
        f"Embedding rate ({args.backbone}, {args.image_size} px, {args.pooling} pooling, CPU, "
        f"{os.cpu_count()} cores; "
        f"{source})",
        "",
        "| encoder | images/s | x 1 worker | images/s per worker, in its chunks |",
        "|---|---|---|---|",
    ]
    for label, rate in rates.items():
        ratio = f"{rate / one:.2f}" if one else ""
        inside = f"{per_worker[label]:,.1f}" if label in per_worker else ""
        lines.append(f"| {label} | {rate:,.1f} | {ratio} | {inside} |")
    lines += [
        "",
        "| embed_images, 2 workers | peak MB per worker | after warm-up | images/s | "
        "cache bytes/image |",
        "|---|---|---|---|---|",
    ]
    for label, m in memory.items():
        peak = " / ".join(f"{v:,.0f}" for v in m["peak_rss_mb_per_worker"])
        warm = " / ".join(f"{v:,.0f}" for v in m["peak_rss_mb_after_warmup"])
        lines.append(
            f"| {label} | {peak} | {warm} | {m['images_per_second_2_workers']:,.1f} | "
            f"{m['cache_bytes_per_image']:,.0f} |"
        )
    n_fits = args.folds * 6 + 1
    lines += [
        "",
        f"| grid search, {args.folds} folds x 6 candidates + refit ({n_fits} fits), "
        f"{args.grid_images} images | from an empty cache (s) | embed_images (s) | "
        "search after it (s) | total (s) |",
        "|---|---|---|---|---|",
    ]
    for g in grids:
        total = g["embed_images_s"] + g["search_after_embed_s"]
        lines.append(
            f"| {g['n_workers']} worker{'s' * (g['n_workers'] > 1)} | {g['cold_cache_s']:.1f} | "
            f"{g['embed_images_s']:.1f} | {g['search_after_embed_s']:.1f} | {total:.1f} |"
        )
    reference = grids[0]["mean_test_scores"]
    same = all(
        np.array_equal(g[key], reference)
        for g in grids
        for key in ("mean_test_scores", "mean_test_scores_after_embed")
    )
    lines += ["", f"grid scores identical across worker counts and cache routes: {same}", ""]
    lines += [f"- {name}: {value:.2f}" for name, value in checks.items()]
    return {
        "benchmark": "scale_out",
        "data": source,
        "args": vars(args),
        "images_per_second": rates,
        "images_per_second_per_worker_in_chunks": per_worker,
        "memory": memory,
        "grid_search": grids,
        "grid_scores_identical": same,
        "checks": checks,
        "table": "\n".join(lines),
    }


def _plot(rates, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(rates)))
    labels = list(rates)[::-1]
    ax.barh(labels, [rates[k] for k in labels], color="#4c72b0")
    for i, k in enumerate(labels):
        ax.text(rates[k], i, f" {rates[k]:.1f}", va="center")
    ax.set_xlabel("images/s")
    ax.set_title("Embedding rate: one process vs a LocalCluster")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
