"""What :func:`~skinfuse.explain.grad_cam` explains: a torch view of a fitted model.

Two kinds of models are explained:

* estimators with their own network, through the ``__skinfuse_gradcam__(X)`` protocol
  (see :mod:`skinfuse.explain`): :class:`ProtocolSource`;
* fitted pipelines whose first step holds a CNN image encoder:
  :class:`PipelineSource` builds ``image -> embedder -> [features of the case, the
  image's columns replaced] -> later steps -> class scores``. When every later step
  has a torch equivalent (:mod:`._torch_steps`), the scores are logits that gradients
  flow through; otherwise the later steps run as they are (scikit-learn, no gradient)
  and only gradient-free methods apply.

A source gives ``n`` (cases), ``images`` (uint8, as the model sees them), ``image_size``,
``classes``, ``cam_layer`` (default layer name), ``differentiable`` and ``why_not``, and
``module(rows) -> (module, layer, image_size, classes)`` for a batch of cases.
Imported lazily: this module imports torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..images import load_images
from ._torch_steps import NotDifferentiable, SklearnHead, expects_feature_names, torch_head
from ._utils import n_rows, take_rows

# -- helpers ----------------------------------------------------------------------------


def image_batch(images):
    """uint8 ``(n, H, W, 3)`` -> float32 ``(n, 3, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)


def _image_column_of(model, X):
    """The column of images inside ``X`` for a protocol estimator."""
    if hasattr(X, "columns"):
        column = getattr(model, "image_column", "image_path")
        if column in X.columns:
            return X[[column]]
        if X.shape[1] == 1:
            return X
        raise ValueError(
            f"cannot find the images in X: no column {column!r} among {list(X.columns)}; "
            f"pass X with an {column!r} column of image paths"
        )
    return X


def _check_classes(classes, where):
    classes = np.asarray(classes)
    if classes.ndim != 1 or classes.size < 2:
        raise TypeError(f"{where} must give the class labels (1-D, at least 2); got {classes!r}")
    return classes


def _as_float(a):
    if hasattr(a, "to_numpy"):
        a = a.to_numpy()
    if hasattr(a, "toarray"):
        a = a.toarray()
    return np.asarray(a, dtype=np.float64)


# -- estimators with their own network ----------------------------------------------------


class ProtocolSource:
    """A model implementing ``__skinfuse_gradcam__(X) -> (module, layer, image_size, classes)``."""

    differentiable = True
    why_not = None

    def __init__(self, model, X):
        self.model = model
        self.X = X
        self.n = n_rows(X)
        if self.n == 0:
            raise ValueError("X has 0 rows; grad_cam needs at least one case")
        _, self.cam_layer, self.image_size, self.classes = self.module(np.arange(1))
        self.images, _ = load_images(_image_column_of(model, X), size=self.image_size)

    def module(self, rows):
        """``(module, default layer name, image_size, classes)`` for the cases ``rows``."""
        name = f"{type(self.model).__name__}.__skinfuse_gradcam__"
        out = self.model.__skinfuse_gradcam__(take_rows(self.X, rows))
        if not isinstance(out, tuple) or len(out) != 4:
            raise TypeError(
                f"{name} must return a tuple (module, layer, image_size, classes); got {out!r:.200}"
            )
        module, layer, image_size, classes = out
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name} returned {type(module).__name__} instead of a torch.nn.Module")
        if layer is not None and not isinstance(layer, str):
            raise TypeError(f"{name} must give the CAM layer as a dotted name; got {layer!r}")
        return module, layer, int(image_size), _check_classes(classes, name)

    def layer_root(self, module):
        return module


# -- pipelines --------------------------------------------------------------------------


class _PipelineModule(nn.Module):
    """image -> embedder -> features of the case with the image's columns replaced -> head."""

    def __init__(self, embedder, fixed, start, stop, head):
        super().__init__()
        self.embedder = embedder
        self.register_buffer("fixed", fixed)
        self.start, self.stop = start, stop
        self.head = head

    def forward(self, x):
        emb = self.embedder(x).to(self.fixed.dtype)
        fixed = self.fixed
        if fixed.shape[0] != emb.shape[0]:
            if fixed.shape[0] != 1:
                raise ValueError(
                    f"batch of {emb.shape[0]} images for {fixed.shape[0]} cases; pass one image "
                    "per case (or build the module for a single case)"
                )
            fixed = fixed.expand(emb.shape[0], -1)
        feats = torch.cat([fixed[:, : self.start], emb, fixed[:, self.stop :]], dim=1)
        return self.head(feats)


def encoder_cam(encoder):
    """``(embedder, layer name, image_size)`` of a CNN image encoder, or None.

    Encoders implement ``__skinfuse_gradcam_embedder__()`` or carry ``embedder_`` +
    ``cam_layer_`` (``FrozenCNNEncoder``, ``FineTunedCNNEncoder``,
    ``ConvAutoencoderEncoder``).
    """
    if hasattr(encoder, "__skinfuse_gradcam_embedder__"):
        embedder, layer, image_size = encoder.__skinfuse_gradcam_embedder__()
        return embedder, layer, int(image_size)
    embedder = getattr(encoder, "embedder_", None)
    if not (isinstance(embedder, nn.Module) and hasattr(encoder, "cam_layer_")):
        return None
    return embedder, _name_inside(embedder, encoder), int(encoder.image_size)


def _name_inside(embedder, encoder):
    """``cam_layer_`` as a name inside ``embedder_``.

    ``FrozenCNNEncoder.cam_layer_`` is one; ``FineTunedCNNEncoder.cam_layer_`` names the
    layer inside ``module_`` (embedder + head): find the same module inside ``embedder_``.
    """
    layer = encoder.cam_layer_
    if layer is None:
        return None
    try:
        embedder.get_submodule(layer)
        return layer
    except AttributeError:
        pass
    owner = getattr(encoder, "module_", None)
    if isinstance(owner, nn.Module):
        try:
            target = owner.get_submodule(layer)
        except AttributeError:
            target = None
        for name, module in embedder.named_modules():
            if module is target:
                return name
    return layer  # grad_cam reports it as not found


def _select_columns(X, columns):
    if isinstance(columns, str):
        columns = [columns]
    if hasattr(X, "iloc"):
        cols = list(np.atleast_1d(columns))
        if all(isinstance(c, str) for c in cols):
            return X[cols]
        if all(isinstance(c, (int, np.integer)) for c in cols):
            return X.iloc[:, cols]
    elif isinstance(columns, (list, tuple, np.ndarray)) and all(
        isinstance(c, (int, np.integer)) for c in columns
    ):
        return np.asarray(X, dtype=object)[:, list(columns)]
    raise ValueError(
        f"cannot select the image column {columns!r} of the ColumnTransformer; grad_cam "
        "supports columns given by name or position"
    )


class PipelineSource:
    """A fitted (imblearn or sklearn) Pipeline whose first step holds a CNN image encoder."""

    def __init__(self, model, X):
        from sklearn.compose import ColumnTransformer

        self.model = model
        self.n = n_rows(X)
        if self.n == 0:
            raise ValueError("X has 0 rows; grad_cam needs at least one case")
        first_name, first = model.steps[0]
        if isinstance(first, ColumnTransformer):
            found = [
                (name, trans, cols, cam)
                for name, trans, cols in first.transformers_
                if not isinstance(trans, str) and (cam := encoder_cam(trans)) is not None
            ]
            if len(found) > 1:
                names = [f[0] for f in found]
                raise ValueError(f"the model has {len(found)} image encoders {names}; grad_cam "
                                 "explains a model with one")  # fmt: skip
            if found:
                name, _, cols, cam = found[0]
                image_slice = first.output_indices_[name]
                fixed = _as_float(first.transform(X))
                images_in = _select_columns(X, cols)
        else:
            found = [cam] if (cam := encoder_cam(first)) is not None else []
            if found:
                fixed = np.zeros((self.n, 0))
                image_slice = slice(0, 0)
                images_in = X
                real = _as_float(first.transform(X))  # to check the head (cached embeddings)
        if not found:
            raise ValueError(
                f"the model has no CNN image encoder to explain: its first step {first_name!r} "
                f"({type(first).__name__}) holds none (a metadata-only model?). grad_cam needs "
                "a pipeline with a FrozenCNNEncoder, FineTunedCNNEncoder or "
                "ConvAutoencoderEncoder, or an estimator with its own network (see "
                "skinfuse.explain)"
            )
        self.embedder, self.cam_layer, self.image_size = cam
        self.start, self.stop = image_slice.start, image_slice.stop
        self.fixed = fixed
        self.classes = np.asarray(model.classes_)
        self.images, _ = load_images(images_in, size=self.image_size)
        self.rest = model[1:]
        self.names = first.get_feature_names_out() if expects_feature_names(self.rest) else None
        try:
            self.head = torch_head(self.rest.steps)
            self._check_head(fixed if isinstance(first, ColumnTransformer) else real)
            self.differentiable, self.why_not = True, None
        except NotDifferentiable as exc:
            self.head = SklearnHead(self.rest, self.names)
            self.differentiable, self.why_not = False, str(exc)

    def _check_head(self, fixed):
        """The torch head must reproduce the later steps' scores on the real features."""
        import pandas as pd

        with torch.no_grad():
            logits = self.head(torch.as_tensor(fixed)).numpy()
        values = fixed if self.names is None else pd.DataFrame(fixed, columns=self.names)
        if hasattr(self.rest, "decision_function"):
            ref = np.asarray(self.rest.decision_function(values), dtype=np.float64)
            got = logits[:, 1] - logits[:, 0] if ref.ndim == 1 else logits
        else:
            ref = self.rest.predict_proba(values)
            got = torch.softmax(torch.as_tensor(logits), dim=1).numpy()
        scale = max(1.0, float(np.abs(ref).max()))
        if got.shape != ref.shape or not np.allclose(got, ref, rtol=1e-6, atol=1e-8 * scale):
            raise NotDifferentiable(
                f"the torch copy of the steps after {self.model.steps[0][0]!r} does not "
                "reproduce the pipeline's scores"
            )

    def module(self, rows):
        device = next(self.embedder.parameters()).device
        fixed = torch.as_tensor(self.fixed[np.asarray(rows)], device=device)
        module = _PipelineModule(self.embedder, fixed, self.start, self.stop, self.head.to(device))
        return module, self.cam_layer, self.image_size, self.classes

    def layer_root(self, module):
        return module.embedder
