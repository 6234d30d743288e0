"""Torch copies of fitted scikit-learn steps, so that gradients flow through a pipeline.

:func:`torch_head` turns the steps after a pipeline's features (scalers, feature
selectors, PCA, samplers, and a linear or MLP classifier) into one ``nn.Sequential``
mapping features to class logits; a step without a torch equivalent raises
:class:`NotDifferentiable`. :class:`SklearnHead` runs the steps as they are instead
(no gradient). Imported lazily: this module imports torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class NotDifferentiable(Exception):
    """A pipeline step without a torch equivalent (internal)."""


def _float64_tensor(a):
    return torch.as_tensor(np.array(a, dtype=np.float64))


def to_dense(a):
    """A sparse matrix as a dense array; anything else through ``np.asarray``."""
    return a.toarray() if hasattr(a, "toarray") else np.asarray(a)


class _AffineTransform(nn.Module):
    """``x * scale + shift`` (per feature)."""

    def __init__(self, scale, shift):
        super().__init__()
        self.register_buffer("scale", _float64_tensor(scale))
        self.register_buffer("shift", _float64_tensor(shift))

    def forward(self, x):
        return x * self.scale + self.shift


class _SelectFeatures(nn.Module):
    """Keep the selected features."""

    def __init__(self, index):
        super().__init__()
        self.register_buffer("index", torch.as_tensor(np.asarray(index, dtype=np.int64)))

    def forward(self, x):
        return x.index_select(1, self.index)


class _LinearLogits(nn.Module):
    """``x @ weight.T + bias``; ``binary`` turns one score ``d`` into logits ``[-d/2, d/2]``.

    ``softmax([-d/2, d/2]) = [1 - sigmoid(d), sigmoid(d)]``: the probabilities of a binary
    logistic model, and the gradient of class 0's logit is minus that of class 1.
    """

    def __init__(self, weight, bias, binary=False):
        super().__init__()
        self.register_buffer("weight", _float64_tensor(np.atleast_2d(weight)))
        self.register_buffer("bias", _float64_tensor(np.ravel(bias)))
        self.binary = binary

    def forward(self, x):
        out = x @ self.weight.T + self.bias
        if self.binary:
            return torch.cat([-out / 2, out / 2], dim=1)
        return out


_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid}


class _MLPLogits(nn.Module):
    """A fitted ``MLPClassifier`` up to its last pre-activation (the logits)."""

    def __init__(self, coefs, intercepts, activation, binary):
        super().__init__()
        self.layers = nn.ModuleList(
            _LinearLogits(w.T, b, binary=(binary and i == len(coefs) - 1))
            for i, (w, b) in enumerate(zip(coefs, intercepts))
        )
        self.activation = activation

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1 and self.activation != "identity":
                x = _ACTIVATIONS[self.activation](x)
        return x


def _transformer_module(name, est):
    """A torch module equivalent to ``est.transform`` (None: identity at predict time)."""
    from sklearn.decomposition import PCA
    from sklearn.feature_selection import SelectorMixin
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    if est is None or (isinstance(est, str) and est == "passthrough"):
        return None
    if hasattr(est, "fit_resample"):  # samplers only act in fit
        return None
    if isinstance(est, StandardScaler):
        scale = 1.0 / est.scale_ if est.scale_ is not None else 1.0
        mean = est.mean_ if est.with_mean else 0.0
        return _AffineTransform(
            np.broadcast_to(scale, (est.n_features_in_,)), -np.asarray(mean) * scale
        )
    if isinstance(est, MinMaxScaler) and not est.clip:
        return _AffineTransform(est.scale_, est.min_)
    if isinstance(est, MaxAbsScaler):
        return _AffineTransform(1.0 / est.scale_, np.zeros_like(est.scale_))
    if isinstance(est, SelectorMixin):
        return _SelectFeatures(est.get_support(indices=True))
    if type(est) is PCA:
        weight = est.components_
        if est.whiten:
            weight = weight / np.sqrt(est.explained_variance_)[:, None]
        return _LinearLogits(weight, -est.mean_ @ weight.T)
    raise NotDifferentiable(f"step {name!r} ({type(est).__name__}) has no torch equivalent")


def _classifier_module(name, clf):
    """A torch module mapping features to ``clf``'s logits (softmax: ``predict_proba``)."""
    from sklearn.neural_network import MLPClassifier

    n_classes = len(clf.classes_)
    if isinstance(clf, MLPClassifier):
        if clf.out_activation_ not in ("softmax", "logistic") or clf.activation not in (
            "identity",
            *_ACTIVATIONS,
        ):
            raise NotDifferentiable(f"step {name!r}: unsupported MLPClassifier output")
        return _MLPLogits(clf.coefs_, clf.intercepts_, clf.activation, binary=n_classes == 2)
    coef = getattr(clf, "coef_", None)
    intercept = getattr(clf, "intercept_", None)
    if coef is not None and intercept is not None and hasattr(clf, "decision_function"):
        coef = to_dense(coef)
        rows = 1 if n_classes == 2 else n_classes
        if coef.ndim == 2 and coef.shape[0] == rows and np.size(intercept) in (1, rows):
            intercept = np.broadcast_to(np.ravel(intercept), (rows,))
            return _LinearLogits(coef, intercept, binary=n_classes == 2)
    raise NotDifferentiable(f"step {name!r} ({type(clf).__name__}) has no torch equivalent")


def torch_head(steps):
    """Torch module for the steps after the features (raises NotDifferentiable)."""
    *transforms, (clf_name, clf) = steps
    modules = [m for name, est in transforms if (m := _transformer_module(name, est)) is not None]
    modules.append(_classifier_module(clf_name, clf))
    return nn.Sequential(*modules)


def expects_feature_names(rest):
    """Does the first fitted estimator of the pipeline ``rest`` expect a DataFrame?"""
    for _, est in rest.steps:
        if est is None or isinstance(est, str) or hasattr(est, "fit_resample"):
            continue
        return hasattr(est, "feature_names_in_")
    return False


class SklearnHead(nn.Module):
    """The later pipeline steps as they are (no gradient): log ``predict_proba`` as logits."""

    def __init__(self, rest, names):
        super().__init__()
        self.rest = rest
        self.names = names

    def forward(self, feats):
        import pandas as pd

        values = feats.detach().cpu().numpy()
        if self.names is not None:
            values = pd.DataFrame(values, columns=self.names)
        if hasattr(self.rest, "predict_proba"):
            out = np.log(np.clip(self.rest.predict_proba(values), 1e-12, None))
        else:
            out = np.asarray(self.rest.decision_function(values), dtype=np.float64)
            if out.ndim == 1:
                out = np.stack([-out / 2, out / 2], axis=1)
        return torch.as_tensor(out, dtype=torch.float64, device=feats.device)
