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
import hashlib
import json
import os
import platform
import warnings
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from ._utils._sklearn import HasMethods, validate_params

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
    from ._metadata_steps import CategoryNormalizer, NumberChecker
    from .encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
    from .fusion import FusionNetClassifier
    from .imbalance import AdaptiveSMOTE, PriorCorrectedClassifier

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


# -- walking a model -------------------------------------------------------------------------
def _package(value) -> str:
    cls = value if isinstance(value, type) else type(value)
    return (getattr(cls, "__module__", "") or "").split(".")[0]


def _estimators(model) -> list:
    """Every estimator reachable from ``model`` (itself included), each once, parents first.

    Follows the attributes of estimators (objects with ``get_params``) and the items of
    lists, tuples and dicts; never goes inside torch or skorch objects.
    """
    found, seen, stack = [], set(), [model]
    while stack:
        obj = stack.pop(0)
        if id(obj) in seen or _package(obj) in _TORCH_PACKAGES:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif hasattr(obj, "get_params") and hasattr(obj, "__dict__") and not isinstance(obj, type):
            found.append(obj)
            stack.extend(v for k, v in vars(obj).items() if k != "_device_copies")
    return found


def _torch_estimators(model) -> list:
    from ._nn.device import TorchEstimatorMixin

    return [est for est in _estimators(model) if isinstance(est, TorchEstimatorMixin)]


def _named_backbones() -> tuple:
    from ._nn.names import BACKBONES

    return BACKBONES


def _check_rebuildable(est) -> None:
    """Refuse what cannot be rebuilt without running the user's code: a custom backbone."""
    from .encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
    from .fusion import FusionNetClassifier

    known = (FrozenCNNEncoder, FineTunedCNNEncoder, ConvAutoencoderEncoder, FusionNetClassifier)
    if type(est) not in known:
        raise TypeError(
            f"skinfuse.save cannot store {type(est).__name__}: only skinfuse's own torch "
            f"estimators ({', '.join(cls.__name__ for cls in known)}) can be rebuilt safely. "
            "Use one of them, or joblib.dump at your own risk (opening a pickle runs code)."
        )
    backbone = getattr(est, "backbone", None)
    if backbone is not None and not isinstance(backbone, str):
        raise TypeError(
            f"skinfuse.save cannot store {type(est).__name__} with a custom backbone "
            f"({type(backbone).__name__}): rebuilding it would mean running your code when the "
            f"file is opened, which a safe model file must not do. Use a named backbone "
            f"({', '.join(_named_backbones())}), or joblib.dump at your own risk (opening a "
            "pickle runs whatever code it holds: only open pickles you trust)."
        )


def _check_no_torch_left(model) -> None:
    """After the placeholders: no torch object may reach skops (it would pickle it)."""
    for est in _estimators(model):
        for attr, value in vars(est).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if isinstance(value, dict):
                values = list(value.values())
            for item in values:
                if _package(item) in _TORCH_PACKAGES:
                    raise TypeError(
                        f"skinfuse.save cannot store {type(est).__name__}.{attr}: it holds a "
                        f"torch object ({_type_name(item if isinstance(item, type) else type(item))}) "
                        "that could only be saved as a pickle. Use skinfuse's named options "
                        "(e.g. optimizer='adamw', a named backbone), or joblib.dump at your own "
                        "risk."
                    )


# -- the torch parts ---------------------------------------------------------------------------
def _tensors_of(module, prefix) -> dict:
    return {
        f"{prefix}{name}": tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in module.state_dict().items()
    }


def _json_safe(value, what):
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable ({exc}); got {value!r}") from exc


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _stash(est, key, tensors, histories, restore) -> dict:
    """Replace ``est``'s torch parts by placeholders; return their record.

    ``restore`` gets ``(est, attr, value)`` for each part as soon as it is replaced, so
    that the caller puts everything back even when this fails half-way."""
    import torch
    from skorch import NeuralNet
    from skorch.history import History

    from ._nn.backbones import ImageEmbedder
    from ._nn.modules import ClassifierNetwork, ConvAutoencoder
    from ._nn.training import ClassifierNet, ReconstructionNet

    record = {"key": key, "owner": _type_name(type(est)), "parts": {}}
    net = vars(est).get("net_")  # before it is replaced: its history may be est.history_
    for attr, value in list(vars(est).items()):
        if attr == "_device_copies":
            continue
        if isinstance(value, NeuralNet):
            if type(value) not in (ClassifierNet, ReconstructionNet) or type(
                getattr(value, "module_", None)
            ) not in (ClassifierNetwork, ConvAutoencoder):
                raise TypeError(
                    f"skinfuse.save cannot store {type(est).__name__}.{attr}: a "
                    f"{type(value).__name__} that skinfuse did not build"
                )
            kind = "classifier_net" if type(value) is ClassifierNet else "reconstruction_net"
            module_kwargs = {
                k[len("module__") :]: v for k, v in vars(value).items() if k.startswith("module__")
            }
            part = {
                "kind": kind,
                "module_kwargs": _json_safe(module_kwargs, "the network's arguments"),
                "net_params": {
                    k: getattr(value, k)
                    for k in ("batch_size", "lr", "max_epochs")
                    if isinstance(getattr(value, k, None), (int, float))
                },
            }
            tensors.update(_tensors_of(value.module_, f"{key}/{attr}/module/"))
            criterion = getattr(value, "criterion_", None)
            if isinstance(criterion, torch.nn.Module):
                tensors.update(_tensors_of(criterion, f"{key}/{attr}/criterion/"))
            histories[f"{key}/{attr}"] = _json_safe(list(value.history), "the training history")
        elif isinstance(value, ImageEmbedder):
            if attr != "embedder_":
                raise TypeError(f"unexpected network {type(est).__name__}.{attr}")
            part = {"kind": "embedder", "backbone": est.backbone, "pooling": est.pooling}
            tensors.update(_tensors_of(value, f"{key}/{attr}/"))
        elif isinstance(value, History):
            if isinstance(net, NeuralNet) and net.history is value:
                part = {"kind": "history", "same_as": "net_"}  # net_.history, stored with it
            else:
                part = {"kind": "history"}
                histories[f"{key}/{attr}"] = _json_safe(list(value), "the training history")
        else:
            continue
        record["parts"][attr] = part
        restore.append((est, attr, value))
        setattr(est, attr, _TorchPart(key, part["kind"]))
    return record


def _rebuild(est, record, attr, part, tensors, histories):
    """The torch part ``attr`` of ``est``, rebuilt from its record and its weights."""
    import torch
    from skorch.history import History

    from ._nn.device import torch_seed

    key = record["key"]
    prefix = f"{key}/{attr}/"
    kind = part.get("kind")
    if kind == "history":
        if part.get("same_as") == "net_":
            return est.net_.history
        return History(histories[f"{key}/{attr}"])
    if kind == "embedder":
        from ._nn.backbones import build_embedder

        backbone = _checked_backbone(part.get("backbone"))
        embedder, _, _ = build_embedder(backbone, None, str(part.get("pooling")))
        _load_state(embedder, _select(tensors, prefix), f"{record['owner']}.{attr}")
        return embedder.eval()
    if kind not in ("classifier_net", "reconstruction_net"):
        raise ValueError(f"unknown kind of torch part {kind!r} in the manifest")

    from ._nn.modules import ClassifierNetwork, ConvAutoencoder
    from ._nn.training import ClassifierNet, ReconstructionNet, finish_training

    kwargs = dict(part["module_kwargs"])
    params = {
        k: v
        for k, v in part.get("net_params", {}).items()
        if k in ("batch_size", "lr", "max_epochs") and isinstance(v, (int, float))
    }
    if kind == "classifier_net":
        _checked_backbone(kwargs.get("backbone"))
        saved_weights = kwargs.get("weights")
        kwargs["weights"] = None  # the weights come from the file, not from a download/path
        weight = tensors.get(f"{prefix}criterion/weight")
        net = ClassifierNet(
            module=ClassifierNetwork, **{f"module__{k}": v for k, v in kwargs.items()},
            criterion=torch.nn.CrossEntropyLoss, criterion__weight=weight,
            classes=np.arange(int(kwargs["n_classes"])), train_split=None, device="cpu",
            **params,
        )  # fmt: skip
    else:
        saved_weights = None
        kwargs["channels"] = tuple(int(c) for c in kwargs["channels"])
        net = ReconstructionNet(
            module=ConvAutoencoder, **{f"module__{k}": v for k, v in kwargs.items()},
            criterion=torch.nn.MSELoss, train_split=None, device="cpu", **params,
        )  # fmt: skip
    with torch_seed(0):  # random initial weights, replaced below; the global stream is kept
        net.initialize()
    _load_state(net.module_, _select(tensors, f"{prefix}module/"), f"{record['owner']}.{attr}")
    net.history = History(histories.get(f"{key}/{attr}", []))
    finish_training(net)
    if kind == "classifier_net":
        net.module__weights = saved_weights  # as fitted (get_params shows what the user chose)
    return net


def _checked_backbone(name):
    if not isinstance(name, str) or name not in _named_backbones():
        raise ValueError(
            f"the model file names backbone {name!r}, which is not one of skinfuse's named "
            f"backbones ({', '.join(_named_backbones())}); it cannot be rebuilt"
        )
    return name


def _select(tensors, prefix):
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_state(module, state, what):
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"the weights stored for {what} do not fit the rebuilt network ({exc}); the file "
            "is damaged or was not written by skinfuse.save"
        ) from exc


# -- the manifest ------------------------------------------------------------------------------
def _version_of(package):
    try:
        return version(package)
    except PackageNotFoundError:  # pragma: no cover
        return None


def _describe(model, torch_estimators) -> dict:
    def listed(name):
        try:
            value = getattr(model, name)
        except (AttributeError, ValueError, TypeError):  # unfitted, or an unfitted step
            return None
        return np.asarray(value).tolist()

    sizes = sorted({int(est.image_size) for est in torch_estimators})
    return {
        "model_class": _type_name(type(model)),
        "classes": listed("classes_"),
        "feature_names_in": listed("feature_names_in_"),
        "n_features_in": _json_safe(getattr(model, "n_features_in_", None), "n_features_in_"),
        "image_size": (sizes[0] if len(sizes) == 1 else sizes) if sizes else None,
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    from . import __version__

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
    from ._nn.device import TorchEstimatorMixin

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
            from ._nn.device import available_device

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
    from . import __version__

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


# -- the model card ----------------------------------------------------------------------------
def _card_path(path: Path) -> Path:
    return path.with_name(path.name + ".md") if path.suffix == ".md" else path.with_suffix(".md")


def _metrics_markdown(metrics) -> str:
    if not metrics:
        return (
            "No metrics were given to `skinfuse.save(..., metrics=...)`. Report "
            "lesion-grouped cross-validated results here (all images of one lesion in the "
            "same fold), e.g. from `skinfuse.metrics`."
        )
    flat = all(isinstance(v, (int, float, str, bool)) or v is None for v in metrics.values())
    if flat:
        rows = "\n".join(
            f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in metrics.items()
        )
        table = f"| metric | value |\n|---|---|\n{rows}"
    else:
        table = f"```json\n{json.dumps(metrics, indent=2)}\n```"
    return (
        "As given to `skinfuse.save` by whoever saved the model (skinfuse did not compute or "
        "check them). They should come from a lesion-grouped evaluation (all images of one "
        f"lesion in the same fold), not from a split by image.\n\n{table}"
    )


def _model_card(model, manifest, path) -> str:
    versions = manifest["versions"]
    classes = manifest["classes"]
    columns = manifest["feature_names_in"]
    with np.printoptions(threshold=20):
        text = repr(model)
    return f"""# Model card: {manifest["model_class"].rsplit(".", 1)[-1]}

File `{path.name}` (skinfuse model file, format {manifest["format_version"]}), saved
{manifest["created"]} with skinfuse {manifest["skinfuse_version"]}, scikit-learn
{versions.get("scikit-learn")}, torch {versions.get("torch")}. Open it with
`skinfuse.load("{path.name}")`: no pickle is involved.

## Model

```
{text}
```

- Classes: {", ".join(map(str, classes)) if classes else "not recorded (not a fitted classifier)"}
- Input columns: {", ".join(map(str, columns)) if columns else "not recorded"}
- Image size: {manifest["image_size"] or "no images (metadata only)"}

## Intended use

Research on the classification of dermoscopic images of skin lesions together with
clinical metadata (age, sex, body site): comparing methods, studying errors and
explanations. Not for the diagnosis or triage of patients.

## Data

Describe here the training data: source (e.g. HAM10000), number of lesions and of images,
class distribution, population (age, sex, skin types), acquisition devices and sites, and
how duplicates of one lesion were kept together.

## Evaluation (lesion-grouped)

{_metrics_markdown(manifest["metrics"])}

## Limitations

- Research use only. This model is **not a medical device**: it has not been validated
  clinically or approved by any regulator, and must not be used to diagnose, rule out or
  triage skin cancer.
- It knows only the classes above; a lesion of another kind is still given one of them.
- Performance depends on the population, the skin types, the camera/dermatoscope and the
  class prevalence it is applied to; public dermoscopy data sets under-represent darker
  skin. Probabilities are calibrated, if at all, for the training prevalence.
- Results measured on images of lesions seen in training overstate performance: only
  lesion-grouped results are meaningful.
"""
