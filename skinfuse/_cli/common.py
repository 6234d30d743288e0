"""What every command shares: checks of its paths before any work, loading a model,
progress messages and warnings.

User mistakes raise ``ValueError`` or ``OSError`` with a message that names the path and
the fix, which :func:`skinfuse._cli.main` prints as one line (exit status 2).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

__all__ = [
    "check_data_dir",
    "check_device",
    "check_in_file",
    "check_out_file",
    "load_data",
    "load_model",
    "metadata_columns_of",
    "model_input",
    "prepare_out",
    "say",
    "set_device",
    "set_num_threads",
    "set_precision",
    "set_verbose",
    "warn",
]


# -- checks, before any work -------------------------------------------------------------------
def check_data_dir(path, option="--data") -> Path:
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"{option} folder not found: {path}; pass an existing folder")
    return path


def load_data(data: Path, layout, command, verbose):
    """The Bunch of a dataset folder in any known layout (``layout`` None: detected)."""
    from ..datasets import load_lesion_folder

    bunch = load_lesion_folder(data, layout=layout)
    say(verbose, f"{data}: {bunch.layout} layout")
    if bunch.layout == "derm7pt" and command == "train":
        warn(command, "Derm7pt is an external test set (another centre): train on it only "
                      "if you will not report scores on it")  # fmt: skip
    return bunch


def check_in_file(path, what, option) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"{what} not found: {path}; pass an existing file with {option}")
    return path


def check_out_file(path, option) -> Path:
    """Create the parent folder of an output file and check that it can be written to."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OSError(f"{option} {path} is a folder; pass a file name, e.g. {path / 'out'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise OSError(
            f"cannot write {option} {path}: {exc.strerror or exc}; pass a path in a folder "
            "that can be created and written to"
        ) from None
    return path


def check_device(device):
    """``device`` (``--device``) resolved to a torch device of this machine; ``None``: ``None``.

    Raises ``ValueError`` naming the option when it is not available here."""
    if device is None:
        return None
    from .._nn.device import resolve_device

    try:
        return resolve_device(device)
    except ValueError as exc:
        raise ValueError(f"--device {device}: {exc}") from None


def model_input(bunch, columns):
    """The model's input from a dataset Bunch: ``bunch.data`` for the default metadata
    columns (``None``), else the image column and ``columns`` of the dataset's table."""
    from .._columns import IMAGE_COLUMN, METADATA_COLUMNS
    from ..datasets import _typed_metadata as typed_metadata

    if columns is None or tuple(columns) == METADATA_COLUMNS:
        return bunch.data
    table = bunch.frame.reset_index(drop=True)
    absent = [c for c in columns if c not in table.columns]
    if absent:
        known = [c for c in table.columns if c not in (IMAGE_COLUMN, "dx", "lesion_id")]
        raise ValueError(
            f"--metadata-columns: {', '.join(absent)} not in the dataset's table; its columns "
            f"are {', '.join(map(str, known))}"
        )
    images = bunch.data[[IMAGE_COLUMN]].reset_index(drop=True)
    return images.join(typed_metadata(table, columns))


def metadata_columns_of(model, columns):
    """The metadata columns to hand ``model``: ``columns`` (``--metadata-columns``), checked
    against those it was trained on, or those (``None``)."""
    from .._columns import IMAGE_COLUMN, METADATA_COLUMNS

    names = getattr(model, "feature_names_in_", None)
    trained = None if names is None else tuple(str(c) for c in names if c != IMAGE_COLUMN)
    if columns is None:
        return METADATA_COLUMNS if trained is None else trained
    if trained is not None and set(columns) != set(trained):
        raise ValueError(
            f"--metadata-columns {','.join(columns)}: the model was trained on the metadata "
            f"columns {','.join(trained) or '(none)'}; pass those, or leave the option out"
        )
    return tuple(columns) if trained is None else trained


def set_device(model, device) -> None:
    """Run the torch networks of a loaded model on ``device`` (resolved); ``None``: as loaded."""
    if device is None:
        return
    from .._model_files import torch_estimators_in

    for est in torch_estimators_in(model):
        if hasattr(est, "device_"):  # fitted ones only: an unfitted step stays unfitted
            est._forget_device_copies()
            est.device_ = device


def set_precision(model, precision) -> None:
    """``--precision``: the ``precision`` of every torch estimator of a loaded model;
    ``None``: as saved (``"auto"`` for a model file written before the parameter)."""
    if precision is None:
        return
    from .._model_files import torch_estimators_in

    for est in torch_estimators_in(model):
        if "precision" in est.get_params(deep=False):
            est._forget_device_copies()
            est.set_params(precision=precision)


def set_num_threads(n) -> None:
    """``--num-threads N``: torch's intra-op threads (``torch.set_num_threads``), for the
    rest of the process. Inter-op threads are left as they are, and DataLoader workers run
    one thread each whatever this says."""
    import torch

    torch.set_num_threads(int(n))


def load_model(path):
    import skinfuse

    try:
        return skinfuse.load(path)
    except TypeError as exc:  # untrusted types in the file: a user-facing refusal
        raise ValueError(str(exc)) from None


def set_verbose(model, verbose) -> None:
    """Progress bars of skinfuse's estimators on (1) or off (0), fitted copies included."""
    from .._utils._estimators import walk_estimators

    for est in walk_estimators(model):
        if type(est).__module__.startswith("skinfuse.") and hasattr(est, "verbose"):
            est.verbose = verbose


def say(verbose, message) -> None:
    if verbose:
        print(message, flush=True)


def warn(command, message) -> None:
    print(f"skinfuse {command}: warning: {message}", file=sys.stderr, flush=True)


def prepare_out(out) -> Path:
    """Create the output folder and check that it is writable; raise OSError naming it."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        reason = exc.strerror or exc
        raise OSError(
            f"cannot write to the output folder {out}: {reason}; pass --out (out=) a folder "
            "that can be created and written to"
        ) from None
    return out
