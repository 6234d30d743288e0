"""fp32, bf16 and onnxruntime side by side on this CPU: what ``precision=`` and
``skinfuse.set_config(engine=)`` buy for each stage of the CPU recipes.

    python benchmarks/cpu_speed.py [--data PATH] [--images 256] [--repeats 3] [--threads N]
    python benchmarks/cpu_speed.py --recipe-agreement frozen-lite0

On ``--images`` HAM10000 images (a seeded random draw), with the ImageNet weights:

- frozen encoding: ``FrozenCNNEncoder().transform`` (the default encoder: Lite0 at 224 px and
  Lite2 at 260 px, multi-scale pooling; decoding included);
- activation caching: the frozen trunk of the partial recipe (all but the last 2 stages),
  one view, as ``FusionNetClassifier(trainable_blocks=2)`` fills its cache (decoding included;
  onnxruntime's one-off export is timed apart);
- partial training epoch: forward, backward and an Adam step of the last 2 stages and the head
  on those cached activations, batches of 128 (bf16: autocast in the step);
- prediction: ``predict_proba`` of a partial network (fitted one epoch here), cache off.

Each row's settings are alternated repeat by repeat (fp32, bf16, onnxruntime, fp32, ...), so
load from other processes hits them alike; the median rate is reported with agreement to
fp32: cosine (embeddings), max abs difference (activations, probabilities) and the share of
identical predicted classes. Prints a markdown table with the CPU's name and whether it has
native bf16 units (what ``precision="auto"`` reads), and saves JSON with versions.
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

import skinfuse
from skinfuse._nn.backbones import backbone_stages
from skinfuse._nn.device import cpu_has_bf16
from skinfuse._nn.modules import ClassifierNetwork
from skinfuse._nn.partial import split_network, trunk_key, view_activations
from skinfuse.datasets import load_ham10000
from skinfuse.encoders import FrozenCNNEncoder, clear_cache
from skinfuse.fusion import FusionNetClassifier

SETTINGS = {"fp32": ("fp32", "torch"), "bf16": ("bf16", "torch"),
            "onnxruntime": ("fp32", "onnxruntime")}  # fmt: skip


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"  # pragma: no cover


def alternate(runs, repeats, n):
    """``runs``: label -> fn() returning an output. Median images/s and the last output each."""
    times, outputs = {k: [] for k in runs}, {}
    for label, fn in runs.items():  # warm-up (and onnxruntime's export)
        start = time.perf_counter()
        fn()
        times[label + " first"] = time.perf_counter() - start
    for _ in range(repeats):
        for label, fn in runs.items():
            start = time.perf_counter()
            outputs[label] = fn()
            times[label].append(time.perf_counter() - start)
    rates = {k: n / statistics.median(times[k]) for k in runs}
    return rates, outputs, times


def frozen_row(items, repeats):
    def run(label):
        precision, engine = SETTINGS[label]
        encoder = FrozenCNNEncoder(cache=False, precision=precision, num_workers=0).fit(items)

        def transform():
            with skinfuse.config_context(engine=engine):
                return encoder.transform(items)

        return transform

    rates, out, times = alternate({k: run(k) for k in SETTINGS}, repeats, len(items))
    agree = {}
    for label in ("bf16", "onnxruntime"):
        a, b = out["fp32"], out[label]
        cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        agree[label] = f"cosine >= {cos.min():.5f}"
    agree["onnxruntime"] += f"; export + first pass {times['onnxruntime first']:.1f} s"
    return rates, agree


def caching_row(items, repeats, trunk, key):
    def fill(its, encode, _view, *, out, keep):  # no cache: every image computed
        out[:] = encode(its)

    def run(label):
        precision, engine = SETTINGS[label]

        def go():  # float32, as computed (the cache stores float16)
            with view_activations(
                items, trunk, ["identity"], cached=fill, image_size=224, batch_size=128,
                device="cpu", num_workers=0, precision=precision, engine=engine, key=key,
                dtype=np.float32,
            ) as acts:  # fmt: skip
                return np.array(acts)

        return go

    rates, out, times = alternate({k: run(k) for k in SETTINGS}, repeats, len(items))
    agree = {k: f"max abs diff {np.abs(out[k] - out['fp32']).max():.1e} (activations up to "
                f"{np.abs(out['fp32']).max():.0f})" for k in ("bf16", "onnxruntime")}  # fmt: skip
    agree["onnxruntime"] += f"; export + first pass {times['onnxruntime first']:.1f} s"
    return rates, agree, out["fp32"]


def training_row(acts, net, trunk_blocks, repeats):
    _, top, shape = split_network(net, trunk_blocks, 224, check=False)
    top.features_only = False
    x_all = torch.from_numpy(acts[0]).view(-1, *shape)
    y_all = torch.randint(0, 7, (len(x_all),), generator=torch.Generator().manual_seed(0))
    params = [p for p in top.parameters() if p.requires_grad]

    def run(precision):
        def epoch():
            optimizer = torch.optim.Adam(params, lr=1e-4)
            top.train()
            for start in range(0, len(x_all), 128):
                x, y = x_all[start : start + 128], y_all[start : start + 128]
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    loss = torch.nn.functional.cross_entropy(top(x).float(), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            return float(loss)

        return epoch

    state = {k: v.clone() for k, v in net.state_dict().items()}
    rates, _, _ = alternate({k: run(k) for k in ("fp32", "bf16")}, repeats, len(x_all))
    net.load_state_dict(state)
    return rates, {"bf16": "(loss only: a micro-benchmark of the step)"}


def prediction_row(X, y, repeats):
    net = FusionNetClassifier(
        trainable_blocks=2, cached_views=1, max_epochs=1, batch_size=128, cache=False,
        validation_fraction=0.0, num_workers=0, random_state=0,
    ).fit(X, y)  # fmt: skip

    def run(label):
        precision, engine = SETTINGS[label]

        def predict():
            with skinfuse.config_context(engine=engine):
                return net.set_params(precision=precision).predict_proba(X)

        return predict

    rates, out, _ = alternate({k: run(k) for k in SETTINGS}, repeats, len(X))
    ref = out["fp32"]
    agree = {k: f"{(out[k].argmax(1) == ref.argmax(1)).mean():.1%} same class, max abs diff "
                f"{np.abs(out[k] - ref).max():.1e}" for k in ("bf16", "onnxruntime")}  # fmt: skip
    return rates, agree


def recipe_agreement(ham, recipe, folds=5):
    """A recipe's lesion-grouped out-of-fold predictions with PyTorch and with onnxruntime
    computing its embeddings (``engine="torch"`` / ``"onnxruntime"``), each fitted anew:
    scores of each and the share of images given the same class; and the models fitted with
    PyTorch's embeddings predicting their held-out fold from onnxruntime's (the engine
    changed for prediction only)."""
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedGroupKFold

    from skinfuse.recipes import make_recipe

    X, y = ham.data, np.asarray(ham.target)
    cv = StratifiedGroupKFold(folds, shuffle=True, random_state=0)
    model = make_recipe(recipe, random_state=0, calibrate=False)  # argmax as calibrated
    classes = np.unique(y)
    proba = {k: np.zeros((len(y), len(classes))) for k in ("torch", "onnxruntime", "swapped")}
    seconds = {"torch": 0.0, "onnxruntime": 0.0}
    for train, test in cv.split(X, y, groups=ham.groups):
        Xtr, Xte = X.iloc[train], X.iloc[test]
        fitted = {}
        for engine in ("torch", "onnxruntime"):
            start = time.perf_counter()
            with skinfuse.config_context(engine=engine):
                fitted[engine] = clone(model).fit(Xtr, y[train])
                proba[engine][test] = fitted[engine].predict_proba(Xte)
            seconds[engine] += time.perf_counter() - start
        with skinfuse.config_context(engine="onnxruntime"):  # after its timing: cached now
            proba["swapped"][test] = fitted["torch"].predict_proba(Xte)
    out = {}
    mel = list(classes).index("mel")
    for key, p in proba.items():
        out[key] = {
            "balanced_accuracy": balanced_accuracy_score(y, classes[p.argmax(1)]),
            "melanoma_auc": roc_auc_score(y == "mel", p[:, mel]),
            "pred": classes[p.argmax(1)],
        }
        if key in seconds:
            out[key]["seconds"] = seconds[key]
    same = float((out["torch"]["pred"] == out["onnxruntime"]["pred"]).mean())
    same_swapped = float((out["torch"]["pred"] == out["swapped"]["pred"]).mean())
    for key, r in out.items():
        r.pop("pred")
        took = f", {r['seconds']:.0f} s" if "seconds" in r else ""
        print(f"{recipe}, {key}: {folds}-fold lesion-grouped balanced acc. "
              f"{r['balanced_accuracy']:.4f}, mel. AUC {r['melanoma_auc']:.4f}{took}")  # fmt: skip
    print(f"same predicted class, each engine fitting its own models: {same:.2%} of {len(y)} "
          f"images; PyTorch's models, held-out embeddings by onnxruntime (swapped): "
          f"{same_swapped:.2%}")  # fmt: skip
    return {"recipe": recipe, "same_class": same, "same_class_swapped": same_swapped, **out}


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    )
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--recipe-agreement", metavar="RECIPE", default=None,
        help="instead: the recipe's 5-fold lesion-grouped out-of-fold predictions on the "
        "whole share with PyTorch and with onnxruntime computing the embeddings, compared "
        "(each engine fitting its own models, and PyTorch's models predicting from "
        "onnxruntime's embeddings)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    ham = load_ham10000(args.data)
    if args.recipe_agreement:
        payload = recipe_agreement(ham, args.recipe_agreement)
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"cpu_speed_agreement_{args.recipe_agreement}.json"
        (args.out / name).write_text(json.dumps(payload, indent=2, default=float))
        return payload
    rows_ = np.sort(np.random.default_rng(0).permutation(len(ham.target))[: args.images])
    X, y = ham.data.iloc[rows_].reset_index(drop=True), np.asarray(ham.target)[rows_]
    items = X[["image_path"]]
    paths = list(X["image_path"])
    clear_cache()
    rows = {}
    rows["frozen encoding"] = frozen_row(items, args.repeats)
    net = ClassifierNetwork("efficientnet_lite0", n_classes=7, image_size=224)
    net.freeze(len(backbone_stages(net.embedder.features)) - 2)
    trunk, _, _ = split_network(net, 2, 224)
    rates, agree, acts = caching_row(paths, args.repeats, trunk, trunk_key(trunk, "lite0"))
    rows["activation caching"] = (rates, agree)
    rows["partial training epoch"] = training_row(acts[None], net, 2, args.repeats)
    rows["prediction (partial network)"] = prediction_row(X, y, args.repeats)
    bf16 = "yes" if cpu_has_bf16() else "no"
    payload = {
        "settings": {**vars(args), "out": str(args.out), "threads": threads},
        "cpu": cpu_name(), "native_bf16": bf16, "versions": skinfuse.show_versions(),
        "results": {k: {"images_per_s": r, "agreement": a} for k, (r, a) in rows.items()},
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_speed.json").write_text(json.dumps(payload, indent=2))
    print(f"\n{cpu_name()}, {threads} threads, native bf16 units: {bf16}; {args.images} "
          f"images, median of {args.repeats} alternated repeats (images/s)\n")  # fmt: skip
    print("| stage | fp32 | bf16 | onnxruntime (fp32) | bf16 agreement | onnxruntime agreement |")
    print("|---|---|---|---|---|---|")
    for name, (r, a) in rows.items():
        cells = [f"{r[k]:.1f} ({r[k] / r['fp32']:.2f}x)" if k in r else "-" for k in SETTINGS]
        cells[0] = f"{r['fp32']:.1f}"
        print(f"| {name} | {' | '.join(cells)} | {a.get('bf16', '-')} | "
              f"{a.get('onnxruntime', '-')} |")  # fmt: skip
    return payload


if __name__ == "__main__":
    main()
