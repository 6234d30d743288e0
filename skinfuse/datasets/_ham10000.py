"""Load HAM10000 from a local folder in one of its standard layouts."""

from __future__ import annotations

import os
from pathlib import Path

from .._utils._sklearn import validate_params
from ._base import HAM10000_CLASSES
from ._table import TableSpec, read_lesion_table

__all__ = ["load_ham10000"]

_CLASS_LINES = "\n".join(f"- ``{k}``: {v}" for k, v in HAM10000_CLASSES.items())

DESCR = f"""\
.. _ham10000_dataset:

HAM10000 dermatoscopic images
-----------------------------

"Human Against Machine with 10000 training images": 10,015 dermatoscopic images
of pigmented skin lesions (600x450 JPEG in the official release) from two sites,
with per-image metadata. Several images can show the same lesion (same
``lesion_id``): every train/test split must be grouped by ``lesion_id``
(``Bunch.groups``), or the scores leak.

**Target** (``dx``), 7 classes:

{_CLASS_LINES}

**Inputs** (``Bunch.data``): ``image_path`` (absolute path of the JPEG), ``age``
(years, float), ``sex`` and ``localization`` (strings). The value ``"unknown"``
in ``sex`` and ``localization`` and an empty ``age`` become missing values (NaN),
so that imputers see them as missing.

**Not an input**: ``dx_type`` (how the diagnosis was confirmed: histo,
follow_up, consensus, confocal) is derived from the label; it stays in
``Bunch.frame`` for analysis only and must never be fed to a model.

**Citation**: Tschandl P., Rosendahl C., Kittler H. "The HAM10000 dataset, a large
collection of multi-source dermatoscopic images of common pigmented skin lesions."
Scientific Data 5, 180161 (2018). doi:10.1038/sdata.2018.161.
Distributed through the Harvard Dataverse, doi:10.7910/DVN/DBW86T.

**Licence**: Creative Commons Attribution-NonCommercial 4.0 International
(CC BY-NC 4.0). Non-commercial use only; cite the paper above.
"""

_OFFICIAL_CSV = "HAM10000_metadata.csv"
_OFFICIAL_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2")
_FLAT_CSV = "metadata.csv"
_FLAT_DIR = "images"


def _find_layout(root: Path) -> tuple[Path, list[Path]]:
    """Return (metadata csv, image folders) for the layout found in ``root``."""
    if (root / _OFFICIAL_CSV).is_file():
        dirs = [root / d for d in _OFFICIAL_DIRS if (root / d).is_dir()]
        if not dirs:
            raise ValueError(
                f"{root} has {_OFFICIAL_CSV} but none of the image folders "
                f"{', '.join(_OFFICIAL_DIRS)}; unpack HAM10000_images_part_1.zip and "
                "HAM10000_images_part_2.zip there (or use fetch_ham10000)."
            )
        return root / _OFFICIAL_CSV, dirs
    if (root / _FLAT_CSV).is_file():
        if not (root / _FLAT_DIR).is_dir():
            raise ValueError(
                f"{root} has {_FLAT_CSV} but no {_FLAT_DIR}/ folder of images; "
                f"put the images in {root / _FLAT_DIR}."
            )
        return root / _FLAT_CSV, [root / _FLAT_DIR]
    raise ValueError(
        f"no HAM10000 metadata found in {root}: expected either the official layout "
        f"({_OFFICIAL_CSV} + {'/, '.join(_OFFICIAL_DIRS)}/) or the flat layout "
        f"({_FLAT_CSV} + {_FLAT_DIR}/). Download it with skinfuse.datasets.fetch_ham10000()."
    )


@validate_params(
    {"data_home": [str, os.PathLike], "as_frame": ["boolean"], "return_X_y": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def load_ham10000(data_home, *, as_frame: bool = True, return_X_y: bool = False):
    """Load HAM10000 from a local folder.

    Two layouts are recognised:

    - the official one: ``HAM10000_metadata.csv`` with the images in
      ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``;
    - a flat one: ``metadata.csv`` with the images in ``images/``.

    Images are named ``<image_id>.jpg`` (any extension in
    :data:`skinfuse.images.IMAGE_EXTENSIONS`, in subfolders too, matched without regard to
    case). They are not decoded here. This is :func:`load_lesion_table` with HAM10000's
    columns (``dx_type`` is not required).

    Parameters
    ----------
    data_home : str or path-like
        The folder holding the dataset.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame and ``target`` a Series; otherwise
        object ndarrays (and ``frame`` is None).
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : sklearn.utils.Bunch
        ``frame`` (all metadata columns + ``image_path``), ``data`` (columns
        ``image_path, age, sex, localization``), ``target`` (``dx``), ``groups``
        (``lesion_id``, for grouped splitters), ``target_names``,
        ``feature_names``, ``DESCR`` (description, citation and licence).
        ``"unknown"`` sex/localization and empty ages are NaN. ``dx_type`` is in
        ``frame`` only: it is derived from the label, never use it as input.
    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    ValueError
        If the folder has neither layout, the metadata file is empty or not a
        CSV, lacks columns, has rows without an ``image_id``, or images listed
        in the metadata are missing. The message names the file.

    Warns
    -----
    UserWarning
        If an ``image_id`` is listed more than once: the first row is kept,
        the repeats are dropped, and the warning names them.

    Examples
    --------
    With the full official release unpacked in ``path/to/ham10000`` (skipped as a
    doctest: it needs the 10,015 real images on disk):

    >>> from skinfuse.datasets import load_ham10000
    >>> ham = load_ham10000("path/to/ham10000")  # doctest: +SKIP
    >>> ham.data.shape, ham.target_names.tolist()  # doctest: +SKIP
    ((10015, 4), ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc'])
    """
    root = Path(data_home).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"HAM10000 folder not found: {root}. Pass the folder that holds the metadata "
            "CSV and images, or download the data with skinfuse.datasets.fetch_ham10000()."
        )
    csv, dirs = _find_layout(root)
    spec = TableSpec(image_column="image_id", label_column="dx", group_column="lesion_id")
    return read_lesion_table(
        csv, dirs, spec, descr=DESCR, what="HAM10000 metadata file", as_frame=as_frame,
        return_X_y=return_X_y,
    )  # fmt: skip
