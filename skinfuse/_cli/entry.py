"""Command line: train, apply and evaluate a model on a folder of images, without Python.

``skinfuse train`` fits a recipe on a labelled folder (HAM10000, Derm7pt, ISIC 2019, ISIC 2020
or PAD-UFES-20 layout, detected or named by ``--layout``) and saves a model file;
``skinfuse predict`` writes a CSV of predictions (and Grad-CAM figures) for a folder of
images; ``skinfuse evaluate`` scores a model on a labelled folder with lesion-grouped
confidence intervals; ``skinfuse demo`` runs the fusion pipeline end to end.
"""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2 (argparse's status)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _int_between(low, high):
    at_least = _int_at_least(low)

    def parse(text):
        value = at_least(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {value}")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


def _coverage(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 0.9, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.9), got {value}")
    return value


_coverage.__name__ = "coverage in (0, 1)"


def _recipes_help() -> str:
    from ..recipes import RECIPES

    width = max(map(len, RECIPES))
    lines = [f"  {name:<{width}}  {recipe.description}" for name, recipe in RECIPES.items()]
    return "recipes:\n" + "\n".join(lines)


_DATA_HELP = "dataset folder: its layout is detected (or name it with --layout)"


def _layouts_help() -> str:
    from ..datasets import LAYOUTS

    return "layouts (--layout NAME, detected by default):\n" + "\n".join(
        f"  {name:<10}  {files}" for name, files in LAYOUTS.items()
    )


def _add_layout(parser) -> None:
    from ..datasets import LAYOUTS

    parser.add_argument("--layout", default=None, choices=list(LAYOUTS), metavar="NAME",
                        help="the layout of --data: " + ", ".join(LAYOUTS) + " (default: "
                        "detected from its files)")  # fmt: skip


def _add_commands(sub) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    train = sub.add_parser(
        "train", help="fit a recipe on a labelled folder and save the model",
        description="Fit a recipe on every image of a labelled folder (HAM10000, Derm7pt, "
        "ISIC 2019, ISIC 2020 or PAD-UFES-20 layout) and save it with skinfuse.save.",
        epilog=_recipes_help() + "\n\n" + _layouts_help(), formatter_class=raw,
    )  # fmt: skip
    train.add_argument("--data", required=True, help=_DATA_HELP + " (labelled)")
    _add_layout(train)
    train.add_argument("--recipe", required=True, choices=_recipe_names(), metavar="NAME",
                       help="one of the recipes below")  # fmt: skip
    train.add_argument("--out", required=True, metavar="MODEL",
                       help="model file to write, e.g. model.skinfuse")  # fmt: skip
    train.add_argument("--cv", type=_int_at_least(2), default=None, metavar="K",
                       help="first run a K-fold cross-validation grouped by lesion_id; its "
                       "scores are printed and stored in the model file")  # fmt: skip
    train.add_argument("--cache-dir", default=None, metavar="DIR",
                       help="embedding cache on disk, reused across runs")  # fmt: skip
    train.add_argument("--random-state", type=_int_at_least(0), default=0, metavar="N")
    train.add_argument("--no-calibration", action="store_true",
                       help="skip the temperature scaling on 3 lesion-grouped inner folds that "
                       "ends every recipe (saves 3 fits; probabilities uncalibrated)")  # fmt: skip
    train.add_argument("--coverage", type=_coverage, default=None, metavar="P",
                       help="also conformalize prediction sets (class-conditional, on the "
                       "calibration's lesion-grouped out-of-fold probabilities) for "
                       "'skinfuse predict --coverage', e.g. 0.9")  # fmt: skip
    train.add_argument("--card", action="store_true",
                       help="also write a Markdown model card next to the model")  # fmt: skip
    train.add_argument("--quiet", action="store_true", help="no progress bars or messages")

    predict = sub.add_parser(
        "predict", help="predict a folder of images; write a CSV (and Grad-CAM figures)",
        description="Predict every image of a dataset folder (--data, any layout of --layout) "
        "or of a plain "
        "folder of images (--images, with an optional --metadata CSV keyed by image_id or file "
        "name, with columns age, sex, localization). Writes image_id, image_path, prediction "
        "and one proba_<class> column per class.",
    )  # fmt: skip
    predict.add_argument("model", metavar="MODEL", help="model file written by skinfuse train")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", default=None, help=_DATA_HELP)
    source.add_argument("--images", default=None, metavar="DIR",
                        help="folder of images (jpg, png, ...)")  # fmt: skip
    _add_layout(predict)
    predict.add_argument("--metadata", default=None, metavar="CSV",
                         help="with --images: age, sex, localization per image")  # fmt: skip
    predict.add_argument("--out", required=True, metavar="CSV", help="predictions file to write")
    predict.add_argument("--coverage", type=_coverage, default=None, metavar="P",
                         help="also write each image's prediction set at this coverage and "
                         "whether to refer it (melanoma in the set, or not one class); needs "
                         "a model trained with --coverage")  # fmt: skip
    predict.add_argument("--grad-cam", default=None, metavar="DIR",
                         help="write Grad-CAM overlays (PNG) to this folder")  # fmt: skip
    predict.add_argument(
        "--per-figure",
        type=_int_between(1, 16),
        default=16,
        metavar="N",
        help="images per Grad-CAM figure (1: one file per image; default 16)",
    )
    predict.add_argument("--quiet", action="store_true", help="no progress bars or messages")

    evaluate = sub.add_parser(
        "evaluate", help="score a model on a labelled folder, with lesion-grouped 95%% CIs",
        description="Predict a labelled folder (any layout of --layout) and print the "
        "per-class report, "
        "balanced accuracy, accuracy, macro F1, ECE and melanoma operating points (sensitivity "
        "at 80/90% specificity, specificity at 82% sensitivity, partial AUC above 80% "
        "sensitivity), each with a 95% bootstrap interval that resamples lesions.",
    )  # fmt: skip
    evaluate.add_argument("model", metavar="MODEL", help="model file written by skinfuse train")
    evaluate.add_argument("--data", required=True, help=_DATA_HELP + " (labelled)")
    _add_layout(evaluate)
    evaluate.add_argument("--out", default=None, metavar="DIR",
                          help="write clinical_report.csv, metrics.json, reliability.png and "
                          "melanoma_tradeoff.png here")  # fmt: skip
    evaluate.add_argument("--n-resamples", type=_int_at_least(10), default=1000, metavar="N",
                          help="bootstrap resamples (default 1000)")  # fmt: skip
    evaluate.add_argument("--random-state", type=_int_at_least(0), default=0, metavar="N")
    evaluate.add_argument("--no-subgroups", action="store_true",
                          help="skip the report by sex, age band and body site (printed "
                          "when the data have metadata)")  # fmt: skip
    evaluate.add_argument("--quiet", action="store_true", help="no progress bars or messages")


def _recipe_names():
    from ..recipes import RECIPES

    return list(RECIPES)


def _run_command(args) -> None:
    verbose = 0 if args.quiet else 1
    if args.command == "train":
        from .train import run_train

        run_train(
            args.data, layout=args.layout, recipe=args.recipe, out=args.out, cv=args.cv,
            cache_dir=args.cache_dir, random_state=args.random_state, card=args.card, verbose=verbose,
            calibrate=not args.no_calibration, coverage=args.coverage,
        )  # fmt: skip
    elif args.command == "predict":
        from .predict import run_predict

        run_predict(
            args.model, out=args.out, data=args.data, layout=args.layout, images=args.images,
            metadata=args.metadata, grad_cam=args.grad_cam, per_figure=args.per_figure,
            verbose=verbose, coverage=args.coverage,
        )  # fmt: skip
    else:
        from .evaluate import run_evaluate

        run_evaluate(
            args.model, data=args.data, layout=args.layout, out=args.out,
            n_resamples=args.n_resamples, random_state=args.random_state, verbose=verbose,
            subgroups=not args.no_subgroups,
        )  # fmt: skip


def main(argv=None) -> int:
    """Run the command line; return the exit status (2 for a user error, shown in one line)."""
    parser = _Parser(
        prog="skinfuse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_commands(sub)
    demo = sub.add_parser(
        "demo", help="run the fusion pipeline end to end and print a results table"
    )
    demo.add_argument("--data", default=None, help="HAM10000 folder; default: synthetic lesions")
    demo.add_argument(
        "--n-samples", type=_int_at_least(20), default=400, help="size of the synthetic set"
    )
    demo.add_argument(
        "--n-splits", type=_int_at_least(2), default=3, help="lesion-grouped CV folds"
    )
    demo.add_argument(
        "--image-size",
        type=_int_at_least(8),
        default=None,
        help="CNN input size (128 synthetic, 224 HAM10000)",
    )
    demo.add_argument(
        "--out", default="skinfuse_demo", help="output folder (default: skinfuse_demo)"
    )
    demo.add_argument("--random-state", type=_int_at_least(0), default=0)
    sub.add_parser("versions", help="print versions of skinfuse and its dependencies")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        try:
            run_demo(
                args.data,
                n_samples=args.n_samples,
                n_splits=args.n_splits,
                image_size=args.image_size,
                out=args.out,
                random_state=args.random_state,
            )
        except (ValueError, OSError) as exc:  # a user error: one line, no traceback
            print(f"skinfuse demo: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
    elif args.command in ("train", "predict", "evaluate"):
        try:
            _run_command(args)
        except (ValueError, OSError) as exc:  # a user error: one line, no traceback
            message = " ".join(str(exc).split())
            print(f"skinfuse {args.command}: error: {message}", file=sys.stderr)
            return 2
    elif args.command == "versions":
        from .. import show_versions

        show_versions()
    return 0
