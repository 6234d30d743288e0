"""external.py's prediction sets, referral rule and subgroup report (issue 26): the rows of
each test set, their tables and their figures."""

from __future__ import annotations

import json

import numpy as np

from skinfuse.metrics import (
    plot_prediction_sets,
    plot_referral_curve,
    plot_subgroup_report,
    referral_curve,
    referral_summary,
    subgroup_report,
)

MELANOMA = "mel"
FIGURE_LEVEL = 0.9


def set_rows(model, y, proba, levels) -> dict:
    """``{coverage: referral_summary}`` of a PredictionSets model at each target level, and
    the model's temperature."""
    out = {"temperature": float(model.estimator_.temperature_), "levels": {}}
    for level in levels:
        sets = model.sets_from_proba(proba, coverage=level)
        out["levels"][f"{level:g}"] = referral_summary(y, sets, classes=model.classes_,
                                                       pos_label=MELANOMA)  # fmt: skip
    return out


def _stem(recipe, test) -> str:
    return f"{recipe}_{test.split()[0]}"


def write_figures(out, recipe, test, model, y, proba, rows) -> None:
    """Coverage per class and set sizes at 90 %; the referral trade-off over the levels."""
    import matplotlib

    matplotlib.use("Agg")
    sets = model.sets_from_proba(proba, coverage=FIGURE_LEVEL)
    plot_prediction_sets(y, sets, classes=model.classes_, coverage=FIGURE_LEVEL,
                         title=f"{recipe} on {test}",
                         path=out / f"prediction_sets_{_stem(recipe, test)}.png")  # fmt: skip
    levels = {float(k): model.sets_from_proba(proba, coverage=float(k)) for k in rows["levels"]}
    curve = referral_curve(y, levels, classes=model.classes_, pos_label=MELANOMA)
    plot_referral_curve(curve, title=f"{recipe} on {test}: referral at each coverage",
                        path=out / f"referral_{_stem(recipe, test)}.png")  # fmt: skip


def write_subgroups(out, recipe, y, proba, classes, groups, X, args) -> dict:
    """The subgroup report of one test set: markdown, JSON, forest plot; returns the JSON."""
    report = subgroup_report(
        y, proba, classes=classes, groups=groups, metadata=X, pos_label=MELANOMA,
        n_resamples=args.n_resamples, random_state=args.random_state,
    )  # fmt: skip
    plot_subgroup_report(report, title=f"{recipe}: melanoma sensitivity by patient group",
                         path=out / f"subgroups_{recipe}.png")  # fmt: skip
    lines = ["| group | images | lesions | mel | mel. sensitivity | mel. specificity | "
             "balanced acc. | ECE | flagged |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (attribute, group), r in report.iterrows():
        cells = [
            "-" if np.isnan(r.get(m, np.nan)) else
            f"{r[m]:.3f} [{r[m + '_low']:.3f}, {r[m + '_high']:.3f}]"
            for m in ("sensitivity", "specificity", "balanced_accuracy", "ece")
        ]  # fmt: skip
        lines.append(f"| {attribute}: {group} | {r['n_images']} | {r['n_lesions']} | "
                     f"{r['n_positive']} | " + " | ".join(cells)
                     + f" | {'below' if r['flagged'] else ''} |")  # fmt: skip
    (out / f"subgroups_{recipe}.md").write_text("\n".join(lines) + "\n")
    document = json.loads(report.reset_index().to_json(orient="records"))
    (out / f"subgroups_{recipe}.json").write_text(json.dumps(document, indent=1))
    return {
        "rows": document,
        "flagged": [f"{a}: {g}" for (a, g) in report.index[report["flagged"]]],
    }


def sets_tables(results) -> str:
    """Markdown: per recipe and test set, coverage, set size and referral at each level,
    then the coverage per class at 90 %."""
    lines = []
    for recipe, sets in results["recipes"].items():
        rows = {test: v["as given"]["sets"] for test, v in sets.items() if "sets" in v["as given"]}
        if not rows:
            continue
        lines += [f"### {recipe}: prediction sets (class-conditional) and the referral rule", "",
                  "| test images | T | target | coverage | mean set size | singletons | "
                  "referred | melanomas caught |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for test, r in rows.items():
            for level, s in r["levels"].items():
                lines.append(f"| {test} | {r['temperature']:.2f} | {level} | {s['coverage']:.3f} "
                             f"| {s['mean_set_size']:.2f} | {s['singletons']:.3f} | "
                             f"{s['referral_rate']:.3f} | {s['melanomas_caught']:.3f} "
                             f"(of {s['n_positive']}) |")  # fmt: skip
        level = f"{FIGURE_LEVEL:g}"
        classes = sorted(
            {c for r in rows.values() for c in r["levels"][level]["coverage_per_class"]}
        )
        lines += ["", f"Coverage per class at {level} (images of the class):", "",
                  "| test images | " + " | ".join(classes) + " |",
                  "|---|" + "---|" * len(classes)]  # fmt: skip
        for test, r in rows.items():
            s = r["levels"][level]
            lines.append(f"| {test} | " + " | ".join(
                f"{s['coverage_per_class'][c]:.3f} ({s['support_per_class'][c]})"
                if c in s["coverage_per_class"] else "-" for c in classes) + " |")  # fmt: skip
        flagged = [v["as given"].get("subgroups", {}).get("flagged") for v in sets.values()]
        flagged = [f for f in flagged if f is not None]
        if flagged:
            lines += ["", "Groups of the held-out lesions whose melanoma sensitivity interval lies "
                      f"wholly below the overall one: {', '.join(flagged[0]) or 'none'} "
                      f"(subgroups_{recipe}.md, subgroups_{recipe}.png)."]  # fmt: skip
        lines.append("")
    return "\n".join(lines)
