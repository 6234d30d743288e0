"""A plain folder of images, with an optional metadata CSV keyed by image id or file name:
the inputs of ``skinfuse predict --images`` (HAM10000-layout folders: ``load_ham10000``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._columns import IMAGE_COLUMN, METADATA_COLUMNS
from ..images import IMAGE_EXTENSIONS
from ._base import normalise_metadata

#: Columns of a metadata CSV that name the image (by id, or by file name).
KEY_COLUMNS = ("image_id", "image", "file_name", "filename", "file", IMAGE_COLUMN)


def read_metadata_csv(csv: Path) -> pd.DataFrame:
    """The metadata CSV indexed by image stem, with the metadata columns (missing -> NaN)."""
    try:
        meta = pd.read_csv(csv, dtype=str, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"cannot read the metadata file {csv}: {reason}") from None
    keys = [c for c in KEY_COLUMNS if c in meta.columns]
    if not keys:
        raise ValueError(
            f"the metadata file {csv} has no column naming the image; add one of "
            f"{', '.join(KEY_COLUMNS)} (the image id or its file name)"
        )
    if not any(c in meta.columns for c in METADATA_COLUMNS):
        raise ValueError(
            f"the metadata file {csv} has none of the columns {', '.join(METADATA_COLUMNS)}"
        )
    key = meta[keys[0]].astype(str).map(lambda s: os.path.splitext(os.path.basename(s))[0])
    frame = pd.DataFrame(index=pd.Index(key, name="image_id"))
    for col in METADATA_COLUMNS:
        values = meta[col].to_numpy(dtype=object) if col in meta.columns else np.nan
        frame[col] = values
    normalise_metadata(frame)
    return frame[~frame.index.duplicated(keep="first")]


def load_image_folder(images: Path, metadata: Path | None = None):
    """``(X, image ids, unmatched)`` for the images in ``images`` (sorted by name).

    ``X`` has the columns ``image_path, age, sex, localization``: the metadata of the CSV
    ``metadata`` joined by image id, or missing values (NaN) without one. ``unmatched`` is
    the number of images without a row in ``metadata`` (``None`` without it). Raises
    ``ValueError`` for a folder without images or a CSV that matches none of them.
    """
    files = sorted(
        p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )
    if not files:
        raise ValueError(
            f"no images in {images}: expected files ending in {', '.join(IMAGE_EXTENSIONS)}"
        )
    ids = pd.Index([p.stem for p in files], name="image_id")
    X = pd.DataFrame({IMAGE_COLUMN: [str(p.absolute()) for p in files]}, index=ids)
    unmatched = None
    if metadata is None:
        for col in METADATA_COLUMNS:
            X[col] = np.nan
        normalise_metadata(X)
    else:
        meta = read_metadata_csv(metadata)
        X = X.join(meta, how="left")
        unmatched = int((~ids.isin(meta.index)).sum())
        if unmatched == len(ids):
            raise ValueError(
                f"none of the {len(ids)} images in {images} has a row in {metadata}; its key "
                "column must hold the image ids (file names without extension) or file names"
            )
    return X.reset_index(drop=True), ids.to_numpy(dtype=object), unmatched
