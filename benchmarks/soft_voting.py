"""Soft voting from saved out-of-fold probabilities: what ``VotingClassifier`` scores.

    python benchmarks/soft_voting.py RUN_DIR [RUN_DIR ...] --rows NAME NAME [...] [--data PATH]

``VotingClassifier(members, voting="soft")`` fits each member on the training folds and
averages their probabilities. Its out-of-fold probabilities are therefore the mean of the
members' own (read from ``oof_proba.npz`` of ``benchmarks/reproduce.py`` runs on the same
folds; members are deterministic given their ``random_state``): no network is trained again.
Rows are looked up in every run (a row split over runs on disjoint folds is joined). Prints
each member's and the ensemble's scores, mean ± std over the folds every member covers (as
reproduce.py's table; melanoma AUC also over those folds' predictions pooled), and saves them as JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from late_fusion import read_rows, scores
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from skinfuse.datasets import load_ham10000


def per_fold(y, proba, classes, folds):
    """Mean and std over ``folds`` (test indices) of each score."""
    table = [scores(y[test], proba[test], classes) for test in folds]
    return {k: (float(np.mean([t[k] for t in table])), float(np.std([t[k] for t in table])))
            for k in table[0]}  # fmt: skip


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("runs", nargs="+")
    p.add_argument("--rows", nargs="+", required=True, help="the members' row names")
    p.add_argument("--data", default=os.environ.get("SKINFUSE_DATA", "../shared/data/ham10000"))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    ham = load_ham10000(args.data)
    X, y, groups = ham.data, ham.target.astype(str).to_numpy(), np.asarray(ham.groups)
    members = [read_rows(args.runs, name) for name in args.rows]
    classes = members[0][1]
    if any(list(c) != list(classes) for _, c in members):
        raise SystemExit("the rows' classes differ")
    cv = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)  # reproduce.py's
    folds = [
        test for _, test in cv.split(X, y, groups)
        if not any(np.isnan(proba[test]).any() for proba, _ in members)
    ]  # fmt: skip
    if not folds:
        raise SystemExit("no fold is covered by every row")
    results = {"n_folds": len(folds)}
    for name, (proba, _) in zip(args.rows, members):
        results[name] = per_fold(y, proba, classes, folds)
    vote = np.mean([proba for proba, _ in members], axis=0)
    results[f"soft voting of {len(members)}"] = per_fold(y, vote, classes, folds)
    covered = np.concatenate(folds)
    mel = list(classes).index("mel")
    results["pooled_mel_auc"] = {  # the out-of-fold probabilities of the folds, pooled
        name: float(roc_auc_score(y[covered] == "mel", proba[covered, mel]))
        for name, proba in [*zip(args.rows, (p for p, _ in members)), ("soft voting", vote)]
    }  # fmt: skip
    print(f"{len(folds)} folds")
    for name, row in results.items():
        if isinstance(row, dict) and name != "pooled_mel_auc":
            shown = " ".join(f"{k} {m:.3f}±{s:.3f}" for k, (m, s) in row.items())
            print(f"{name[:60]:60s} {shown}")
    for name, auc in results["pooled_mel_auc"].items():
        print(f"pooled out-of-fold melanoma AUC, {name[:60]}: {auc:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
