"""``skinfuse.save``: a model to a zip of a manifest, a skops payload and safetensors weights."""

from __future__ import annotations

import datetime
import json
import os
import platform
import zipfile
from pathlib import Path

from .._utils._sklearn import HasMethods, validate_params
from ._format import (
    _FORMAT_NAME,
    _HISTORIES,
    _MANIFEST,
    _SKOPS,
    _WEIGHTS,
    FORMAT_VERSION,
    _trusted_types,
)
from ._hub import card_options, front_matter
from ._manifest import _VERSIONED, _card_path, _describe, _model_card, _sha256, _version_of
from ._networks import (
    _check_no_torch_left,
    _check_rebuildable,
    _json_safe,
    _stash,
    torch_estimators_in,
)


@validate_params(
    {
        "model": [HasMethods(["get_params"])],
        "path": [str, os.PathLike],
        "metrics": [dict, None],
        "training_data": [dict, None],
        "card": ["boolean", dict],
        "trusted": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def save(model, path, *, metrics=None, training_data=None, card=False, trusted=None):
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
        must use a named backbone: a custom ``nn.Module`` is refused. A network's
        ``callbacks`` and ``checkpoint_dir`` are not stored (the file has ``None``).
    path : str or path-like
        Where to write the file (replaced if it exists), e.g. ``"model.skinfuse"``.
    metrics : dict or None, default=None
        Results to keep with the model, e.g. lesion-grouped cross-validation scores;
        must be JSON-serialisable (NumPy scalars and arrays are converted).
    training_data : dict or None, default=None
        A description of the training data, as :func:`skinfuse.metrics.dataset_summary`
        gives it (``skinfuse train`` records it); ``skinfuse evaluate`` prints the data it
        scores next to it. JSON-serialisable.
    card : bool or dict, default=False
        Also write a Markdown model card next to the file (``path`` with the suffix
        ``.md``): intended use, data, the ``metrics``, limitations. It starts with the YAML
        front matter the Hugging Face Hub reads (licence, tags, datasets, the ``metrics`` as
        its ``model-index``, with their lesion-grouped intervals or spread where they have
        them, intended use); upload it as the repository's ``README.md``. A dict sets
        ``license`` (default ``"other"``: a model inherits the terms of its training data),
        ``datasets`` (Hub ids), further ``tags`` and the ``dataset_name`` of the metrics.
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
    card_settings = card_options(card)
    trusted_names = _trusted_types(trusted)
    metrics = None if metrics is None else _json_safe(metrics, "metrics")
    if training_data is not None:
        training_data = _json_safe(training_data, "training_data")
    if metrics is not None and not isinstance(metrics, dict):
        raise TypeError(
            f"metrics must be a dict such as {{'balanced_accuracy': 0.7}}; got {metrics!r}"
        )
    torch_estimators = torch_estimators_in(model)
    for est in torch_estimators:
        _check_rebuildable(est)

    tensors, histories, records, restore = {}, {}, [], []
    try:
        for i, est in enumerate(torch_estimators):
            # a fit's watchers and its resumable state belong to the training machine,
            # not to the model: the file stores callbacks=None, checkpoint_dir=None
            for attr in ("callbacks", "checkpoint_dir"):
                if getattr(est, attr, None) is not None:
                    restore.append((est, attr, getattr(est, attr)))
                    setattr(est, attr, None)
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
        "training_data": training_data,
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
    if card is not False:
        text = front_matter(manifest, card_settings) + _model_card(model, manifest, path)
        _card_path(path).write_text(text, encoding="utf-8")
    return path
