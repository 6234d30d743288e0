"""Shared helpers for the dataset loaders: data home and the returned ``Bunch``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import Bunch

from .._columns import CATEGORICAL_METADATA, IMAGE_COLUMN, METADATA_COLUMNS, NUMERIC_METADATA
from .._utils._sklearn import validate_params

#: Columns of ``Bunch.data``: the model inputs, in this order.
FEATURE_NAMES = [IMAGE_COLUMN, *METADATA_COLUMNS]

#: HAM10000 diagnosis codes (``dx``) and their meaning, in sorted order.
HAM10000_CLASSES = {
    "akiec": "actinic keratoses and intraepithelial carcinoma / Bowen's disease",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesions",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevi",
    "vasc": "vascular lesions",
}


def normalise_metadata(frame: pd.DataFrame, categorical=CATEGORICAL_METADATA) -> pd.DataFrame:
    """Missing clinical values as NaN, in place: ages as floats (an empty or non-numeric age
    is NaN) and ``"unknown"`` in the ``categorical`` columns (object dtype) is NaN."""
    for col in NUMERIC_METADATA:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    for col in categorical:
        values = frame[col].astype(object)
        frame[col] = values.where(values.notna() & (values != "unknown"), np.nan).astype(object)
    return frame


@validate_params({"data_home": [str, os.PathLike, None]}, prefer_skip_nested_validation=True)
def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """Return the folder where skinfuse caches datasets, creating it if needed.

    Parameters
    ----------
    data_home : str or path-like, default=None
        Folder to use. ``None`` uses ``$SKINFUSE_DATA_HOME`` or else
        ``~/skinfuse_data``.

    Returns
    -------
    data_home : pathlib.Path

    Examples
    --------
    >>> import tempfile
    >>> from skinfuse.datasets import get_data_home
    >>> get_data_home(tempfile.mkdtemp()).is_dir()
    True
    """
    if data_home is None:
        data_home = os.environ.get("SKINFUSE_DATA_HOME", Path.home() / "skinfuse_data")
    path = Path(data_home).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def make_bunch(
    frame: pd.DataFrame,
    *,
    descr: str,
    as_frame: bool = True,
    return_X_y: bool = False,
    target_names: list[str] | None = None,
    **extra,
):
    """Build the ``Bunch`` (or ``(X, y)``) that every skinfuse loader returns.

    ``frame`` must hold the columns of :data:`FEATURE_NAMES` plus ``dx``
    (target) and ``lesion_id`` (groups). Extra keyword arguments are added to
    the ``Bunch`` as they are.
    """
    missing = [c for c in [*FEATURE_NAMES, "dx", "lesion_id"] if c not in frame.columns]
    if missing:  # pragma: no cover - programming error inside skinfuse
        raise ValueError(f"frame is missing columns {missing}")
    frame = frame.reset_index(drop=True)
    data = frame[FEATURE_NAMES].copy()
    target = frame["dx"].rename("dx")
    groups = frame["lesion_id"].to_numpy()
    if target_names is None:
        target_names = sorted(target.unique().tolist())
    if not as_frame:
        data = data.to_numpy(dtype=object)
        target = target.to_numpy(dtype=object)
    if return_X_y:
        return data, target
    return Bunch(
        frame=frame if as_frame else None,
        data=data,
        target=target,
        groups=groups,
        target_names=np.asarray(target_names, dtype=object),
        feature_names=list(FEATURE_NAMES),
        DESCR=descr,
        **extra,
    )
