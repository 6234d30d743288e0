"""``skinfuse.load``: a model file checked (format, checksums, trusted types), then rebuilt."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

from .._utils._sklearn import validate_params
from ._format import (
    _FORMAT_NAME,
    _HISTORIES,
    _MANIFEST,
    _SKOPS,
    _WEIGHTS,
    FORMAT_VERSION,
    _TorchPart,
    _trusted_types,
    _type_name,
)
from ._hub import download, is_hub_path
from ._manifest import _sha256
from ._networks import _rebuild, estimators_in, torch_estimators_in


@validate_params(
    {"path": [str, os.PathLike], "trusted": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def load(path, *, trusted=None):
    """Read a model written by :func:`save`, without unpickling anything.

    The scikit-learn parts are read by :func:`skops.io.loads` with an explicit list of
    trusted types: a file naming any other type is refused before anything is built.
    Torch networks are rebuilt from the manifest (named backbones only) and their weights
    read with safetensors. A model fitted on a GPU loads on a CPU-only machine
    (``device_`` becomes ``"cpu"``).

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`, or one on the Hugging Face Hub:
        ``"hf://org/repo/file.skinfuse"`` (``"hf://org/repo@revision/file.skinfuse"`` for a
        branch, tag or commit), downloaded by :func:`huggingface_hub.hf_hub_download` into
        its cache (needs ``pip install 'skinfuse[hub]'``; a private repository needs a
        token, as ``huggingface_hub`` finds it).
    trusted : list of str or None, default=None
        Further type names to accept, as given to :func:`save`.

    Returns
    -------
    model : estimator
        The model as saved, ready to predict.

    Raises
    ------
    ValueError
        Not a skinfuse model file, damaged, or written in another format version.
    TypeError
        The file holds types that are not trusted.

    Warns
    -----
    UserWarning
        When the file was written by another version of skinfuse.
    """
    import skops.io as sio

    if is_hub_path(path):
        path = download(path)
    path = Path(path)
    manifest, files = _read(path)
    trusted_names = _trusted_types(trusted)
    payload = files[_SKOPS]
    untrusted = sorted(set(sio.get_untrusted_types(data=payload)) - set(trusted_names))
    if untrusted:
        raise TypeError(
            f"refusing to load {path}: its scikit-learn part holds types that are not trusted: "
            f"{untrusted}. Building them could run code. Nothing was loaded. If you know these "
            "types to be safe (you wrote the file yourself), pass trusted=[...]."
        )
    model = sio.loads(payload, trusted=trusted_names)

    records = {record["key"]: record for record in manifest.get("torch_parts", [])}
    if records:
        from safetensors.torch import load as load_tensors

        tensors = load_tensors(files[_WEIGHTS]) if _WEIGHTS in files else {}
        histories = json.loads(files[_HISTORIES]) if _HISTORIES in files else {}
    from .._nn.device import TorchEstimatorMixin

    for est in estimators_in(model):
        placeholders = {a: v for a, v in vars(est).items() if isinstance(v, _TorchPart)}
        if not placeholders:
            continue
        if not isinstance(est, TorchEstimatorMixin):
            raise ValueError(f"{path} is damaged: {type(est).__name__} holds a torch placeholder")
        # networks first: a history may be the one of net_
        for attr, placeholder in sorted(placeholders.items(), key=lambda i: i[1].kind == "history"):
            record = records.get(placeholder.key)
            part = None if record is None else record["parts"].get(attr)
            if part is None or record["owner"] != _type_name(type(est)):
                raise ValueError(
                    f"{path} is damaged: the manifest does not describe "
                    f"{type(est).__name__}.{attr} ({placeholder.key})"
                )
            setattr(est, attr, _rebuild(est, record, attr, part, tensors, histories))
    for est in torch_estimators_in(model):
        if isinstance(getattr(est, "device_", None), str):
            from .._nn.device import available_device

            est.device_ = available_device(est.device_)  # fitted on a GPU, loaded without
    return model


def read_manifest(path) -> dict:
    """The manifest of a model file (checked: a skinfuse file of this format), without
    reading its payloads; ``training_data`` is ``None`` in files saved without it."""
    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a skinfuse model file")
    with zipfile.ZipFile(path) as zf:
        try:
            manifest = json.loads(zf.read(_MANIFEST))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: no readable {_MANIFEST} ({exc})") from None
    _check_format(path, manifest, warn=False)  # load() warns about the version
    manifest.setdefault("training_data", None)
    return manifest


def _read(path):
    """The manifest and the payloads of a model file, checked."""
    if not path.is_file():
        raise ValueError(f"model file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a skinfuse model file (not a zip archive); files written by "
            "joblib/pickle are not opened by skinfuse.load"
        )
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if _MANIFEST not in names or _SKOPS not in names:
            raise ValueError(f"{path} is not a skinfuse model file (no {_MANIFEST} / {_SKOPS})")
        try:
            manifest = json.loads(zf.read(_MANIFEST))
        except ValueError as exc:
            raise ValueError(f"{path}: its {_MANIFEST} is not valid JSON ({exc})") from exc
        _check_format(path, manifest)
        files = {name: zf.read(name) for name in (_SKOPS, _WEIGHTS, _HISTORIES) if name in names}
    expected = manifest.get("sha256", {})
    for name, data in files.items():
        if expected.get(name) != _sha256(data):
            raise ValueError(f"{path} is damaged: {name} does not match its checksum")
    if set(expected) - set(files):
        raise ValueError(f"{path} is damaged: {sorted(set(expected) - set(files))} missing")
    return manifest, files


def _check_format(path, manifest, warn=True) -> None:
    from .. import __version__

    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT_NAME:
        raise ValueError(f"{path} is not a skinfuse model file (its manifest says otherwise)")
    written_by = manifest.get("skinfuse_version")
    fmt = manifest.get("format_version")
    if fmt != FORMAT_VERSION:
        raise ValueError(
            f"{path} is a skinfuse model file in format version {fmt!r}, written by skinfuse "
            f"{written_by}; this skinfuse ({__version__}) reads format version {FORMAT_VERSION} "
            f"only. Load it with skinfuse {written_by}, or save it again from there."
        )
    if warn and written_by != __version__:
        warnings.warn(
            f"{path} was saved with skinfuse {written_by}; this is skinfuse {__version__}. "
            "The file format is the same, but the model may behave differently: check its "
            "predictions before use.",
            UserWarning,
            stacklevel=3,
        )
