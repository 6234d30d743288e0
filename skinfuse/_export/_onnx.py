"""``export_onnx``: a fitted fusion network or frozen image encoder to ONNX, with its
preprocessing written next to it as JSON."""

from __future__ import annotations

import json
import os
import warnings
from numbers import Integral
from pathlib import Path

import numpy as np

from .._utils._sklearn import HasMethods, Interval, validate_params

#: The ``format`` field of the JSON written next to an exported network.
PREPROCESSING_FORMAT = "skinfuse-onnx-preprocessing"


@validate_params(
    {
        "model": [HasMethods(["get_params"]), str, os.PathLike],
        "path": [str, os.PathLike],
        "opset": [Interval(Integral, 7, None, closed="left")],
    },
    prefer_skip_nested_validation=True,
)
def export_onnx(model, path, *, opset=18):
    """Export the network of a fitted model to ONNX, and its preprocessing to JSON.

    What is exported:

    - a :class:`~skinfuse.fusion.FusionNetClassifier` (alone or inside a pipeline or a
      calibration wrapper): the network after the metadata preprocessing. Inputs ``image``
      (uint8 ``(batch, 3, S, S)``, RGB, resized to ``S x S``) and ``metadata`` (float32
      ``(batch, n_features)``, the preprocessed metadata; absent for a network without
      metadata); output ``probabilities`` (float32 ``(batch, n_classes)``, columns in the
      order of ``classes`` in the JSON);
    - otherwise a :class:`~skinfuse.encoders.FrozenCNNEncoder` (alone, or the image
      encoder of a fusion pipeline): input ``image`` as above, output ``embedding``
      (float32 ``(batch, n_features)``).

    The normalisation (mean/std) is inside the graph. The JSON file (``path`` with the
    suffix ``.json``) says how to build the inputs without Python: the image size and the
    resize, the mean/std the graph applies, for each metadata column how it is encoded
    (categories, imputed value, scaling, missing values), the encoding of a row with every
    column missing, the feature names and the class names. Test-time augmentation
    (``tta``), temperature scaling and the classifier of a fusion pipeline are not part
    of the graph (the JSON says so when the model has them).

    Parameters
    ----------
    model : estimator or str or path-like
        A fitted model, or a file written by :func:`skinfuse.save`.
    path : str or path-like
        Where to write the ONNX file, e.g. ``"model.onnx"``.
    opset : int, default=18
        The ONNX opset version.

    Returns
    -------
    paths : dict
        ``{"onnx": Path, "preprocessing": Path}``: the files written.

    Examples
    --------
    >>> import os, tempfile
    >>> import skinfuse
    >>> from skinfuse.datasets import make_synthetic_lesions
    >>> from skinfuse.fusion import FusionNetClassifier
    >>> folder = tempfile.mkdtemp()
    >>> lesions = make_synthetic_lesions(24, image_size=16, n_classes=2, data_dir=folder,
    ...                                  random_state=0)
    >>> net = FusionNetClassifier("tiny_cnn", weights=None, image_size=16, max_epochs=1,
    ...                           validation_fraction=0.0, num_workers=0, random_state=0)
    >>> net = net.fit(lesions.data, lesions.target)
    >>> paths = skinfuse.export_onnx(net, os.path.join(folder, "net.onnx"))  # doctest: +SKIP
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401 (the torch.export-based exporter)
    except ImportError as error:  # pragma: no cover
        raise ImportError(
            f"ONNX export needs {error.name}; install it with pip install 'skinfuse[onnx]'"
        ) from None
    import torch

    if isinstance(model, (str, os.PathLike)):
        from .._model_files import load

        model = load(model)
    path = Path(path)
    part, kind = _exported_part(model)
    module, inputs, names, outputs, info = _prepare(part, kind, torch)
    module = module.to("cpu").eval()
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in names)
    with torch.no_grad(), warnings.catch_warnings():
        # the exporter's note that inputs sharing the batch axis share its name
        warnings.filterwarnings("ignore", message="# The axis name", category=UserWarning)
        program = torch.onnx.export(
            module, inputs, input_names=list(names), output_names=list(outputs),
            dynamic_shapes=dynamic, opset_version=int(opset), dynamo=True, verbose=False,
        )  # fmt: skip
    program.save(str(path))
    info.update(_notes(model, part, kind))
    json_path = path.with_suffix(".json")
    json_path.write_text(json.dumps(info, indent=2), encoding="utf-8")
    return {"onnx": path, "preprocessing": json_path}


# -- what to export ----------------------------------------------------------------------------
def _exported_part(model):
    from .._utils._estimators import walk_estimators
    from ..encoders import FrozenCNNEncoder
    from ..fusion import FusionNetClassifier

    found = list(walk_estimators(model))
    for cls, attr, kind in (
        (FusionNetClassifier, "module_", "fusion"),
        (FrozenCNNEncoder, "embedder_", "encoder"),
    ):
        candidates = [est for est in found if isinstance(est, cls)]
        fitted = [est for est in candidates if hasattr(est, attr)]
        if fitted:
            return fitted[0], kind
        if (
            candidates
            and cls is FrozenCNNEncoder
            and any(hasattr(est, "encoders_") for est in candidates)
        ):
            raise ValueError(
                "export_onnx exports a FrozenCNNEncoder with one backbone; this one has several "
                "(backbone=(...)): export a model with a single backbone"
            )
        if candidates:
            raise ValueError(
                f"the {cls.__name__} in {type(model).__name__} is not fitted: fit the model "
                "(or load a fitted one) before export_onnx"
            )
    raise TypeError(
        f"export_onnx exports a FusionNetClassifier or a FrozenCNNEncoder (alone or inside a "
        f"pipeline); {type(model).__name__} holds neither"
    )


def _prepare(est, kind, torch):
    """(module, example inputs, input names, output names, preprocessing description)."""
    size = int(est._size() if hasattr(est, "_size") else est.image_size)
    image = torch.zeros(2, 3, size, size, dtype=torch.uint8)
    if kind == "fusion":
        network = est.module_
        embedder = network.embedder
        n_meta = 0 if est.metadata_ is None else len(est.metadata_.get_feature_names_out())
        module = _Probabilities(network, with_metadata=bool(n_meta))
        inputs = (image, torch.zeros(2, n_meta)) if n_meta else (image,)
        names = ("image", "metadata") if n_meta else ("image",)
        outputs = ("probabilities",)
    else:
        embedder = est.embedder_
        module, inputs, names, outputs = embedder, (image,), ("image",), ("embedding",)
    info = {
        "format": PREPROCESSING_FORMAT,
        "format_version": 1,
        "exported": f"{type(est).__name__}: "
        + ("class probabilities" if kind == "fusion" else "image embedding"),
        "inputs": {
            "image": {
                "dtype": "uint8",
                "shape": ["batch", 3, size, size],
                "layout": "NCHW, RGB, 0-255",
                "size": size,
                "resize": "the whole image resized to size x size, bilinear with antialiasing "
                "(PIL Image.resize((size, size), Image.BILINEAR)); no crop",
                "normalization_in_graph": {
                    "mean": (embedder.mean.flatten() / 255).tolist(),
                    "std": (embedder.std.flatten() / 255).tolist(),
                    "formula": "(pixel / 255 - mean) / std, done by the graph",
                },
            }
        },
    }
    if kind == "fusion":
        info["classes"] = np.asarray(est.classes_).tolist()
        info["outputs"] = {"probabilities": {"dtype": "float32", "columns": info["classes"]}}
        if est.metadata_ is not None:
            info["inputs"]["metadata"] = _metadata_description(est.metadata_)
    else:
        names_out = np.asarray(est.get_feature_names_out()).tolist()
        info["outputs"] = {"embedding": {"dtype": "float32", "columns": names_out}}
    return module, inputs, names, outputs, info


def _probabilities_module(torch):
    class Probabilities(torch.nn.Module):
        def __init__(self, network, with_metadata):
            super().__init__()
            self.network = network
            self.with_metadata = with_metadata

        def forward(self, image, metadata=None):
            logits = self.network(image, metadata) if self.with_metadata else self.network(image)
            return torch.softmax(logits.float(), dim=1)

    return Probabilities


def _Probabilities(network, *, with_metadata):
    import torch

    return _probabilities_module(torch)(network, with_metadata)


# -- the metadata encoding ---------------------------------------------------------------------
def _metadata_description(preprocessor) -> dict:
    """How the fitted ``ColumnTransformer`` encodes metadata, step by step, per column."""
    import pandas as pd

    feature_names = np.asarray(preprocessor.get_feature_names_out()).tolist()
    columns = {}
    for name, transformer, cols in preprocessor.transformers_:
        if name == "remainder" or transformer == "drop":
            continue
        cols = [cols] if isinstance(cols, str) else list(cols)
        steps = [step for _, step in getattr(transformer, "steps", [(name, transformer)])]
        for j, column in enumerate(cols):
            columns[str(column)] = [_describe_step(step, j, steps[:i], len(cols))
                                    for i, step in enumerate(steps)]  # fmt: skip
    all_missing = pd.DataFrame({c: [np.nan] for c in preprocessor.feature_names_in_})
    all_missing = all_missing.astype(object)
    try:
        missing_row = np.asarray(preprocessor.transform(all_missing), dtype=float)[0].tolist()
    except (ValueError, TypeError):  # a custom transformer that refuses missing values
        missing_row = None
    return {
        "dtype": "float32",
        "shape": ["batch", len(feature_names)],
        "feature_names": feature_names,
        "columns": columns,
        "all_missing_row": missing_row,
        "how": "each input column is encoded by its steps in order; the features are "
        "concatenated in the order of feature_names",
    }


def _indicator_index(before, j, n_columns):
    """Where the missing indicator of column ``j`` is among the features after the steps
    ``before`` (after all the columns' values), or None."""
    from sklearn.impute import SimpleImputer

    for step in before:
        if isinstance(step, SimpleImputer) and step.indicator_ is not None:
            features = list(step.indicator_.features_)
            return n_columns + features.index(j) if j in features else None
    return None


def _describe_step(step, j, before, n_columns) -> dict:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from .._metadata_steps import CategoryNormalizer

    kind = type(step).__name__
    if isinstance(step, CategoryNormalizer):
        return {
            "step": "normalize",
            "what": "strip whitespace and lower-case; None, NaN and empty strings are missing",
        }
    if isinstance(step, SimpleImputer):
        out = {"step": "impute", "strategy": step.strategy, "fill_value":
               _plain(step.statistics_[j])}  # fmt: skip
        if step.indicator_ is not None and j in step.indicator_.features_:
            out["missing_indicator"] = (
                "an extra feature, 1.0 if the value was missing, else 0.0; the indicators of "
                "all columns follow their values"
            )
        return out
    if isinstance(step, StandardScaler):
        out = {"step": "scale", "formula": "(value - mean) / scale"}
        indices = {"": j, "indicator_": _indicator_index(before, j, n_columns)}
        for prefix, k in indices.items():
            if k is None:
                continue
            out[f"{prefix}mean"] = 0.0 if step.mean_ is None else float(step.mean_[k])
            out[f"{prefix}scale"] = 1.0 if step.scale_ is None else float(step.scale_[k])
        if indices["indicator_"] is not None:
            out["formula"] += (
                "; the missing indicator: (indicator - indicator_mean) / indicator_scale"
            )
        return out
    if isinstance(step, OneHotEncoder):
        return {
            "step": "one_hot",
            "categories": [_plain(c) for c in step.categories_[j]],
            "unknown": "all zeros" if step.handle_unknown == "ignore" else step.handle_unknown,
            "missing": "imputed before (the category 'missing' where it was seen in training)",
        }
    if type(step).__module__.startswith("skinfuse._metadata_steps"):
        return {"step": "check", "what": f"{kind}: validates values, changes nothing"}
    return {"step": kind, "what": "not described: reproduce it from the model's code"}


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _notes(model, part, kind) -> dict:
    notes = []
    if getattr(part, "tta", 1) not in (1, None, "none"):
        notes.append(
            f"the model averages tta={part.tta} views (flips); the graph scores one view: "
            "average its outputs over the flipped images to match"
        )
    if part is not model:
        notes.append(
            f"the graph is the {type(part).__name__} inside {type(model).__name__}: "
            + ("its probabilities, before any calibration or other step of the model"
               if kind == "fusion" else "the image embedding; the metadata preprocessing and the "
               "classifier of the pipeline are not in the graph")
        )  # fmt: skip
    return {"notes": notes}
