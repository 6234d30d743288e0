"""The argument parser of the command line: its commands, their options and their help.

Help text is wrapped to at most :data:`WIDTH` characters (narrower terminals: theirs);
the options every command shares (``-v``/``-q``, ``--device``, ``--precision``,
``--num-threads``) are defined
once here.
"""

from __future__ import annotations

import argparse
import re
import shutil
import textwrap

__all__ = ["WIDTH", "build_parser"]

#: The widest line of any ``--help`` output.
WIDTH = 100

_ITEM = re.compile(r"^(\s+\S+\s\s+)")  # "  name  description": a listing's item


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Help at most :data:`WIDTH` wide; descriptions and epilogs are refilled paragraph by
    paragraph, and the items of a listing (``"  name  text"``) hang under their text."""

    def __init__(self, prog):
        width = min(shutil.get_terminal_size().columns, WIDTH) - 2
        super().__init__(prog, width=width, max_help_position=30)

    def _fill_text(self, text, width, indent):
        lines, paragraph = [], []

        def flush():
            if paragraph:
                lines.extend(textwrap.wrap(" ".join(paragraph), width, initial_indent=indent,
                                           subsequent_indent=indent))  # fmt: skip
                paragraph.clear()

        for line in text.splitlines():
            item = _ITEM.match(line)
            if not line.strip() or item:
                flush()
                hang = indent + " " * len(item.group(1)) if item else indent
                lines.extend(textwrap.wrap(indent + line, width, subsequent_indent=hang) or [""])
            else:
                paragraph.append(line.strip())
        flush()
        return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2 (argparse's status)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

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


def _device(text):
    if text in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", text):
        return text
    raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda, cuda:N or mps, got {text!r}")


_device.__name__ = "device"


def _columns(text):
    names = [name.strip() for name in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(
            f"expected distinct column names separated by commas, e.g. age,sex; got {text!r}"
        )
    return tuple(names)


_columns.__name__ = "columns"


def _recipes_help() -> str:
    from ..recipes import RECIPES

    width = max(map(len, RECIPES))
    lines = [f"  {name:<{width}}  {recipe.description}" for name, recipe in RECIPES.items()]
    return "recipes:\n" + "\n".join(lines)


def _layouts_help() -> str:
    from ..datasets import LAYOUTS

    return "layouts (--layout NAME, detected by default):\n" + "\n".join(
        f"  {name:<10}  {files}" for name, files in LAYOUTS.items()
    )


_DATA_HELP = "dataset folder: its layout is detected (or name it with --layout)"


def _add_layout(parser) -> None:
    from ..datasets import LAYOUTS

    parser.add_argument("--layout", default=None, choices=list(LAYOUTS), metavar="NAME",
                        help="the layout of --data: " + ", ".join(LAYOUTS) + " (default: "
                        "detected from its files)")  # fmt: skip


def _verbosity() -> argparse.ArgumentParser:
    """``-v``/``-q``, shared by every command."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="count", default=0,
                       help="more detail: -v adds per-batch progress bars of the networks")  # fmt: skip
    group.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bars or messages (results and warnings remain)")  # fmt: skip
    return parent


def _add_device(parser, what) -> None:
    parser.add_argument("--device", type=_device, default=None, metavar="DEVICE",
                        help=f"where the networks run: auto, cpu, cuda, cuda:N or mps "
                        f"(default: {what})")  # fmt: skip
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help="numeric precision of the networks: auto (bf16 autocast on CUDA "
                        "and on CPUs with native bf16 units: Intel AMX or AVX512-BF16, Arm "
                        "BF16; fp32 elsewhere), or forced (default: the model's own, auto)")  # fmt: skip
    parser.add_argument("--engine", choices=("auto", "torch", "onnxruntime"), default=None,
                        help="what computes cached embeddings and frozen activations on a "
                        "CPU in fp32: onnxruntime (about 2x faster; pip install "
                        "'skinfuse[onnx]'), torch, or auto: onnxruntime where installed, "
                        "for 1,024 image views or more (skinfuse.set_config; default: auto)")  # fmt: skip


def _add_threads(parser) -> None:
    parser.add_argument("--num-threads", type=_int_at_least(1), default=None, metavar="N",
                        help="CPU threads of torch's operators: torch.set_num_threads(N), "
                        "the intra-op threads only (torch's inter-op pool is left as it is; "
                        "the image-decoding workers run one thread each). Default: torch's "
                        "own, the machine's physical cores or $OMP_NUM_THREADS")  # fmt: skip


def _add_metadata_columns(parser, default) -> None:
    parser.add_argument("--metadata-columns", type=_columns, default=None, metavar="COLS",
                        help="metadata columns, separated by commas (e.g. age,sex); columns "
                        f"of numbers are numeric, the others categories (default: {default})")  # fmt: skip


def _add_train(sub, shared) -> None:
    train = sub.add_parser(
        "train", parents=shared, help="fit a recipe on a labelled folder and save the model",
        description="Fit a recipe on every image of a labelled folder (HAM10000, Derm7pt, "
        "ISIC 2019, ISIC 2020 or PAD-UFES-20 layout) and save it with skinfuse.save.",
        epilog=_recipes_help() + "\n\n" + _layouts_help(),
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
    _add_metadata_columns(train, "age,sex,localization; any column of the dataset's table")
    _add_device(train, "auto: cuda, then mps, then cpu")
    _add_threads(train)
    train.add_argument("--force", action="store_true",
                       help="train a recipe that needs a GPU without one (it takes days)")  # fmt: skip


def _add_predict(sub, shared) -> None:
    predict = sub.add_parser(
        "predict", parents=shared,
        help="predict a folder of images; write a CSV (and Grad-CAM figures)",
        description="Predict every image of a dataset folder (--data, any layout of --layout) "
        "or of a plain folder of images (--images, with an optional --metadata CSV keyed by "
        "image_id or file name, with the model's metadata columns). Writes image_id, "
        "image_path, prediction and one proba_<class> column per class.",
    )  # fmt: skip
    predict.add_argument("model", metavar="MODEL", help="model file written by skinfuse train")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", default=None, help=_DATA_HELP)
    source.add_argument("--images", default=None, metavar="DIR",
                        help="folder of images (jpg, png, ...)")  # fmt: skip
    predict.add_argument("--recursive", action="store_true",
                         help="with --images: also the images in its subfolders")  # fmt: skip
    _add_layout(predict)
    predict.add_argument("--metadata", default=None, metavar="CSV",
                         help="with --images: the metadata of each image")  # fmt: skip
    _add_metadata_columns(predict, "those the model was trained on")
    predict.add_argument("--out", required=True, metavar="CSV", help="predictions file to write")
    predict.add_argument("--coverage", type=_coverage, default=None, metavar="P",
                         help="also write each image's prediction set at this coverage and "
                         "whether to refer it (melanoma in the set, or not one class); needs "
                         "a model trained with --coverage")  # fmt: skip
    predict.add_argument("--grad-cam", default=None, metavar="DIR",
                         help="write Grad-CAM overlays (PNG) to this folder")  # fmt: skip
    predict.add_argument("--per-figure", type=_int_between(1, 16), default=16, metavar="N",
                         help="images per Grad-CAM figure (1: one file per image; default 16)")  # fmt: skip
    _add_device(predict, "where the model was fitted, if this machine has it, else cpu")
    _add_threads(predict)


def _add_evaluate(sub, shared) -> None:
    evaluate = sub.add_parser(
        "evaluate", parents=shared,
        help="score a model on a labelled folder, with lesion-grouped 95%% CIs",
        description="Predict a labelled folder (any layout of --layout) and print the "
        "per-class report, balanced accuracy, accuracy, macro F1, ECE and melanoma operating "
        "points (sensitivity at 80/90% specificity, specificity at 82% sensitivity, partial "
        "AUC above 80% sensitivity), each with a 95% bootstrap interval that resamples "
        "lesions.",
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
    _add_metadata_columns(evaluate, "those the model was trained on")
    _add_device(evaluate, "where the model was fitted, if this machine has it, else cpu")
    _add_threads(evaluate)


def _add_demo(sub, shared) -> None:
    demo = sub.add_parser(
        "demo", parents=shared,
        help="run the fusion pipeline end to end and print a results table",
        description="Cross-validate metadata-only, image-only and fused models (frozen "
        "EfficientNet-Lite0) on synthetic lesions or a HAM10000 folder; print a table.",
    )  # fmt: skip
    demo.add_argument("--data", default=None, help="HAM10000 folder; default: synthetic lesions")
    demo.add_argument("--n-samples", type=_int_at_least(20), default=400, metavar="N",
                      help="size of the synthetic set (default 400)")  # fmt: skip
    demo.add_argument("--n-splits", type=_int_at_least(2), default=3, metavar="K",
                      help="lesion-grouped CV folds (default 3)")  # fmt: skip
    demo.add_argument("--image-size", type=_int_at_least(8), default=None, metavar="PX",
                      help="CNN input size (default: 128 synthetic, 224 HAM10000)")  # fmt: skip
    demo.add_argument("--out", default="skinfuse_demo", metavar="DIR",
                      help="output folder (default: skinfuse_demo)")  # fmt: skip
    demo.add_argument("--random-state", type=_int_at_least(0), default=0, metavar="N")
    _add_device(demo, "auto: cuda, then mps, then cpu")
    _add_threads(demo)


def _add_info(sub, shared) -> None:
    info = sub.add_parser(
        "info", parents=shared, help="show what a model file holds, without loading it",
        description="Print what a model file written by skinfuse train (or skinfuse.save) "
        "holds: the model's class and estimators, its classes and input columns, the recipe "
        "and metrics stored with it, the versions it was saved with and the summary of its "
        "training data. Only the manifest (JSON) and the type names of the scikit-learn "
        "part are read: nothing is unpickled or built, so an untrusted file is safe to "
        "inspect. -v adds the versions of every package and the networks' settings.",
    )  # fmt: skip
    info.add_argument("model", metavar="MODEL", help="model file")
    info.add_argument("--json", action="store_true", help="print it as JSON")


def _add_serve(sub, shared) -> None:
    serve = sub.add_parser(
        "serve", parents=shared, help="a local web page: one image (and metadata) in, the "
        "model's probabilities, prediction set, referral and Grad-CAM out",
        description="Serve a page where a user uploads one dermoscopic image, optionally with "
        "the model's metadata (age, sex, body site), and sees the class probabilities, the "
        "prediction set and referral flag (models trained with --coverage), the Grad-CAM "
        "overlay and the model card's facts. Uploads are kept in memory for the request only; "
        "nothing is written to disk. Binds to 127.0.0.1 (this machine only) unless --host "
        "says otherwise: see the documentation's serve page before exposing it.",
    )  # fmt: skip
    serve.add_argument("model", metavar="MODEL", help="model file written by skinfuse train")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; "
                       "0.0.0.0: every network interface, no login or encryption)")  # fmt: skip
    serve.add_argument("--port", type=_int_between(0, 65535), default=8000, metavar="N",
                       help="port to listen on (default 8000; 0: any free port)")  # fmt: skip
    _add_device(serve, "where the model was fitted, if this machine has it, else cpu")
    _add_threads(serve)


def _add_export(sub, shared) -> None:
    export = sub.add_parser(
        "export", parents=shared, help="export a model's network to ONNX, with its preprocessing",
        description="Write the network of a model file to ONNX, for onnxruntime or any other "
        "ONNX runtime, without Python: a FusionNetClassifier as its network after the "
        "metadata preprocessing (inputs image and metadata, output probabilities), a fusion "
        "pipeline as its frozen image encoder (input image, output embedding). The "
        "preprocessing (image size and resize, the normalisation the graph applies, the "
        "metadata encoding, the class names) is written next to it as JSON (the same name, "
        "suffix .json). Needs pip install 'skinfuse[onnx]'.",
    )  # fmt: skip
    export.add_argument("model", metavar="MODEL", help="model file")
    export.add_argument("--onnx", metavar="OUT", required=True,
                        help="the ONNX file to write, e.g. model.onnx")  # fmt: skip
    export.add_argument("--opset", type=_int_at_least(7), default=18,
                        help="ONNX opset version (default: %(default)s)")  # fmt: skip


def _recipe_names():
    from ..recipes import RECIPES

    return list(RECIPES)


def build_parser(description) -> argparse.ArgumentParser:
    """The parser of ``skinfuse``: its commands and their options."""
    from .. import __version__

    parser = _Parser(prog="skinfuse", description=description)
    parser.add_argument("--version", action="version", version=f"skinfuse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="COMMAND")  # fmt: skip
    shared = [_verbosity()]
    _add_train(sub, shared)
    _add_predict(sub, shared)
    _add_evaluate(sub, shared)
    _add_demo(sub, shared)
    _add_info(sub, shared)
    _add_serve(sub, shared)
    _add_export(sub, shared)
    sub.add_parser("versions", parents=shared,
                   help="print versions of skinfuse and its dependencies")  # fmt: skip
    return parser
