"""skinfuse: scikit-learn compatible multi-modal skin lesion classification.

Dermoscopic images plus clinical metadata (age, sex, lesion location), with
image encoders that are scikit-learn transformers, fusion pipelines built on
imbalanced-learn, and explanations of what the models looked at.

Submodules are imported lazily, so ``import skinfuse`` is fast and does not
import torch. ``skinfuse.save(model, path)`` and ``skinfuse.load(path)`` write and read
model files that open without running code (no pickle).
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0.dev0"

_SUBMODULES = (
    "calibration",
    "conformal",
    "datasets",
    "encoders",
    "explain",
    "fusion",
    "images",
    "imbalance",
    "metadata",
    "metrics",
    "pipeline",
    "recipes",
)

# functions imported on first use: name -> private module holding it
_FUNCTIONS = {
    "save": "_model_files",
    "load": "_model_files",
    "export_onnx": "_export",
    "config_context": "_config",
    "get_config": "_config",
    "set_config": "_config",
}

__all__ = [
    "__version__",
    "config_context",
    "export_onnx",
    "get_config",
    "load",
    "save",
    "set_config",
    "show_versions",
    *_SUBMODULES,
]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module 'skinfuse' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


def show_versions() -> dict:
    """Print and return the versions of skinfuse, Python, its dependencies and the hardware.

    Returns
    -------
    info : dict
        ``{"skinfuse": ..., "python": ..., "platform": ..., "<package>": version or None,
        "cuda": ...}``; benchmarks store it with their results.
    """
    import platform
    import sys
    from importlib.metadata import PackageNotFoundError, version

    info = {
        "skinfuse": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": __import__("os").cpu_count(),
    }
    for pkg in (
        "numpy", "pandas", "scikit-learn", "imbalanced-learn", "torch", "torchvision",
        "timm", "skorch", "shap", "pillow", "matplotlib", "grad-cam", "distributed", "onnxruntime",
    ):  # fmt: skip
        try:
            info[pkg] = version(pkg)
        except PackageNotFoundError:
            info[pkg] = None
    try:
        import torch

        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        info["cuda"] = None
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:>{width}}: {value}")
    return info
