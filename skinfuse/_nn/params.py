"""Parameter constraints shared by the torch-backed estimators (no torch here).

Each estimator's ``_parameter_constraints`` is assembled from these groups plus its
own parameters, so a setting means and validates the same everywhere.
"""

from __future__ import annotations

import os
import re
from numbers import Integral, Real

from .._utils._sklearn import HasMethods, Interval, StrOptions
from .names import BACKBONES, OPTIMIZERS, is_backbone_name


class BackboneName(StrOptions):
    """A built-in backbone name, ``"timm:<model>"`` or ``"hf-hub:<org>/<name>"``."""

    def __init__(self):
        super().__init__(set(BACKBONES))

    def is_satisfied_by(self, val):
        return is_backbone_name(val)

    def __str__(self):
        return (
            f"{super().__str__()}, or a str 'timm:<model name>[.<pretrained tag>]' "
            "or 'hf-hub:<org>/<name>'"
        )


#: The units of a memory size (decimal and binary, any case): ``"512MB"``, ``"2GiB"``.
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def parse_memory(value) -> int | None:
    """Bytes of a memory size: an int (bytes), a str such as ``"512MB"`` or ``"2GiB"``
    (kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB of 1024), or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, Integral) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"a memory size cannot be negative, got {value!r}")
        return int(value)
    match = _SIZE.fullmatch(value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{value!r} is not a memory size: pass a number of bytes (an int), or a str such as "
            "'512MB' or '2GiB' (units: B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


class MemorySize(StrOptions):
    """A memory size as a str: ``"512MB"``, ``"2GiB"`` (see :func:`parse_memory`)."""

    def __init__(self):
        super().__init__({"2GiB"})

    def is_satisfied_by(self, val):
        try:
            return isinstance(val, str) and parse_memory(val) is not None
        except ValueError:
            return False

    def __str__(self):
        return "a str memory size such as '512MB' or '2GiB' (B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"


#: A pretrained CNN: what it is, its weights, the image size it sees.
BACKBONE = {
    "backbone": [BackboneName(), HasMethods(["forward"])],
    "weights": [StrOptions({"DEFAULT"}), str, os.PathLike, None],
    "image_size": [Interval(Integral, 8, None, closed="left")],
}

#: How a network is trained (:class:`.training.TrainingConfig`).
TRAINING = {
    "max_epochs": [Interval(Integral, 0, None, closed="left")],
    "lr": [Interval(Real, 0, None, closed="neither")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "optimizer": [StrOptions(set(OPTIMIZERS)), callable],
    "weight_decay": [Interval(Real, 0, None, closed="left")],
    "random_state": ["random_state"],
}

#: Supervised fine-tuning of a backbone: what is trained, on what, when it stops.
FINE_TUNING = {
    "freeze": [StrOptions({"backbone"}), Interval(Integral, 0, None, closed="left"), None],
    "augment": ["boolean", callable],
    "class_weight": [StrOptions({"balanced", "sqrt"}), dict, None],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "patience": [Interval(Integral, 1, None, closed="left"), None],
    "label_smoothing": [Interval(Real, 0, 1, closed="left")],
    "warmup_epochs": [Interval(Real, 0, None, closed="left")],
    "trainable_blocks": [Interval(Integral, 1, None, closed="left"), None],
    "cached_views": [Interval(Integral, 1, 8, closed="both")],
    "view_jitter": ["boolean"],
    "image_store": [StrOptions({"auto", "memory", "disk"}), None],
    "activation_memory": [Interval(Integral, 0, None, closed="left"), MemorySize(), None],
    "compile": ["boolean"],
}

#: What watches a training run: skorch callbacks, and where it keeps its resumable state.
TRAINING_HOOKS = {
    "callbacks": [list, None],
    "checkpoint_dir": [str, os.PathLike, None],
}

#: Test-time augmentation: the number of fixed views (flips, rotations) averaged.
TTA = {"tta": [Interval(Integral, 1, 8, closed="both")]}

#: Where and how it runs.
RUNTIME = {
    "num_workers": [Interval(Integral, 0, None, closed="left"), None],
    "device": [str],
    "precision": [StrOptions({"auto", "fp32", "bf16"})],
    "verbose": ["verbose"],
}

#: The embedding cache of the encoders.
CACHE = {
    "cache": ["boolean"],
    "cache_dir": [str, os.PathLike, None],
}
