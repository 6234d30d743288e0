"""What ``reproduce.py`` writes: its JSON, tables, out-of-fold probabilities and figures,
the clinical table (``skinfuse.metrics.clinical_summary``), and ``--merge`` of runs on
disjoint folds (older run folders included: the clinical table is computed anew from
their out-of-fold probabilities)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from skinfuse.datasets import load_ham10000
from skinfuse.metrics import clinical_summary, plot_operating_curve, plot_reliability_diagram

METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "f1_weighted", "roc_auc_ovr")


#: The clinical table's columns: melanoma's operating points and the top-label ECE, named as
#: in skinfuse.metrics.clinical_summary (which defines them).
CLINICAL = (
    "sensitivity_at_80_specificity",
    "sensitivity_at_90_specificity",
    "specificity_at_82_sensitivity",
    "partial_auc_above_80_sensitivity",
    "ece",
)


def clinical(oof, classes, y, groups, n_resamples):
    """Melanoma operating points, partial AUC and ECE of each row, with lesion-grouped CIs."""
    y = np.asarray(y, dtype=str)
    groups = np.asarray(groups)
    out = {}
    for name, proba in oof.items():
        done = ~np.isnan(proba).any(axis=1)
        if "mel" not in classes or done.sum() == 0:
            continue
        summary = clinical_summary(
            y[done], proba[done], classes=classes, groups=groups[done], metrics=CLINICAL,
            n_resamples=n_resamples,
        )  # fmt: skip
        out[name] = {m: summary[m].__dict__ for m in CLINICAL}
    return out


def merge(dirs, args):
    """One table from runs of the same protocol on disjoint folds (e.g. a run cut short)."""
    names = ("reproduce.json", "reproduce_smoke.json")
    runs = [
        json.loads(next(Path(d) / n for n in names if (Path(d) / n).exists()).read_text())
        for d in dirs
    ]
    npzs = [np.load(Path(d) / "oof_proba.npz", allow_pickle=True) for d in dirs]
    if len({r["protocol"] for r in runs}) != 1:
        raise ValueError(f"runs of different protocols cannot be merged: {dirs}")
    results, seen = {}, {}
    for run in runs:
        for name, row in run["results"].items():
            numbers = run["args"].get("folds") or range(1, len(row["folds"]) + 1)
            merged = results.setdefault(name, {"folds": [], "n_folds": row["n_folds"]})
            for number, fold in zip(numbers, row["folds"]):
                fold = {**fold, "fold": fold.get("fold", number)}
                if fold["fold"] in seen.setdefault(name, set()):
                    raise ValueError(f"fold {fold['fold']} of {name!r} is in two runs")
                seen[name].add(fold["fold"])
                merged["folds"].append(fold)
    for row in results.values():
        row["folds"].sort(key=lambda f: f["fold"])
    classes, y = npzs[0]["classes"].astype(str), npzs[0]["y"].astype(str)
    oof = {}
    for z in npzs:
        for name, proba in zip(z["rows"].astype(str), z["proba"]):
            oof[name] = np.where(np.isnan(proba), oof.get(name, proba), proba)
    confusion = {
        name: confusion_matrix(y[done], classes[p[done].argmax(axis=1)], labels=classes)
        for name, p in oof.items()
        for done in [~np.isnan(p).any(axis=1)]
    }
    first = runs[0]
    context = {
        "source": first["data"], "protocol": first["protocol"],
        "n_folds": first["args"]["n_splits"], "versions": first["versions"],
        "device": next(iter(first["results"].values()))["device"],
    }  # fmt: skip
    # the runs' own settings (not this command's), with where they came from
    run_args = {
        **first["args"],
        "folds": None,
        "out": args.out,
        "merged_from": list(map(str, dirs)),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_args = argparse.Namespace(**run_args)
    groups = merged_groups(npzs, first, y)
    return save(
        results, confusion, oof, classes, y, context, run_args, out, None, final=True, groups=groups
    )


def merged_groups(npzs, first, y):
    """The lesion of each image, for the merged clinical table's lesion-grouped intervals.

    Saved with the out-of-fold probabilities; a run saved before they were is given them
    from its dataset's metadata (the same rows in the same order, checked by the labels).
    """
    if "groups" in npzs[0].files:
        return npzs[0]["groups"].astype(str)
    if first["args"].get("smoke") or first["args"].get("test_data"):
        return None
    try:
        bunch = load_ham10000(first["args"]["data"])
    except (FileNotFoundError, OSError):
        print("no lesion ids for the clinical table (its data folder is gone)", flush=True)
        return None
    if not np.array_equal(bunch.target.astype(str).to_numpy(), np.asarray(y, dtype=str)):
        raise ValueError(f"{first['args']['data']} no longer holds the merged runs' images")
    return np.asarray(bunch.groups, dtype=str)


def save(results, confusion, oof, classes, y, context, args, out, stopped, final=False,
         groups=None):  # fmt: skip
    """Write the JSON, the table, the out-of-fold probabilities and the best confusion matrix."""
    for row in results.values():
        for m in (*METRICS, "mel_recall", "fit_s", "predict_s"):
            values = np.array([f[m] for f in row["folds"]], dtype=float)
            row[m] = [float(np.nanmean(values)), float(np.nanstd(values))]
        row["device"] = context["device"]
    header = (
        "| model | folds | accuracy | balanced acc. | macro F1 | weighted F1 | macro AUC (OvR) "
        "| mel recall | fit s/fold | predict s/fold | device |"
    )
    table = [header, "|" + "---|" * 11]
    for name, r in results.items():
        cells = " | ".join(f"{r[m][0]:.3f} ± {r[m][1]:.3f}" for m in METRICS)
        table.append(
            f"| {name} | {len(r['folds'])}/{context['n_folds']} | {cells} | "
            f"{r['mel_recall'][0]:.3f} | {r['fit_s'][0]:.0f} | {r['predict_s'][0]:.1f} | "
            f"{r['device']} |"
        )
    if stopped:
        table.append(f"\n{stopped}.")
    best = max(results, key=lambda n: results[n]["balanced_accuracy"][0]) if results else None
    if final and best is not None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            from sklearn.metrics import ConfusionMatrixDisplay

            disp = ConfusionMatrixDisplay(confusion[best], display_labels=classes)
            disp.plot(cmap="Blues", colorbar=False)
            import textwrap

            title = textwrap.fill(f"{best}: summed over folds", width=48)
            disp.ax_.set_title(title, fontsize=10)
            disp.figure_.tight_layout()
            disp.figure_.savefig(out / "confusion_best.png", dpi=100)
        except ImportError:  # pragma: no cover
            pass
    clinical_rows, clinical_table = {}, []
    if final and oof and groups is not None and getattr(args, "bootstrap", 0):
        clinical_rows = clinical(oof, classes, y, groups, args.bootstrap)
        clinical_table = [
            "| model (melanoma vs rest; 95 % CI over lesions) | sens. at 80 % spec. "
            "| sens. at 90 % spec. | spec. at 82 % sens. | pAUC above 80 % sens. | ECE (top label) |",
            "|" + "---|" * 6,
        ]
        for name, row in clinical_rows.items():
            cells = " | ".join(
                f"{row[m]['estimate']:.3f} [{row[m]['low']:.3f}, {row[m]['high']:.3f}]"
                for m in CLINICAL
            )
            clinical_table.append(f"| {name} | {cells} |")
        (out / "clinical.md").write_text("\n".join(clinical_table) + "\n")
        figures(oof, classes, y, results, out)
    payload = {
        "data": context["source"],
        "protocol": context["protocol"],
        "args": vars(args),
        "results": results,
        "clinical": clinical_rows,
        "best_row": best,
        "stopped": stopped,
        "versions": context["versions"],
    }
    (out / ("reproduce_smoke.json" if args.smoke else "reproduce.json")).write_text(
        json.dumps(payload, indent=2)
    )
    (out / "table.md").write_text("\n".join(table) + "\n")
    if oof:  # out-of-fold probabilities of every row, for analyses without refitting
        lesions = {} if groups is None else {"groups": np.asarray(groups, dtype=str)}
        np.savez_compressed(
            out / "oof_proba.npz", classes=classes, y=np.asarray(y, dtype=str), rows=np.array(list(oof)),
            proba=np.stack(list(oof.values())), **lesions,
        )  # fmt: skip
    if final:
        print(f"\nsaved {out}/; best row by balanced accuracy: {best}\n")
        print("\n".join(table))
        if clinical_table:
            print("\n" + "\n".join(clinical_table))
    return payload


def figures(oof, classes, y, results, out):
    """The best row's reliability diagram (with its calibrated twin) and the melanoma curves."""
    y = np.asarray(y, dtype=str)
    learned = [n for n in oof if n not in ("majority class",) and "[" not in n]
    if not learned or "mel" not in classes:
        return
    best = max(learned, key=lambda n: results[n]["balanced_accuracy"][0])
    twins = {n: oof[n] for n in oof if n == best or n.startswith(f"{best} [")}
    done = ~np.isnan(np.stack(list(twins.values()))).any(axis=(0, 2))
    plot_reliability_diagram(
        y[done], {n: p[done] for n, p in twins.items()}, classes=classes,
        title=f"{best}: out-of-fold", path=out / "reliability.png",
    )  # fmt: skip
    mel = int(np.searchsorted(classes, "mel"))
    done = ~np.isnan(np.stack([oof[n] for n in learned])).any(axis=(0, 2))
    plot_operating_curve(
        y[done], {n: oof[n][done, mel] for n in learned}, path=out / "melanoma_tradeoff.png",
        title="Melanoma vs rest, out-of-fold",
    )  # fmt: skip
