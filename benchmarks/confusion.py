"""The confusion matrix of saved probabilities (``proba_<recipe>_<set>.npz`` of
``benchmarks/external.py``): rows the true classes present, columns the predicted ones
(the most probable of all the model's classes), and the mean probability of each class.

    python benchmarks/confusion.py runs/external/proba_partial_derm7pt.npz
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="npz files with proba, y and classes")
    args = p.parse_args(argv)
    for path in args.files:
        saved = np.load(path, allow_pickle=True)
        classes = np.asarray(saved["classes"]).astype(str)
        y = np.asarray(saved["y"]).astype(str)
        proba = saved["proba"]
        pred = pd.Categorical(classes[proba.argmax(axis=1)], categories=classes)
        table = pd.crosstab(pd.Series(y, name="true"), pd.Series(pred, name="predicted"),
                            dropna=False)  # fmt: skip
        print(f"{path}: {len(y)} images")
        print("| true \\ predicted | " + " | ".join(classes) + " |")
        print("|---" * (len(classes) + 1) + "|")
        for label, row in table.iterrows():
            print(f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |")
        mean = dict(zip(classes, proba.mean(axis=0).round(3)))
        print("mean probability: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items()))


if __name__ == "__main__":
    main()
