"""Process-wide settings: :func:`set_config`, :func:`get_config`, :func:`config_context`.

As scikit-learn's own (``sklearn.set_config``): settings that choose *how* something is
computed, not *what* a model is, so they are not estimator parameters. They hold per
thread; a process started by joblib or Dask begins with the defaults.
"""

from __future__ import annotations

import contextlib
import threading

#: What runs frozen layers whose outputs are cached, on a CPU (see :func:`set_config`).
ENGINES = ("auto", "torch", "onnxruntime")

_DEFAULTS = {"engine": "auto"}
_local = threading.local()


def _settings() -> dict:
    if not hasattr(_local, "settings"):
        _local.settings = dict(_DEFAULTS)
    return _local.settings


def get_config() -> dict:
    """The current values of the settings :func:`set_config` changes.

    Returns
    -------
    config : dict
        ``{"engine": ...}``.

    Examples
    --------
    >>> import skinfuse
    >>> skinfuse.get_config()["engine"]
    'auto'
    """
    return dict(_settings())


def set_config(engine=None) -> None:
    """Change process-wide settings (for this thread); ``None`` leaves a setting as it is.

    Parameters
    ----------
    engine : {"auto", "torch", "onnxruntime"}, default=None
        What computes, on a CPU, the networks whose outputs skinfuse caches: the
        embeddings of fitted encoders (``transform``) and the frozen trunk's activations of
        partial fine-tuning (``trainable_blocks=k``: computed once per image and view
        before training, and at prediction). ``"onnxruntime"`` exports the network to
        ONNX in memory, once per process and network (about ten seconds for
        EfficientNet-Lite0), and runs it with onnxruntime, about twice as fast as PyTorch
        on a CPU (docs/results.md; needs ``pip install "skinfuse[onnx]"``); ``"torch"``
        runs it with PyTorch; ``"auto"`` (the default) uses onnxruntime where it is
        installed, the network runs in fp32 on a CPU and at least 1,024 image views are
        asked for at once (the export then pays for itself), PyTorch elsewhere (GPUs,
        bf16, a few images). The two agree to about 1e-5; their caches are kept apart.
        Training, Grad-CAM and the rest of prediction run in PyTorch.

    Examples
    --------
    >>> import skinfuse
    >>> with skinfuse.config_context(engine="torch"):
    ...     skinfuse.get_config()["engine"]
    'torch'
    """
    if engine is not None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}; got {engine!r}")
        _settings()["engine"] = engine


@contextlib.contextmanager
def config_context(**settings):
    """The settings of :func:`set_config` inside a ``with`` block; restored after it.

    Parameters
    ----------
    **settings
        As :func:`set_config`'s parameters.
    """
    old = get_config()
    set_config(**settings)
    try:
        yield
    finally:
        _settings().update(old)
