"""A plain folder of images, with an optional metadata CSV keyed by image id or file name:
the inputs of ``skinfuse predict --images`` (HAM10000-layout folders: ``load_ham10000``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._columns import CATEGORICAL_METADATA, IMAGE_COLUMN, METADATA_COLUMNS, NUMERIC_METADATA
from ..images import IMAGE_EXTENSIONS

#: Columns of a metadata CSV that name the image (by id, or by file name).
KEY_COLUMNS = ("image_id", "image", "file_name", "filename", "file", IMAGE_COLUMN)


def typed_metadata(frame: pd.DataFrame, columns=METADATA_COLUMNS) -> pd.DataFrame:
    """``columns`` of ``frame`` (missing ones all NaN) typed as the models read them.

    ``age`` is a number (NaN where empty or not a number), ``sex`` and ``localization``
    categories (``"unknown"`` is NaN); any other column holds numbers (float) when every
    value present reads as one, else categories (strings; empty is NaN).
    """
    out = pd.DataFrame(index=frame.index)
    for col in columns:
        values = frame[col] if col in frame.columns else pd.Series(np.nan, index=frame.index)
        numbers = pd.to_numeric(values, errors="coerce")
        present = values.notna() & (values.astype(str).str.strip() != "")
        if col in NUMERIC_METADATA or (
            col not in CATEGORICAL_METADATA and present.any() and numbers[present].notna().all()
        ):
            out[col] = numbers.astype(float)
        else:
            text = values.astype(object)
            unknown = text.isin(["unknown", ""]) | ~present
            out[col] = text.where(~unknown, np.nan).astype(object)
    return out


def read_metadata_csv(csv: Path, columns=METADATA_COLUMNS) -> pd.DataFrame:
    """The metadata CSV indexed by image stem, with ``columns`` (missing -> NaN)."""
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
    if not any(c in meta.columns for c in columns):
        raise ValueError(f"the metadata file {csv} has none of the columns {', '.join(columns)}")
    key = meta[keys[0]].astype(str).map(lambda s: os.path.splitext(os.path.basename(s))[0])
    frame = typed_metadata(meta, columns)
    frame.index = pd.Index(key, name="image_id")
    return frame[~frame.index.duplicated(keep="first")]


def image_files(folder: Path, recursive=False) -> list:
    """The image files in ``folder`` (and its subfolders if ``recursive``), sorted by path;
    hidden files and folders (``.name``) are left out."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p for p in found
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def load_image_folder(
    images: Path, metadata: Path | None = None, *, columns=METADATA_COLUMNS, recursive=False
):
    """``(X, image ids, unmatched)`` for the images in ``images`` (sorted by path; with
    ``recursive``, those of its subfolders too).

    ``X`` has the columns ``image_path, *columns``: the metadata of the CSV ``metadata``
    joined by image id (the file name without extension), or missing values (NaN) without
    one. ``unmatched`` is the number of images without a row in ``metadata`` (``None``
    without it). Raises ``ValueError`` for a folder without images or a CSV that matches
    none of them.
    """
    files = image_files(images, recursive)
    if not files:
        raise ValueError(
            f"no images in {images}: expected files ending in {', '.join(IMAGE_EXTENSIONS)}"
        )
    ids = pd.Index([p.stem for p in files], name="image_id")
    X = pd.DataFrame({IMAGE_COLUMN: [str(p.absolute()) for p in files]}, index=ids)
    unmatched = None
    if metadata is None:
        X = X.join(typed_metadata(X.iloc[:, :0], columns))
    else:
        meta = read_metadata_csv(metadata, columns)
        X = X.join(meta, how="left")
        unmatched = int((~ids.isin(meta.index)).sum())
        if unmatched == len(ids):
            raise ValueError(
                f"none of the {len(ids)} images in {images} has a row in {metadata}; its key "
                "column must hold the image ids (file names without extension) or file names"
            )
    return X.reset_index(drop=True), ids.to_numpy(dtype=object), unmatched
