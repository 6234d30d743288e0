"""Reproduce the reference table on HAM10000 with lesion-grouped cross-validation.

    python benchmarks/reproduce.py [--data PATH] [--approaches ...] [--out DIR] [--smoke]

Protocol: StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0) grouped by
``lesion_id``. Every fitted step (encoders, autoencoder, SMOTE, scalers, feature selection,
the networks) is fitted on the training folds only. Rows: each approach with and without
metadata, plus metadata-only and majority-class baselines. Columns: accuracy, balanced
accuracy, macro F1, weighted F1, macro one-vs-rest ROC AUC (mean ± std over folds), melanoma
recall, fit and predict time, device. Writes JSON (with versions and hardware), a markdown
table (printed last) and the confusion matrix of the best row.

The autoencoder is trained once per fold and shared by its two rows (with and without
metadata) through ``sklearn.frozen.FrozenEstimator``: both rows still see only the training
folds. Fine-tuned rows can use fewer folds (``--finetune-folds``) on a CPU; the table says so.

Clinical table (printed after the main one, saved as ``clinical.md``): for every row, from
its out-of-fold probabilities pooled over the folds, melanoma sensitivity at 80 % and 90 %
specificity, specificity at 82 % sensitivity, partial AUC above 80 % sensitivity (ISIC
2024) and top-label ECE, each with a 95 % bootstrap interval that resamples lesions
(``--bootstrap`` resamples). ``--calibration temperature`` (or ``sigmoid``) also fits each
learned row inside ``CalibratedClassifierCV(cv=StratifiedGroupKFold(3), ensemble=False)``
with the lesion groups routed, on the training folds only, and adds a ``[temperature]`` row:
the same network fitted on all training images (temperature scaling leaves its predictions
unchanged) with calibrated probabilities. Figures: ``reliability.png`` (best row, before and
after calibration) and ``melanoma_tradeoff.png``.

Long runs: the JSON, the table and the out-of-fold probabilities (``oof_proba.npz``) are
written after every fold; ``--time-budget MINUTES`` starts no fold that would end past it;
``--folds 4 5`` runs only those folds, and ``--merge DIR DIR`` joins runs on disjoint folds
into one table (frozen embeddings are reused through ``--cache-dir``).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import sklearn
from _reproduce_report import merge, save
from sklearn.calibration import CalibratedClassifierCV
from sklearn.dummy import DummyClassifier
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedGroupKFold

from skinfuse import show_versions
from skinfuse.datasets import load_ham10000, make_synthetic_lesions
from skinfuse.encoders import ConvAutoencoderEncoder, FrozenCNNEncoder
from skinfuse.fusion import FusionNetClassifier
from skinfuse.pipeline import make_fusion_pipeline
from skinfuse.recipes import make_recipe, seed_ensemble

APPROACHES = ("majority", "metadata", "frozen", "cae", "finetuned")


def scores(y_true, y_pred, proba, classes):
    out = {
        "accuracy": accuracy_score(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy_score(y_true, y_pred),
        "f1_macro": f1_score(y_true, y_pred, average="macro"),
        "f1_weighted": f1_score(y_true, y_pred, average="weighted"),
        "roc_auc_ovr": float("nan"),
        "mel_recall": float("nan"),
    }
    present = np.isin(classes, np.unique(y_true))
    if present.sum() > 2 and present.all():
        out["roc_auc_ovr"] = roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
    if "mel" in classes:
        out["mel_recall"] = recall_score(y_true, y_pred, labels=["mel"], average="macro")
    return {k: float(v) for k, v in out.items()}


def frozen_encoder(args):
    """One FrozenCNNEncoder over the backbones (each at its native size unless --image-size):
    with the default arguments, ``FrozenCNNEncoder()`` itself."""
    backbones = args.backbones[0] if len(args.backbones) == 1 else tuple(args.backbones)
    return FrozenCNNEncoder(
        backbones, image_size=args.image_size, pooling=args.pooling, cache_dir=args.cache_dir,
        device=args.device, tta=args.tta, verbose=int(args.verbose),
    )  # fmt: skip


def head(args):
    """The classifier every learned row shares (fair ablations); see --classifier."""
    if args.classifier == "mlp":  # MLP(512), preset "best": the `frozen` recipe's head
        return "mlp"
    if args.classifier == "logreg":
        return LogisticRegression(C=0.05, max_iter=3000)
    return args.classifier  # "rf": make_fusion_pipeline's random forest


def finetune_class_weight(args):
    """Loss weights of the fine-tuned rows, computed by the network from its training labels.

    ``balanced``: n / (k n_c), as scikit-learn; ``sqrt``: its square root, a milder
    re-weighting that costs the majority class less accuracy; ``none``: all 1.
    """
    return None if args.finetune_class_weight == "none" else args.finetune_class_weight


def recipe_params(args):
    """The parameters of a single-network recipe (``--finetune-recipe``), with this run's
    device, workers, cache and verbosity; ``--finetune-seeds`` sets the seeds."""
    model = make_recipe(args.finetune_recipe, cache_dir=args.cache_dir, calibrate=False)
    if not isinstance(model, FusionNetClassifier):
        raise ValueError(
            f"--finetune-recipe {args.finetune_recipe!r} is not a single FusionNetClassifier; "
            "pass a single-network recipe and its seeds with --finetune-seeds (several: a "
            "soft-voting ensemble)"
        )
    params = model.get_params(deep=False)
    params.pop("random_state")
    return {**params, "device": args.device, "num_workers": args.num_workers,
            "verbose": int(args.verbose)}  # fmt: skip


def networks(params, seeds):
    """One FusionNetClassifier, or a soft-voting ensemble of one per seed."""
    return seed_ensemble(lambda seed: FusionNetClassifier(**params, random_state=seed), seeds)


def rows_for(approach, args, X_train, y_train):
    """{row name: unfitted model} for one approach (the CAE is fitted here, on X_train)."""
    common = dict(
        classifier=head(args), sampler=None if args.sampler == "none" else args.sampler,
        prior_correction=args.prior_correction or None, select_k=args.select_k, random_state=0,
    )  # fmt: skip
    if approach == "majority":
        return {"majority class": DummyClassifier(strategy="most_frequent")}
    if approach == "metadata":
        return {"metadata only": make_fusion_pipeline(None, **{**common, "select_k": None})}
    if approach == "frozen":
        rows = {"frozen CNN + metadata": make_fusion_pipeline(frozen_encoder(args), **common)}
        if not args.no_image_only:
            rows["frozen CNN, image only"] = make_fusion_pipeline(
                frozen_encoder(args), metadata=None, **common
            )
        return rows
    if approach == "cae":
        cae = ConvAutoencoderEncoder(
            latent_dim=args.cae_latent, image_size=args.cae_image_size, features=args.cae_features,
            max_epochs=args.cae_epochs, device=args.device, random_state=0,
            verbose=int(args.verbose),
        ).fit(X_train[["image_path"]])  # fmt: skip
        shared = FrozenEstimator(cae)
        cae_common = {**common, "select_k": None}
        return {
            "CAE + metadata": make_fusion_pipeline(shared, **cae_common),
            "CAE, image only": make_fusion_pipeline(shared, metadata=None, **cae_common),
        }
    if approach == "finetuned":
        net = dict(
            backbone=args.finetune_backbone, image_size=args.finetune_image_size,
            max_epochs=args.finetune_epochs, batch_size=args.finetune_batch_size,
            lr=args.finetune_lr, class_weight=finetune_class_weight(args),
            label_smoothing=args.label_smoothing, trainable_blocks=args.trainable_blocks,
            cached_views=args.cached_views, tta=args.tta, cache_dir=args.cache_dir,
            num_workers=args.num_workers, device=args.device, verbose=int(args.verbose),
            metadata_dropout=args.metadata_dropout, modality_dropout=args.modality_dropout,
        )  # fmt: skip
        kind = "fine-tuned CNN" if args.trainable_blocks is None else (
            f"partially fine-tuned CNN (last {args.trainable_blocks} stages)"
        )  # fmt: skip
        if args.finetune_recipe:
            net, kind = recipe_params(args), f"fine-tuned CNN (recipe {args.finetune_recipe})"
        if args.finetune_weights:
            net["weights"] = args.finetune_weights
        if args.finetune_recipe and getattr(args, "smoke", False):  # the smoke run's size
            net.update(image_size=args.finetune_image_size, max_epochs=args.finetune_epochs)
        drops = [f"{name} dropout {p:g}" for name, p in
                 (("metadata", args.metadata_dropout), ("modality", args.modality_dropout)) if p]  # fmt: skip
        if drops and not args.finetune_recipe:
            kind += f" [{', '.join(drops)}]"
        seeds = args.finetune_seeds
        if seeds != [0]:
            kind += f" [seed {'+'.join(map(str, seeds))}]"
        rows = {}
        if not args.image_only:
            rows[f"{kind} + metadata (FusionNet)"] = networks(net, seeds)
        if not args.no_image_only:
            image_only = {**net, "metadata": None, "metadata_dropout": 0.0, "modality_dropout": 0.0}
            rows[f"{kind}, image only"] = networks(image_only, seeds)
        return rows
    raise ValueError(f"unknown approach {approach!r}; choose from {APPROACHES}")


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000"))
    p.add_argument("--test-data", default=None, help="train on all of --data, test on this folder")
    p.add_argument("--approaches", nargs="+", default=list(APPROACHES), choices=APPROACHES)
    p.add_argument("--n-splits", type=int, default=5)
    p.add_argument("--finetune-folds", type=int, default=None, help="folds run for fine-tuned rows")
    p.add_argument(
        "--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"],
        help="frozen backbones; several are concatenated (FeatureUnion)",
    )  # fmt: skip
    p.add_argument("--image-size", type=int, default=None, help="default: the backbone's own")
    p.add_argument("--pooling", default="multi", choices=["avg", "avgmax", "multi"])
    p.add_argument(
        "--classifier", default="mlp", choices=["mlp", "rf", "logreg"],
        help="mlp: MLP(512, alpha=1e-2, early stopping); logreg: C=0.05",
    )  # fmt: skip
    p.add_argument("--sampler", default="none", choices=["none", "smote"])
    p.add_argument(
        "--prior-correction", type=float, default=0.0,
        help="PriorCorrectedClassifier power (0: off); use with --sampler none",
    )  # fmt: skip
    p.add_argument("--select-k", type=int, default=None, help="ANOVA features kept (CNN rows)")
    p.add_argument("--cae-latent", type=int, default=128)
    p.add_argument("--cae-image-size", type=int, default=64)
    p.add_argument(
        "--cae-features", default="multi", choices=["latent", "multi"],
        help="CAE embedding: the bottleneck, or it + pooled encoder blocks",
    )  # fmt: skip
    p.add_argument("--cae-epochs", type=int, default=20)
    p.add_argument(
        "--finetune-recipe", default=None,
        help="fine-tuned rows: a single-network recipe of `skinfuse train` (e.g. gpu); "
        "replaces the --finetune-* and network settings",
    )  # fmt: skip
    p.add_argument(
        "--finetune-weights", default=None,
        help="fine-tuned rows: a checkpoint path instead of the backbone's default weights "
        "(e.g. where the weights package is not installed)",
    )  # fmt: skip
    p.add_argument("--finetune-backbone", default="efficientnet_lite0")
    p.add_argument("--finetune-image-size", type=int, default=224)
    p.add_argument("--finetune-epochs", type=int, default=10)
    p.add_argument("--finetune-batch-size", type=int, default=32)
    p.add_argument("--finetune-lr", type=float, default=3e-4)
    p.add_argument(
        "--finetune-class-weight", default="balanced", choices=["balanced", "sqrt", "none"],
        help="loss weights of the fine-tuned rows (sqrt: square root of balanced)",
    )  # fmt: skip
    p.add_argument(
        "--label-smoothing", type=float, default=0.0, help="fine-tuned rows' label smoothing"
    )
    p.add_argument("--metadata-dropout", type=float, default=0.0,
                   help="fine-tuned rows: each metadata column missing in training with p")  # fmt: skip
    p.add_argument("--modality-dropout", type=float, default=0.0,
                   help="fine-tuned rows: all of a row's metadata missing in training with p")  # fmt: skip
    p.add_argument(
        "--trainable-blocks", type=int, default=None,
        help="fine-tuned rows: train only the last K stages, on cached activations",
    )  # fmt: skip
    p.add_argument(
        "--cached-views", type=int, default=4, help="views cached for --trainable-blocks"
    )
    p.add_argument("--tta", type=int, default=1, help="test-time views (1, 2, 4 or 8)")
    p.add_argument(
        "--finetune-seeds", type=int, nargs="+", default=[0],
        help="random_state of the fine-tuned networks; several: one soft-voting "
        "VotingClassifier of one network per seed",
    )  # fmt: skip
    p.add_argument(
        "--grouped-validation", action="store_true",
        help="fine-tuned rows: the early-stopping split holds out whole lesions (fit's "
        "groups, routed by scikit-learn's metadata routing); off: an image-level split",
    )  # fmt: skip
    p.add_argument(
        "--folds", type=int, nargs="+", default=None,
        help="run only these folds (1-based), e.g. to finish a run cut short",
    )  # fmt: skip
    p.add_argument("--num-workers", type=int, default=None, help="image-decoding workers")
    p.add_argument(
        "--time-budget", type=float, default=None,
        help="minutes: start no fold that would end past it (the table says how many ran)",
    )  # fmt: skip
    p.add_argument(
        "--calibration", default="none", choices=["none", "temperature", "sigmoid"],
        help="also report each learned row calibrated on lesion-grouped inner folds",
    )  # fmt: skip
    p.add_argument(
        "--no-image-only", action="store_true",
        help="skip the frozen image-only ablation row (saves time, e.g. with --calibration)",
    )  # fmt: skip
    p.add_argument(
        "--image-only", action="store_true",
        help="fine-tuned rows: only the image-only ablation (e.g. to add it to a finished run)",
    )  # fmt: skip
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="lesion resamples of the clinical intervals"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default=None, help="embedding cache (reused across runs)")
    p.add_argument("--out", default="benchmarks/results/reproduce")
    p.add_argument("--smoke", action="store_true", help="small synthetic run (CI)")
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument(
        "--merge", nargs="+", default=None, metavar="DIR",
        help="combine the --out folders of runs on disjoint --folds into --out (no fitting)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.merge:
        return merge(args.merge, args)
    if args.smoke:
        args.n_splits, args.image_size = 3, 64
        args.cae_latent, args.cae_image_size, args.cae_epochs = 16, 32, 2
        args.finetune_image_size, args.finetune_epochs = 32, 2
        args.backbones = ["efficientnet_lite0"]
        args.bootstrap = min(args.bootstrap, 50)
        bunch = make_synthetic_lesions(240, image_size=64, random_state=0)
        source = "synthetic lesions (smoke)"
    else:
        bunch = load_ham10000(args.data)
        source = f"HAM10000 at {args.data}"
    X, y, groups = bunch.data, bunch.target.astype(str), bunch.groups
    classes = np.unique(y)
    if args.test_data:
        test = load_ham10000(args.test_data)
        folds = [(X, y, test.data, test.target.astype(str), groups)]
        protocol = f"train on all of {args.data}, test on {args.test_data}"
    else:
        cv = StratifiedGroupKFold(n_splits=args.n_splits, shuffle=True, random_state=0)
        folds = [
            (X.iloc[tr], y.iloc[tr], X.iloc[te], y.iloc[te], np.asarray(groups)[tr])
            for tr, te in cv.split(X, y, groups)
        ]
        protocol = f"StratifiedGroupKFold(n_splits={args.n_splits}, shuffle=True, random_state=0) by lesion_id"
    print(f"{source}: {len(X)} images, {len(np.unique(groups))} lesions; {protocol}", flush=True)

    results: dict = {}
    confusion: dict = {}
    oof: dict = {}  # row -> out-of-fold probabilities (NaN where a fold did not run)
    device = resolved_device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    context = {"source": source, "protocol": protocol, "n_folds": len(folds), "device": device}
    context["versions"] = show_versions()  # printed once, saved with every write
    t_start, stopped = time.perf_counter(), None

    def record(name, row_classes, proba, fit_s, pred_s):  # of the fold k being run
        proba_full = np.zeros((len(X_te), len(classes)))
        proba_full[:, np.searchsorted(classes, row_classes)] = proba
        y_pred = classes[proba_full.argmax(axis=1)]
        if not args.test_data:
            rows = oof.setdefault(name, np.full((len(X), len(classes)), np.nan))
            rows[X.index.get_indexer(X_te.index)] = proba_full
        row = results.setdefault(name, {"folds": [], "n_folds": n_folds})
        fold = {**scores(y_te, y_pred, proba_full, classes), "fit_s": fit_s, "predict_s": pred_s}
        row["folds"].append({**fold, "fold": k + 1})
        confusion[name] = confusion.get(name, 0) + confusion_matrix(y_te, y_pred, labels=classes)
        print(
            f"[{name}] fold {k + 1}/{n_folds}: acc {fold['accuracy']:.3f} "
            f"bal {fold['balanced_accuracy']:.3f} f1w {fold['f1_weighted']:.3f} "
            f"({fit_s:.0f}s fit)",
            flush=True,
        )

    for approach in args.approaches:
        n_folds = len(folds)
        if approach == "finetuned" and args.finetune_folds:
            n_folds = min(n_folds, args.finetune_folds)
        last_fold_s = 0.0
        run = [k - 1 for k in args.folds] if args.folds else range(n_folds)
        for k in run:
            X_tr, y_tr, X_te, y_te, g_tr = folds[k]
            if args.time_budget is not None:
                elapsed = time.perf_counter() - t_start
                if elapsed + last_fold_s > 60 * args.time_budget:
                    stopped = (
                        f"time budget of {args.time_budget:g} min: {approach} stopped before "
                        f"fold {k + 1}/{n_folds} ({elapsed / 60:.1f} min spent)"
                    )
                    print(stopped, flush=True)
                    break
            t0 = time.perf_counter()
            models = rows_for(approach, args, X_tr, y_tr)
            shared_fit = time.perf_counter() - t0
            for name, model in models.items():
                t1 = time.perf_counter()
                fitted = fit_row(
                    model, X_tr, y_tr, g_tr, args.calibration,
                    route_groups=approach == "finetuned" and args.grouped_validation,
                )  # fmt: skip
                fit_s = time.perf_counter() - t1 + shared_fit
                for row_name, (predict_proba, row_classes) in fitted(name).items():
                    t1 = time.perf_counter()
                    proba = predict_proba(X_te)
                    pred_s = time.perf_counter() - t1
                    record(row_name, row_classes, proba, fit_s, pred_s)
            last_fold_s = time.perf_counter() - t0
            # saved after every fold: a run cut short keeps what it measured
            save(results, confusion, oof, classes, y, context, args, out, stopped, groups=groups)
        if stopped:
            break
    return save(
        results, confusion, oof, classes, y, context, args, out, stopped, final=True, groups=groups
    )


def no_tta(name, model):
    """A ``[tta=1]`` row for a fitted network with test-time augmentation: the same fitted
    network predicting from the image alone (its TTA ablation, at no training cost).

    Only for a model with its own ``tta`` (``FusionNetClassifier``): in a fitted pipeline or
    ensemble, ``set_params`` reaches the unfitted steps, not the fitted clones that predict,
    and a frozen encoder's classifier was trained on the views' mean embedding anyway (its
    ablation is a second run with ``--tta 1``).
    """
    tta = model.get_params().get("tta", 1)
    if tta == 1:
        return {}

    def predict_proba(X_test):
        model.set_params(tta=1)
        try:
            return model.predict_proba(X_test)
        finally:
            model.set_params(tta=tta)

    return {f"{name} [tta=1]": (predict_proba, model.classes_)}


def fit_row(model, X, y, groups, calibration, *, route_groups=False):
    """Fit one row's model; return ``name -> {row name: (predict_proba, classes)}``.

    With ``calibration``, the model is fitted inside ``CalibratedClassifierCV`` (inner
    folds grouped by lesion, ``ensemble=False``): its final estimator, fitted on all of
    ``X``, is the uncalibrated row, and the calibrated classifier is the ``[calibration]`` row.
    With ``route_groups``, the lesion groups also go to the networks' ``fit`` (through
    scikit-learn's metadata routing, so a VotingClassifier's members and the calibrated
    inner fits get them too): their early-stopping splits hold out whole lesions.
    """
    routed = {"groups": np.asarray(groups)} if route_groups else {}
    with warnings.catch_warnings(), sklearn.config_context(enable_metadata_routing=route_groups):
        warnings.simplefilter("ignore", category=UserWarning)
        if calibration == "none" or isinstance(model, DummyClassifier):
            model.fit(X, y, **routed)
            return lambda name: {name: (model.predict_proba, model.classes_), **no_tta(name, model)}
        # grouped inner folds as precomputed splits: scikit-learn 1.9's ensemble=False path
        # does not route groups to the splitter
        inner = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)
        calibrated = CalibratedClassifierCV(
            model, method=calibration, cv=list(inner.split(X, y, groups)), ensemble=False
        )
        calibrated.fit(X, np.asarray(y), **routed)  # 1.9.1 reads y[0] (a Series: KeyError)
    # the network fitted on all of X (its classes are encoded as 0..K-1)
    base = calibrated.calibrated_classifiers_[0].estimator
    return lambda name: {
        name: (base.predict_proba, calibrated.classes_),
        f"{name} [{calibration}]": (calibrated.predict_proba, calibrated.classes_),
    }


def resolved_device(device):
    import torch

    return "cuda" if (device in ("auto", "cuda") and torch.cuda.is_available()) else "cpu"


if __name__ == "__main__":
    main()
