"""Model files that are safe to open: ``skinfuse.save(model, path)`` and ``skinfuse.load(path)``.

A pickle (``joblib.dump``) runs whatever code it holds when it is opened, so a model
shared between a research group and a clinic should not travel as one. A skinfuse model
file is a zip archive of

- ``manifest.json``: format version, versions of skinfuse, scikit-learn, torch..., the
  model's class, ``classes_``, input columns, image size, the metrics given to ``save``,
  how to rebuild each torch network, and checksums of the two payloads;
- ``model.skops``: the scikit-learn parts, written by :func:`skops.io.dumps` and read
  back with an explicit list of trusted types (:data:`TRUSTED_TYPES`): a type off the list
  is refused before anything is built;
- ``weights.safetensors``: the weights of every torch network (no code, no pickle).

The torch networks are not in the skops payload: before it is written, each one is
replaced by a placeholder (and put back afterwards); on loading, the network is rebuilt
from its constructor arguments (recorded in the manifest, named backbones only) and
its weights are loaded into it. A network built around a user's own ``nn.Module`` cannot
be rebuilt without running the user's code, so ``save`` refuses it.

Neither skops nor torch is imported by ``import skinfuse``, only by ``save``/``load``
(skops itself imports every scikit-learn module on first use, torch included).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import warnings
import zipfile
from pathlib import Path

from .._utils._sklearn import HasMethods, validate_params

__all__ = ["TRUSTED_TYPES", "load", "save"]

#: The layout of a model file; bumped when a file written now could not be read back the
#: same way by an older skinfuse.
FORMAT_VERSION = 1
_FORMAT_NAME = "skinfuse-model"

_MANIFEST = "manifest.json"
_SKOPS = "model.skops"
_WEIGHTS = "weights.safetensors"
_HISTORIES = "histories.json"

#: Types outside skops' defaults (scikit-learn's estimators, NumPy arrays, builtins) that
#: the models skinfuse builds need, by their import path. skinfuse's own classes are added
#: by :func:`_trusted_types`.
TRUSTED_TYPES = (
    "imblearn.pipeline.Pipeline",
    "imblearn.over_sampling._smote.base.SMOTE",
    "imblearn.over_sampling._random_over_sampler.RandomOverSampler",
    "imblearn.under_sampling._prototype_selection._random_under_sampler.RandomUnderSampler",
    "numpy.dtype",
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",  # VotingClassifier.named_estimators_ (a dict of its steps)
)

#: Packages whose versions the manifest records.
_VERSIONED = (
    "scikit-learn", "imbalanced-learn", "numpy", "torch", "skorch", "skops", "safetensors"
)  # fmt: skip

_TORCH_PACKAGES = {"torch", "torchvision", "timm", "skorch"}


class _TorchPart:
    """Placeholder for a torch part of an estimator in the skops payload (rebuilt on load)."""

    def __init__(self, key, kind):
        self.key = key
        self.kind = kind

    def __repr__(self):
        return f"_TorchPart({self.key!r}, {self.kind!r})"


def _type_name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _skinfuse_types() -> list[str]:
    """skinfuse's own classes that may appear in a model (imports no torch)."""
    from .._metadata_steps import CategoryNormalizer, NumberChecker
    from ..encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
    from ..fusion import FusionNetClassifier
    from ..imbalance import AdaptiveSMOTE, PriorCorrectedClassifier

    classes = (
        CategoryNormalizer, NumberChecker, FrozenCNNEncoder, FineTunedCNNEncoder,
        ConvAutoencoderEncoder, FusionNetClassifier, AdaptiveSMOTE, PriorCorrectedClassifier,
        _TorchPart,
    )  # fmt: skip
    return [_type_name(cls) for cls in classes]


def _trusted_types(extra=None) -> list[str]:
    extra = [] if extra is None else list(extra)
    if not all(isinstance(name, str) for name in extra):
        raise TypeError(
            f"trusted must be a list of type names such as 'mypackage.module.MyClass'; got "
            f"{extra!r}"
        )
    return sorted({*TRUSTED_TYPES, *_skinfuse_types(), *extra})


# -- public API --------------------------------------------------------------------------------
@validate_params(
    {
        "model": [HasMethods(["get_params"])],
        "path": [str, os.PathLike],
        "metrics": [dict, None],
        "card": ["boolean"],
        "trusted": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def save(model, path, *, metrics=None, card=False, trusted=None):
    """Write ``model`` to a file that can be opened without running code.

    The scikit-learn parts go through :func:`skops.io.dumps`; the weights of every
    torch network through safetensors; a JSON manifest records the versions, the
    classes, the input columns, the image size and ``metrics``. The file is a zip
    archive; :func:`load` reads it back.

    Parameters
    ----------
    model : estimator
        A skinfuse model, fitted or not: a pipeline from
        :func:`~skinfuse.pipeline.make_fusion_pipeline` (any encoder, image-only or
        metadata-only, with :class:`~skinfuse.imbalance.AdaptiveSMOTE` or
        :class:`~skinfuse.imbalance.PriorCorrectedClassifier`), a
        :class:`~skinfuse.fusion.FusionNetClassifier`, or an encoder alone. Networks
        must use a named backbone: a custom ``nn.Module`` is refused.
    path : str or path-like
        Where to write the file (replaced if it exists), e.g. ``"model.skinfuse"``.
    metrics : dict or None, default=None
        Results to keep with the model, e.g. lesion-grouped cross-validation scores;
        must be JSON-serialisable (NumPy scalars and arrays are converted).
    card : bool, default=False
        Also write a Markdown model card next to the file (``path`` with the suffix
        ``.md``): intended use, data, the ``metrics``, limitations.
    trusted : list of str or None, default=None
        Further type names (``"package.module.Class"``) the model needs beyond
        :data:`TRUSTED_TYPES` and skinfuse's own classes; ``load`` must be given the same.
        Only list types you know to be safe.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Examples
    --------
    >>> import skinfuse
    >>> from skinfuse.datasets import make_synthetic_lesions
    >>> from skinfuse.pipeline import make_fusion_pipeline
    >>> lesions = make_synthetic_lesions(40, image_size=16, n_classes=2, random_state=0)
    >>> model = make_fusion_pipeline(None, sampler=None, classifier="logreg")
    >>> model = model.fit(lesions.data, lesions.target)
    >>> import tempfile, os
    >>> path = skinfuse.save(model, os.path.join(tempfile.mkdtemp(), "model.skinfuse"),
    ...                      metrics={"balanced_accuracy": 0.61})
    >>> skinfuse.load(path).predict(lesions.data[:3]).shape
    (3,)
    """
    import skops.io as sio

    path = Path(path)
    trusted_names = _trusted_types(trusted)
    metrics = None if metrics is None else _json_safe(metrics, "metrics")
    if metrics is not None and not isinstance(metrics, dict):
        raise TypeError(
            f"metrics must be a dict such as {{'balanced_accuracy': 0.7}}; got {metrics!r}"
        )
    torch_estimators = _torch_estimators(model)
    for est in torch_estimators:
        _check_rebuildable(est)

    tensors, histories, records, restore = {}, {}, [], []
    try:
        for i, est in enumerate(torch_estimators):
            record = _stash(est, f"part{i}", tensors, histories, restore)
            if record["parts"]:
                records.append(record)
        _check_no_torch_left(model)
        payload = sio.dumps(model)
    finally:
        for est, attr, value in reversed(restore):
            setattr(est, attr, value)
    untrusted = sorted(set(sio.get_untrusted_types(data=payload)) - set(trusted_names))
    if untrusted:
        raise TypeError(
            f"skinfuse.save refuses to write a model holding types that are not on the trusted "
            f"list: {untrusted}. Nobody could open the file safely. Use skinfuse's and "
            "scikit-learn's own steps, or, if you know these types to be safe, pass "
            "trusted=[...] to both skinfuse.save and skinfuse.load."
        )

    files = {_SKOPS: payload}
    if tensors:
        from safetensors.torch import save as save_tensors

        files[_WEIGHTS] = save_tensors(tensors)
    if histories:
        files[_HISTORIES] = json.dumps(histories).encode()
    from .. import __version__

    manifest = {
        "format": _FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "skinfuse_version": __version__,
        "versions": {
            "python": platform.python_version(),
            **{pkg: _version_of(pkg) for pkg in _VERSIONED},
        },
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **_describe(model, torch_estimators),
        "metrics": metrics,
        "trusted_types": [name for name in trusted_names if name in (trusted or [])],
        "torch_parts": records,
        "sha256": {name: _sha256(data) for name, data in files.items()},
    }
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(_MANIFEST, json.dumps(manifest, indent=2))
            for name, data in files.items():
                zf.writestr(name, data, compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    if card:
        _card_path(path).write_text(_model_card(model, manifest, path), encoding="utf-8")
    return path


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
        A file written by :func:`save`.
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

    for est in _estimators(model):
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
    for est in _torch_estimators(model):
        if isinstance(getattr(est, "device_", None), str):
            from .._nn.device import available_device

            est.device_ = available_device(est.device_)  # fitted on a GPU, loaded without
    return model


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


def _check_format(path, manifest) -> None:
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
    if written_by != __version__:
        warnings.warn(
            f"{path} was saved with skinfuse {written_by}; this is skinfuse {__version__}. "
            "The file format is the same, but the model may behave differently: check its "
            "predictions before use.",
            UserWarning,
            stacklevel=3,
        )


# the helpers import names defined above: imported last
from ._manifest import _card_path, _describe, _model_card, _sha256, _version_of  # noqa: E402
from ._networks import (  # noqa: E402
    _check_no_torch_left,
    _check_rebuildable,
    _estimators,
    _json_safe,
    _rebuild,
    _stash,
    _torch_estimators,
)
