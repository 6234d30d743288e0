"""The generalisation levers of docs/external.md, measured (issue 24).

The experiments, all scored on held-out HAM10000 lesions and on an external folder
(Derm7pt by default), never fitted on the external images' labels:

- ``proxy VARIANT ...``: frozen EfficientNet-Lite0 features (224 px, average pooling, image
  only) and a logistic regression, trained on a lesion-grouped split of a subset of the share
  (every non-nevus image and 2,500 nevi), for preprocessing variants of the pixels (``squash``:
  the 4:3 frame squashed to a square, as the recipes do; ``square``: its central square;
  ``sog``: shades-of-gray colour constancy; ``square+sog``; ``square0.8``; ``lesion``: a
  square around the lesion found by thresholding, the same rule for both datasets);
- ``batchnorm MODEL``: test-time batch-norm adaptation of a fitted partial fusion network
  (``benchmarks/external.py`` saves one): the statistics of its trained top stages
  (``--all``: of every batch-norm layer) recomputed on the external images, then scored;
- ``features MODEL [--std]``: test-time alignment of the pooled image features of a fitted
  partial fusion network, each test set's moved to its training images' mean (and std);
- ``resolution MODEL``: test-time resolution matching: each external image larger than the
  training images (the share's 200 x 150 = 30,000 pixels) downsampled (Lanczos, aspect kept)
  to that many pixels before the model sees it, as if taken with the training data's
  camera; written as PNG to ``--work-dir`` (no JPEG loss added), then scored.

    python benchmarks/external_levers.py proxy squash square sog --cache-dir CACHE
    python benchmarks/external_levers.py batchnorm runs/external/partial.skinfuse [--all]
    python benchmarks/external_levers.py resolution runs/external/partial.skinfuse
    python benchmarks/external_levers.py scale 1.5 2 --cache-dir CACHE
    python benchmarks/external_levers.py zoom-out runs/external/partial.skinfuse 1 1.5 2 2.5
    python benchmarks/external_levers.py features runs/external/partial.skinfuse [--std]

The batch-norm experiment reaches into ``skinfuse._nn`` (it changes a fitted network's
internals), as the throughput benchmarks do.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import skinfuse
from skinfuse.datasets import load_ham10000, load_lesion_folder
from skinfuse.encoders import FrozenCNNEncoder

MELANOMA = "mel"


def shades_of_gray(img, p=6):
    """Shades-of-gray colour constancy (Finlayson and Trezzi 2004): each channel divided by
    its Minkowski p-norm mean, scaled so that a grey illuminant is left unchanged."""
    x = img.astype(np.float64)
    e = np.power(np.mean(np.power(x, p), axis=(0, 1)), 1 / p)
    e = e / np.sqrt((e**2).sum())
    return np.clip(x / (e * np.sqrt(3)), 0, 255).astype(np.uint8)


def square(img, frac=1.0):
    """The central square of ``img``, of side ``frac`` times its short side."""
    h, w = img.shape[:2]
    s = round(min(h, w) * frac)
    top, left = (h - s) // 2, (w - s) // 2
    return img[top : top + s, left : left + s]


def _otsu(values):
    hist, edges = np.histogram(values, bins=256)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    return centers[np.argmax(w0 * w1 * (m0 - m1) ** 2)]


def lesion_box(img, margin=0.2):
    """``(top, left, side)`` of a square around the lesion of ``img``, or None.

    The lesion: the darker-than-Otsu blob (luminance, blurred; the threshold taken from
    the central three quarters, so that a dermatoscope's dark corners do not set it) that is
    large and near the centre, components in a corner counted 20 times less; the square is
    its bounding box widened by ``margin`` on each side, at least half the image's short
    side, shifted to lie inside the image."""
    h, w = img.shape[:2]
    gray = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gray = ndimage.gaussian_filter(gray, sigma=min(h, w) / 100)
    # threshold from the central part, so that dark vignette corners do not set it
    cy, cx = h // 2, w // 2
    central = gray[h // 8 : h - h // 8, w // 8 : w - w // 8]
    mask = gray < _otsu(central)
    mask = ndimage.binary_opening(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    idx = np.arange(1, n + 1)
    area = ndimage.sum(mask, labels, idx)
    com = np.array(ndimage.center_of_mass(mask, labels, idx)).reshape(-1, 2)
    dist = np.hypot((com[:, 0] - cy) / h, (com[:, 1] - cx) / w)
    corner = np.zeros(n, bool)
    for y0, x0 in ((0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1)):
        if labels[y0, x0]:
            corner[labels[y0, x0] - 1] = True
    score = area * np.exp(-((dist / 0.25) ** 2)) * np.where(corner, 0.05, 1.0)
    k = int(np.argmax(score))
    if area[k] < 0.01 * h * w:
        return None
    ys, xs = np.nonzero(labels == k + 1)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    side = round(float(max(y1 - y0, x1 - x0)) * (1 + 2 * margin))
    side = min(max(side, min(h, w) // 2), min(h, w))
    top = int(np.clip((y0 + y1) / 2 - side / 2, 0, h - side))
    left = int(np.clip((x0 + x1) / 2 - side / 2, 0, w - side))
    return top, left, side


def lesion_crop(img, margin=0.2):
    """The square of :func:`lesion_box` (the central square where none is found)."""
    box = lesion_box(img, margin)
    if box is None:
        h, w = img.shape[:2]
        s = min(h, w)
        box = ((h - s) // 2, (w - s) // 2, s)
    top, left, side = box
    return img[top : top + side, left : left + side]


VARIANTS = {
    "squash": lambda im: im,
    "square": square,
    "sog": shades_of_gray,
    "square+sog": lambda im: shades_of_gray(square(im)),
    "square0.8": lambda im: square(im, 0.8),
    "lesion": lesion_crop,
}


def _scores(proba, classes, y, *, among_present=False):
    """Melanoma AUC (vs the rest) and balanced accuracy over the classes present; with
    ``among_present`` the prediction is the most probable class present in ``y`` (the
    proxy's), else the most probable of all (a class absent from ``y`` is an error)."""
    classes = list(classes)
    present = [c for c in classes if (y == c).any() or not among_present]
    cols = [classes.index(c) for c in present]
    pred = np.asarray(present)[proba[:, cols].argmax(axis=1)]
    auc = roc_auc_score(y == MELANOMA, proba[:, classes.index(MELANOMA)])
    return auc, balanced_accuracy_score(y, pred)


def _proxy_data(args):
    """The proxy's images: the HAM subset, its lesion-grouped split, the external set."""
    bunch = load_ham10000(args.data)
    y, g = bunch.target.to_numpy(dtype=object), np.asarray(bunch.groups)
    paths = bunch.data["image_path"].to_numpy()
    rng = np.random.default_rng(0)
    keep = np.flatnonzero(y != "nv")
    nevi = rng.choice(np.flatnonzero(y == "nv"), args.nevi, replace=False)
    keep = np.sort(np.concatenate([keep, nevi]))
    y, g, paths = y[keep], g[keep], paths[keep]
    train, test = next(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(paths, y, g))
    ham = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    ext = load_lesion_folder(args.external)
    ext_y = ext.target.to_numpy(dtype=object)
    ext_images = [np.asarray(Image.open(p).convert("RGB")) for p in ext.data["image_path"]]
    print(f"HAM subset {len(y)} (train {len(train)}, held-out {len(test)}); external "
          f"{len(ext_y)}", flush=True)  # fmt: skip
    return ham, y, train, test, ext_images, ext_y


def _proxy_embed(images, cache_dir, transform=lambda im: im):
    pixels = np.stack([
        np.asarray(Image.fromarray(transform(im)).resize((224, 224), Image.BILINEAR))
        for im in images
    ])  # fmt: skip
    encoder = FrozenCNNEncoder("efficientnet_lite0", image_size=224, pooling="avg",
                               cache_dir=cache_dir, device="cpu")  # fmt: skip
    return encoder.fit_transform(pixels)


def _proxy_fit(X, y):
    clf = make_pipeline(StandardScaler(), LogisticRegression(
        C=0.1, max_iter=2000, class_weight="balanced"))  # fmt: skip
    return clf.fit(X, y)


def proxy(args):
    ham, y, train, test, ext_images, ext_y = _proxy_data(args)
    for variant in args.variants:
        start = time.perf_counter()

        X_ham = _proxy_embed(ham, args.cache_dir, VARIANTS[variant])
        X_ext = _proxy_embed(ext_images, args.cache_dir, VARIANTS[variant])
        clf = _proxy_fit(X_ham[train], y[train])
        a = _scores(clf.predict_proba(X_ham[test]), clf.classes_, y[test], among_present=True)
        b = _scores(clf.predict_proba(X_ext), clf.classes_, ext_y, among_present=True)
        print(f"{variant:12s} HAM held-out mel AUC {a[0]:.3f} bal {a[1]:.3f} | external mel "
              f"AUC {b[0]:.3f} bal {b[1]:.3f}  ({time.perf_counter() - start:.0f} s)",
              flush=True)  # fmt: skip


def _network(model):
    """The fitted network inside ``model``: itself, or inside a calibrated model or its
    prediction sets (issue 26)."""
    while not hasattr(model, "module_") and hasattr(model, "estimator_"):
        model = model.estimator_
    return model


def _batchnorms(module):
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _recompute(bns, run):
    """Running statistics of ``bns`` recomputed from scratch (cumulative) over ``run()``."""
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    with torch.no_grad():
        run()
    for bn in bns:
        bn.eval()


def batchnorm(args):
    from torch.utils.data import DataLoader

    from skinfuse._nn.data import ImageDataset
    from skinfuse._nn.partial import split_network, trunk_key, view_activations
    from skinfuse._nn.views import views_for

    ext = load_lesion_folder(args.external)
    X, y = ext.data, ext.target.to_numpy(dtype=object)
    model = skinfuse.load(args.model)
    a = _scores(model.predict_proba(X), model.classes_, y)
    print(f"before: external mel AUC {a[0]:.3f} bal {a[1]:.3f}", flush=True)
    net = _network(model)
    module, size = net.module_, int(net.image_size)
    items = X["image_path"].tolist()
    start = time.perf_counter()
    if args.all:  # every layer, on the images (the frozen stages' activations change)
        bns = _batchnorms(module.embedder)
        loader = DataLoader(ImageDataset(items, size), batch_size=64)
        _recompute(bns, lambda: [module.embedder(x) for x in loader])
    else:  # the trained top stages, on the cached activations of the frozen ones
        trunk, top, shape = split_network(module, net.trainable_blocks, size, check=False)
        cached = net._activation_cache("cpu")(trunk_key(trunk, net.backbone))
        top.features_only = True
        bns = _batchnorms(top.stages)
        with view_activations(items, trunk, views_for(int(net.tta)), cached=cached,
                              image_size=size, batch_size=64, device="cpu", num_workers=0) as acts:  # fmt: skip

            def run():
                for view in acts:  # float16 as cached: float32 for the network
                    for i in range(0, len(view), 128):
                        top(torch.from_numpy(view[i : i + 128].astype("float32")).view(-1, *shape))

            _recompute(bns, run)
    b = _scores(model.predict_proba(X), model.classes_, y)
    print(f"after ({len(bns)} batch-norm layers on the external images, "
          f"{time.perf_counter() - start:.0f} s): external mel AUC {b[0]:.3f} bal {b[1]:.3f}")  # fmt: skip


def resolution(args):
    ext = load_lesion_folder(args.external)
    X, y = ext.data.copy(), ext.target.to_numpy(dtype=object)
    model = skinfuse.load(args.model)
    a = _scores(model.predict_proba(X), model.classes_, y)
    print(f"as given: external mel AUC {a[0]:.3f} bal {a[1]:.3f}", flush=True)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, path in enumerate(X["image_path"]):
        out = work / f"{i:05d}.png"
        with Image.open(path) as img:
            img = img.convert("RGB")
            scale = (args.pixels / (img.width * img.height)) ** 0.5
            if scale < 1:  # only ever downsampled
                img = img.resize((round(img.width * scale), round(img.height * scale)),
                                 Image.Resampling.LANCZOS)  # fmt: skip
            img.save(out)
        paths.append(str(out))
    X["image_path"] = paths
    b = _scores(model.predict_proba(X), model.classes_, y)
    print(f"at {args.pixels} pixels: external mel AUC {b[0]:.3f} bal {b[1]:.3f}")


def zoom(img, factor):
    """The central ``1 / factor`` of ``img`` in each direction (its aspect kept): the
    lesion ``factor`` times larger in the frame."""
    h, w = img.shape[:2]
    hh, ww = round(h / factor), round(w / factor)
    top, left = (h - hh) // 2, (w - ww) // 2
    return img[top : top + hh, left : left + ww]


def scale(args):
    """The proxy trained on the HAM images plus central zooms of them (scale augmentation:
    Derm7pt's lesions fill its frames, HAM10000's sit small in theirs), tested as given."""
    ham, y, train, test, ext_images, ext_y = _proxy_data(args)
    start = time.perf_counter()
    X = {1.0: _proxy_embed(ham, args.cache_dir)}
    for f in args.factors:
        X[f] = _proxy_embed(ham, args.cache_dir, lambda im, f=f: zoom(im, f))
    X_ext = _proxy_embed(ext_images, args.cache_dir)
    print(f"embedded in {time.perf_counter() - start:.0f} s", flush=True)
    runs = {"as given": [1.0]}
    runs.update({f"as given + zoom {f:g}": [1.0, f] for f in args.factors})
    runs.update({f"zoom {f:g} only": [f] for f in args.factors})
    if len(args.factors) > 1:
        runs["as given + every zoom"] = list(X)
    for name, factors in runs.items():
        clf = _proxy_fit(np.vstack([X[f][train] for f in factors]),
                         np.concatenate([y[train]] * len(factors)))  # fmt: skip
        a = _scores(clf.predict_proba(X[1.0][test]), clf.classes_, y[test], among_present=True)
        b = _scores(clf.predict_proba(X_ext), clf.classes_, ext_y, among_present=True)
        print(f"trained on {name:24s} HAM held-out mel AUC {a[0]:.3f} bal {a[1]:.3f} | "
              f"external mel AUC {b[0]:.3f} bal {b[1]:.3f}", flush=True)  # fmt: skip


def zoom_out(args):
    """Test-time zoom-out: each external image centred on a 4:3 canvas ``factor`` times its
    height, filled with the median colour of its border (skin), then brought to the
    training images' 200 x 150, so that its lesion sits as small in the frame as a HAM10000
    one; written as PNG to ``--work-dir``, then scored by a fitted model."""
    ext = load_lesion_folder(args.external)
    X, y = ext.data.copy(), ext.target.to_numpy(dtype=object)
    model = skinfuse.load(args.model)
    a = _scores(model.predict_proba(X), model.classes_, y)
    print(f"as given: external mel AUC {a[0]:.3f} bal {a[1]:.3f}", flush=True)
    for factor in args.factors:
        work = Path(args.work_dir) / f"x{factor:g}"
        work.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, path in enumerate(ext.data["image_path"]):
            out = work / f"{i:05d}.png"
            with Image.open(path) as img:
                img = img.convert("RGB")
            px = np.asarray(img)
            edges = (px[:8], px[-8:], px[:, :8], px[:, -8:])
            border = np.concatenate([e.reshape(-1, 3) for e in edges])
            h = round(img.height * factor)
            canvas = Image.new("RGB", (round(h * 4 / 3), h),
                               tuple(int(v) for v in np.median(border, axis=0)))  # fmt: skip
            canvas.paste(img, ((canvas.width - img.width) // 2, (h - img.height) // 2))
            canvas.resize((200, 150), Image.Resampling.LANCZOS).save(out)
            paths.append(str(out))
        X["image_path"] = paths
        b = _scores(model.predict_proba(X), model.classes_, y)
        print(f"zoomed out {factor:g}x: external mel AUC {b[0]:.3f} bal {b[1]:.3f}", flush=True)


def feature_shift(args):
    """Test-time feature alignment: the pooled image features a fitted partial network gives
    each test set (all its views) moved, dimension by dimension, to the mean (``--std``:
    and standard deviation) of those of 3,000 of its training images, then classified as
    usual. The same rule for every test set: the held-out HAM lesions are aligned on
    themselves, as the external set is."""
    from sklearn.model_selection import StratifiedGroupKFold

    model = skinfuse.load(args.model)
    net = _network(model)
    ham = load_ham10000(args.data)
    X, y, g = ham.data, ham.target.to_numpy(dtype=object), np.asarray(ham.groups)
    # benchmarks/external.py's split: the model was fitted on `train`
    train, held = next(StratifiedGroupKFold(args.held_out, shuffle=True, random_state=0)
                       .split(X, y, g))  # fmt: skip
    ext = load_lesion_folder(args.external)
    state = {"mode": "plain", "seen": []}
    classify = type(net.module_).classify

    def shifted(module, features, metadata=None):
        if state["mode"] == "record":
            state["seen"].append(features.detach().float())
        elif state["mode"] == "apply":
            mean, std, to_mean, to_std = state["shift"]
            features = (features - mean) / std * to_std + to_mean
        return classify(module, features, metadata)

    def moments(Xs):
        state.update(mode="record", seen=[])
        model.predict_proba(Xs)
        F = torch.cat(state["seen"])
        state["mode"] = "plain"
        return F.mean(0), F.std(0) + 1e-5

    type(net.module_).classify = shifted
    try:
        rng = np.random.default_rng(0)
        sub = rng.choice(train, min(3000, len(train)), replace=False)
        to_mean, to_std = moments(X.iloc[sub].reset_index(drop=True))
        tests = {"held-out HAM": (X.iloc[held].reset_index(drop=True), y[held]),
                 "external": (ext.data, ext.target.to_numpy(dtype=object))}  # fmt: skip
        for name, (Xt, yt) in tests.items():
            a = _scores(model.predict_proba(Xt), model.classes_, yt)
            mean, std = moments(Xt)
            state.update(mode="apply", shift=(mean, std if args.std else to_std, to_mean, to_std))
            b = _scores(model.predict_proba(Xt), model.classes_, yt)
            state["mode"] = "plain"
            print(f"{name:13s} mel AUC {a[0]:.3f} -> {b[0]:.3f}, bal {a[1]:.3f} -> {b[1]:.3f}",
                  flush=True)  # fmt: skip
    finally:
        type(net.module_).classify = classify


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000")
    )
    parser.add_argument("--external", default=None, help="default: derm7pt beside --data")
    sub = parser.add_subparsers(dest="experiment", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    p.add_argument("--nevi", type=int, default=2500)
    p.add_argument("--cache-dir", default=None)
    b = sub.add_parser("batchnorm")
    b.add_argument("model")
    b.add_argument("--all", action="store_true")
    r = sub.add_parser("resolution")
    r.add_argument("model")
    r.add_argument("--pixels", type=int, default=200 * 150, help="the training images' size")
    r.add_argument("--work-dir", default="resolution-images", help="the downsampled copies")
    z = sub.add_parser("scale")
    z.add_argument("factors", nargs="*", type=float, default=[1.5, 2.0])
    z.add_argument("--nevi", type=int, default=2500)
    z.add_argument("--cache-dir", default=None)
    o = sub.add_parser("zoom-out")
    o.add_argument("model")
    o.add_argument("factors", nargs="*", type=float, default=[1.0, 1.5, 2.0, 2.5])
    o.add_argument("--work-dir", default="zoom-out-images", help="the zoomed-out copies")
    f = sub.add_parser("features")
    f.add_argument("model")
    f.add_argument("--std", action="store_true", help="the standard deviation matched too")
    f.add_argument("--held-out", type=int, default=6, help="as benchmarks/external.py")
    args = parser.parse_args(argv)
    if args.external is None:
        args.external = str(Path(args.data).parent / "derm7pt")
    experiments = {"proxy": proxy, "batchnorm": batchnorm, "resolution": resolution,
                   "scale": scale, "zoom-out": zoom_out, "features": feature_shift}  # fmt: skip
    experiments[args.experiment](args)


if __name__ == "__main__":
    main()
