"""Which dataset layout a folder holds, and loading it with its preset: the data of
``skinfuse train / evaluate / predict --data``."""

from __future__ import annotations

import os
from pathlib import Path

from .._utils._sklearn import StrOptions, validate_params
from ._derm7pt import CSV_NAMES as DERM7PT_CSVS
from ._derm7pt import load_derm7pt
from ._ham10000 import load_ham10000
from ._isic import ISIC2019_FILES, ISIC2020_CSVS, load_isic2019, load_isic2020
from ._pad_ufes20 import CSV_NAME as PAD_CSV
from ._pad_ufes20 import load_pad_ufes20
from ._presets import first_existing, header

__all__ = ["LAYOUTS", "detect_layout", "load_lesion_folder"]

#: The folder layouts skinfuse reads, and the files each expects.
LAYOUTS = {
    "ham10000": "HAM10000_metadata.csv + HAM10000_images_part_1/ and _part_2/ (official), or "
    "metadata.csv with columns lesion_id, image_id, dx + images/ (flat)",
    "derm7pt": "meta.csv (or meta/meta.csv) with columns diagnosis, derm, location, sex + "
    "images/<derm path>",
    "isic2019": "ISIC_2019_Training_GroundTruth.csv (+ ISIC_2019_Training_Metadata.csv) + "
    "ISIC_2019_Training_Input/",
    "isic2020": "train.csv (or ISIC_2020_Training_GroundTruth[_v2].csv) with columns "
    "image_name, patient_id, diagnosis + train/ (or jpeg/train/, ISIC_2020_Training_JPEG/)",
    "pad_ufes20": "metadata.csv with columns img_id, diagnostic, lesion_id, patient_id + "
    "images/ (or imgs_part_*/)",
}

_LOADERS = {
    "ham10000": load_ham10000,
    "derm7pt": load_derm7pt,
    "isic2019": load_isic2019,
    "isic2020": load_isic2020,
    "pad_ufes20": load_pad_ufes20,
}


def _has_columns(csv: Path | None, *columns) -> bool:
    return csv is not None and csv.is_file() and set(columns) <= set(header(csv))


def _detected(root: Path) -> list[str]:
    found = []
    if (root / "HAM10000_metadata.csv").is_file() or _has_columns(
        root / "metadata.csv", "image_id", "dx"
    ):
        found.append("ham10000")
    if _has_columns(first_existing(root, DERM7PT_CSVS), "derm", "diagnosis"):
        found.append("derm7pt")
    if (root / ISIC2019_FILES["ground_truth"]).is_file():
        found.append("isic2019")
    if _has_columns(first_existing(root, ISIC2020_CSVS), "image_name"):
        found.append("isic2020")
    if _has_columns(root / PAD_CSV, "img_id", "diagnostic"):
        found.append("pad_ufes20")
    return found


def _no_layout_message(root) -> str:
    lines = "; ".join(f"{name}: {files}" for name, files in LAYOUTS.items())
    return (
        f"no known dataset layout in {root}. The layouts and the files each expects: {lines}. "
        "For another layout, load it in Python with skinfuse.datasets.load_lesion_table."
    )


@validate_params({"data_home": [str, os.PathLike]}, prefer_skip_nested_validation=True)
def detect_layout(data_home) -> str:
    """The name of the dataset layout in a folder (a key of :data:`LAYOUTS`).

    Detected by the files at the top of the folder (and, for a ``metadata.csv``, by its
    header: ``image_id, dx`` is HAM10000, ``img_id, diagnostic`` PAD-UFES-20).

    Parameters
    ----------
    data_home : str or path-like
        The folder.

    Returns
    -------
    layout : str
        ``"ham10000"``, ``"derm7pt"``, ``"isic2019"``, ``"isic2020"`` or ``"pad_ufes20"``.

    Raises
    ------
    ValueError
        If the folder is missing or holds no known layout; the message lists the layouts
        and the files each expects.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skinfuse.datasets import detect_layout
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "metadata.csv").write_text("patient_id,lesion_id,img_id,diagnostic\\n")
    >>> detect_layout(folder)
    'pad_ufes20'
    """
    root = Path(data_home).expanduser()
    if not root.is_dir():
        raise ValueError(f"data folder not found: {root}; pass an existing folder")
    found = _detected(root)
    if not found:
        raise ValueError(_no_layout_message(root))
    return found[0]


@validate_params(
    {
        "data_home": [str, os.PathLike],
        "layout": [StrOptions(set(LAYOUTS)), None],
        "as_frame": ["boolean"],
        "return_X_y": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_lesion_folder(data_home, *, layout=None, as_frame=True, return_X_y=False):
    """Load a folder in any known layout with its preset, detecting the layout if not given.

    Parameters
    ----------
    data_home : str or path-like
        The folder.
    layout : {"ham10000", "derm7pt", "isic2019", "isic2020", "pad_ufes20"}, default=None
        Its layout; ``None`` detects it (:func:`detect_layout`).
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame and ``target`` a Series; otherwise object ndarrays.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`load_ham10000`, plus ``layout`` (the layout's name).
    (data, target) : tuple if ``return_X_y`` is True

    Examples
    --------
    With Derm7pt in ``path/to/derm7pt`` (skipped as a doctest: it needs the real images):

    >>> from skinfuse.datasets import load_lesion_folder
    >>> derm = load_lesion_folder("path/to/derm7pt")  # doctest: +SKIP
    >>> derm.layout, derm.data.shape  # doctest: +SKIP
    ('derm7pt', (987, 4))
    """
    if layout is None:
        layout = detect_layout(data_home)
    result = _LOADERS[layout](data_home, as_frame=as_frame, return_X_y=return_X_y)
    if not return_X_y:
        result.layout = layout
    return result
