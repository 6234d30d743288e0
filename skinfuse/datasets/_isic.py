"""Load the ISIC 2019 and ISIC 2020 challenge training sets from a local folder."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .._utils._sklearn import validate_params
from ._files import read_csv_table
from ._maps import LABEL_MAPS, SEX_MAP, SITE_MAPS
from ._presets import PRESET_CONSTRAINTS, check_root, fill_preset_doc, first_existing, resolve_map
from ._table import TableSpec, read_lesion_table

__all__ = ["load_isic2019", "load_isic2020"]

_LICENCE = """\
**Licence**: Creative Commons Attribution-NonCommercial 4.0 (CC BY-NC 4.0), as published by
the ISIC Archive. Non-commercial use only; cite the papers above."""

DESCR_2019 = f"""\
.. _isic2019_dataset:

ISIC 2019 challenge training set
--------------------------------

25,331 dermoscopic images (HAM10000, BCN20000 and the ISIC 2017 images, so it overlaps
HAM10000: never test a HAM10000-trained model on it without removing those) with one-hot
diagnoses ``MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK`` and metadata (``age_approx``,
``anatom_site_general``, ``lesion_id``, ``sex``).

**Target** through ``LABEL_MAPS["isic2019"]``: ``AK`` is ``akiec``; ``SCC`` (squamous cell
carcinoma) is ``akiec`` too, by choice: HAM10000's ``akiec`` holds actinic keratoses and
intraepithelial carcinoma (Bowen's disease), not invasive SCC, but it is the nearest class;
map ``SCC`` to ``None`` to drop those images. ``UNK`` is dropped.

**Groups**: ``lesion_id`` where given; the images without one are each their own group
(with a warning: grouped splits may leak).

**Citation**: Tschandl P. et al., Scientific Data 5, 180161 (2018),
doi:10.1038/sdata.2018.161; Codella N. et al., "Skin Lesion Analysis Toward Melanoma
Detection: A Challenge at ISBI 2017", arXiv:1710.05006; Combalia M. et al., "BCN20000:
Dermoscopic Lesions in the Wild", arXiv:1908.02288.

{_LICENCE}
"""

DESCR_2020 = f"""\
.. _isic2020_dataset:

ISIC 2020 (SIIM-ISIC melanoma) challenge training set
-----------------------------------------------------

33,126 dermoscopic images of 2,056 patients with ``patient_id``, ``sex``, ``age_approx``,
``anatom_site_general_challenge``, ``diagnosis``, ``benign_malignant`` and ``target``.

**Target**: ``diagnosis`` through ``LABEL_MAPS["isic2020"]``. Most benign images have the
diagnosis ``unknown``: they have no HAM10000 class and are dropped (with a warning), which
leaves nevi, melanomas and benign keratoses. For the benign/malignant task, call
:func:`load_lesion_table` with ``label_column="benign_malignant"``.

**Groups**: ``lesion_id`` where the table has it (the ISIC Archive's ground truth v2),
else ``patient_id`` (stricter: every image of a patient on one side).

**Citation**: Rotemberg V. et al. "A patient-centric dataset of images and metadata for
identifying melanomas using clinical context." Scientific Data 8, 34 (2021).
doi:10.1038/s41597-021-00815-z. Dataset doi:10.34970/2020-ds01.

{_LICENCE}
"""

ISIC2019_FILES = {
    "ground_truth": "ISIC_2019_Training_GroundTruth.csv",
    "metadata": "ISIC_2019_Training_Metadata.csv",
    "images": "ISIC_2019_Training_Input",
}
ISIC2020_CSVS = (
    "train.csv",
    "ISIC_2020_Training_GroundTruth_v2.csv",
    "ISIC_2020_Training_GroundTruth.csv",
)
ISIC2020_IMAGE_DIRS = ("train", "jpeg/train", "ISIC_2020_Training_JPEG")


def _one_hot_labels(truth: pd.DataFrame, classes, csv) -> pd.Series:
    """The name of the one column set to 1 in each row of ISIC 2019's ground truth."""
    columns = [c for c in classes if c in truth.columns]
    if "image" not in truth.columns or not columns:
        raise ValueError(
            f"{csv} is not ISIC 2019's ground truth: expected the columns image, "
            f"{', '.join(classes)}; it has {list(truth.columns)}"
        )
    values = truth[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isclose(np.nan_to_num(values, nan=-1.0), 1.0).sum(axis=1) == 1)
    if len(bad):
        lines = ", ".join(str(i + 2) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ValueError(
            f"{len(bad)} rows of {csv} do not have exactly one diagnosis column set to 1 "
            f"(lines {lines}); fix or re-download the ground truth"
        )
    return pd.Series(np.asarray(columns, dtype=object)[values.argmax(axis=1)], index=truth.index)


@validate_params(PRESET_CONSTRAINTS, prefer_skip_nested_validation=True)
@fill_preset_doc("isic2019")
def load_isic2019(data_home, *, label_map=None, site_map=None, as_frame=True, return_X_y=False):
    """Load the ISIC 2019 challenge training set from a local folder.

    The folder holds ``ISIC_2019_Training_GroundTruth.csv`` (one-hot diagnoses),
    ``ISIC_2019_Training_Metadata.csv`` (``age_approx``, ``anatom_site_general``,
    ``lesion_id``, ``sex``; optional: without it the metadata are missing values and each
    image is its own group) and the images in ``ISIC_2019_Training_Input/``.

    Parameters
    ----------
    data_home : str or path-like
        The folder holding the files above.
    %(preset_parameters)s

    Returns
    -------
    %(preset_returns)s

    Examples
    --------
    >>> from skinfuse.datasets import load_isic2019
    >>> isic = load_isic2019("path/to/isic2019")  # doctest: +SKIP
    """
    root = check_root(data_home, "ISIC 2019")
    csv = root / ISIC2019_FILES["ground_truth"]
    images = root / ISIC2019_FILES["images"]
    if not csv.is_file() or not images.is_dir():
        raise ValueError(
            f"no ISIC 2019 layout in {root}: expected {ISIC2019_FILES['ground_truth']}, "
            f"{ISIC2019_FILES['images']}/ and (optional) {ISIC2019_FILES['metadata']}"
        )
    label_map = resolve_map(label_map, LABEL_MAPS, "isic2019")
    truth = read_csv_table(csv, what="ISIC 2019 ground truth")
    table = pd.DataFrame(
        {"image": truth["image"], "diagnosis": _one_hot_labels(truth, list(label_map), csv)}
    )
    meta_csv = root / ISIC2019_FILES["metadata"]
    metadata, group = {"age": None, "sex": None, "localization": None}, None
    if meta_csv.is_file():
        meta = read_csv_table(meta_csv, what="ISIC 2019 metadata file")
        table = table.merge(meta, on="image", how="left", validate="one_to_one")
        metadata = {"age": "age_approx", "sex": "sex", "localization": "anatom_site_general"}
        metadata = {k: v if v in table.columns else None for k, v in metadata.items()}
        group = "lesion_id" if "lesion_id" in table.columns else None
    spec = TableSpec(
        image_column="image",
        label_column="diagnosis",
        group_column=group,
        metadata_columns=metadata,
        label_map=label_map,
        site_map=resolve_map(site_map, SITE_MAPS, "isic2019"),
        sex_map=SEX_MAP,
    )
    return read_lesion_table(
        table, images, spec, descr=DESCR_2019, source=str(csv), as_frame=as_frame,
        return_X_y=return_X_y,
    )  # fmt: skip


@validate_params(PRESET_CONSTRAINTS, prefer_skip_nested_validation=True)
@fill_preset_doc("isic2020")
def load_isic2020(data_home, *, label_map=None, site_map=None, as_frame=True, return_X_y=False):
    """Load the ISIC 2020 (SIIM-ISIC melanoma) challenge training set from a local folder.

    The folder holds ``train.csv`` (Kaggle's layout; or the ISIC Archive's
    ``ISIC_2020_Training_GroundTruth_v2.csv`` / ``ISIC_2020_Training_GroundTruth.csv``) with
    the columns ``image_name, patient_id, sex, age_approx, anatom_site_general_challenge,
    diagnosis``, and the JPEG images in ``train/``, ``jpeg/train/`` or
    ``ISIC_2020_Training_JPEG/``. Images whose diagnosis is ``unknown`` are dropped with a
    ``UserWarning`` (no HAM10000 class).

    Parameters
    ----------
    data_home : str or path-like
        The folder holding the files above.
    %(preset_parameters)s

    Returns
    -------
    %(preset_returns)s

    Examples
    --------
    >>> from skinfuse.datasets import load_isic2020
    >>> isic = load_isic2020("path/to/isic2020")  # doctest: +SKIP
    """
    root = check_root(data_home, "ISIC 2020")
    csv = first_existing(root, ISIC2020_CSVS)
    images = first_existing(root, ISIC2020_IMAGE_DIRS, kind="dir")
    if csv is None or images is None:
        raise ValueError(
            f"no ISIC 2020 layout in {root}: expected one of {', '.join(ISIC2020_CSVS)} and "
            f"the images in one of {', '.join(d + '/' for d in ISIC2020_IMAGE_DIRS)}"
        )
    table = read_csv_table(csv, what="ISIC 2020 table")
    site = next(
        (c for c in ("anatom_site_general_challenge", "anatom_site_general") if c in table),
        None,
    )
    spec = TableSpec(
        image_column="image_name",
        label_column="diagnosis",
        group_column="lesion_id" if "lesion_id" in table.columns else None,
        patient_column="patient_id",
        metadata_columns={"age": "age_approx", "sex": "sex", "localization": site},
        label_map=resolve_map(label_map, LABEL_MAPS, "isic2020"),
        site_map=resolve_map(site_map, SITE_MAPS, "isic2020"),
        sex_map=SEX_MAP,
    )
    return read_lesion_table(
        table, images, spec, descr=DESCR_2020, source=str(csv), as_frame=as_frame,
        return_X_y=return_X_y,
    )  # fmt: skip
