"""The melanoma trade-off of rows from several ``reproduce.py`` runs, in one picture.

    python benchmarks/clinical_figures.py RUN_DIR [RUN_DIR ...] \\
        --rows "NAME=LABEL" ["NAME=LABEL" ...] --out FIGURE.png

Each run saves its rows' out-of-fold probabilities (``oof_proba.npz``) and draws its own
figures; rows of different runs (e.g. the frozen recipe and a fusion network, run apart)
are drawn here together, without fitting anything: one sensitivity/specificity curve of
melanoma against the rest per row (``skinfuse.metrics.plot_operating_curve``), on the images
every row covers. ``LABEL`` (optional) is the legend's name of the row. A row split over runs
on disjoint folds is joined. Prints each row's specificity at 82, 90 and 95 % sensitivity and
its partial AUC above 80 % sensitivity (``skinfuse.metrics.clinical_summary``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from late_fusion import read_rows

from skinfuse.metrics import clinical_summary, plot_operating_curve

#: What is printed of each row (skinfuse.metrics.clinical_summary's names).
PRINTED = (
    "specificity_at_82_sensitivity",
    "specificity_at_90_sensitivity",
    "specificity_at_95_sensitivity",
    "partial_auc_above_80_sensitivity",
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+", help="--out folders of reproduce.py runs")
    p.add_argument("--rows", nargs="+", required=True, help="row names, each NAME or NAME=LABEL")
    p.add_argument("--title", default="Melanoma vs rest, out-of-fold")
    p.add_argument("--out", required=True, help="the figure's path (.png)")
    args = p.parse_args(argv)
    labels = []  # each run's labels: the runs must be of the same images
    for run in args.runs:
        if not (Path(run) / "oof_proba.npz").is_file():
            raise SystemExit(
                f"{run} holds no oof_proba.npz: give --out folders of reproduce.py runs"
            )
        labels.append(np.load(Path(run) / "oof_proba.npz")["y"].astype(str))
    if any(not np.array_equal(other, labels[0]) for other in labels[1:]):
        raise SystemExit(f"the runs are not of the same images: {args.runs}")
    y, probas = labels[0], {}
    for spec in args.rows:
        name, _, label = spec.partition("=")
        proba, classes = read_rows(args.runs, name)
        if "mel" not in classes:
            raise SystemExit(f"row {name!r} has no 'mel' class: {list(classes)}")
        probas[label or name] = (proba, classes)
    covered = ~np.any([np.isnan(p).any(axis=1) for p, _ in probas.values()], axis=0)
    if not covered.any():
        raise SystemExit("no image is covered by every row")
    y = y[covered]
    print(f"{covered.sum()} images covered by every row")
    scores = {}
    for label, (proba, classes) in probas.items():
        proba = proba[covered]
        scores[label] = proba[:, list(classes).index("mel")]
        summary = clinical_summary(
            y, proba, classes=classes, sensitivities=(0.82, 0.9, 0.95), metrics=PRINTED
        )
        print(f"{label[:40]:40s} " + " ".join(f"{m} {summary[m]:.3f}" for m in PRINTED))
    plot_operating_curve(y, scores, title=args.title, path=args.out)
    print(f"saved {args.out}")
    return scores


if __name__ == "__main__":
    main()
