"""Load PAD-UFES-20 (smartphone clinical images with patient data) from a local folder."""

from __future__ import annotations

from .._utils._sklearn import validate_params
from ._maps import LABEL_MAPS, SEX_MAP, SITE_MAPS
from ._presets import PRESET_CONSTRAINTS, check_root, fill_preset_doc, resolve_map
from ._table import TableSpec, read_lesion_table

__all__ = ["load_pad_ufes20"]

DESCR = """\
.. _pad_ufes20_dataset:

PAD-UFES-20 clinical images
---------------------------

2,298 images of 1,641 lesions of 1,373 patients, taken with smartphones (clinical images,
**not dermoscopic**: a HAM10000-trained model meets another modality here), with up to 22
clinical features per image (``age``, ``gender``, ``region``, Fitzpatrick type, diameters,
...). Six diagnoses ``ACK, BCC, MEL, NEV, SCC, SEK``.

**Target** through ``LABEL_MAPS["pad_ufes20"]``: ``ACK`` (actinic keratosis) is ``akiec``,
``NEV`` ``nv``, ``SEK`` ``bkl``; ``SCC`` (squamous cell carcinoma, with Bowen's disease) is
``akiec`` by choice (HAM10000's ``akiec`` holds intraepithelial carcinoma, not invasive SCC;
map ``SCC`` to ``None`` to drop it).

**Inputs**: ``age``, ``sex`` (``gender``), ``localization`` (its 14 ``region`` words through
``SITE_MAPS["pad_ufes20"]``). **Groups**: ``lesion_id`` (else ``patient_id``).

**Citation**: Pacheco A.G.C. et al. "PAD-UFES-20: a skin lesion dataset composed of patient
data and clinical images collected from smartphones." Data in Brief 32, 106221 (2020).
doi:10.1016/j.dib.2020.106221. Mendeley Data, doi:10.17632/zr7vgbcyr2.1.

**Licence**: as published on its Mendeley Data page (Creative Commons Attribution 4.0,
CC BY 4.0, at the time of writing: check it there); cite the paper above.
"""

CSV_NAME = "metadata.csv"
#: Image folders: ``images/`` (its parts may be nested inside) or the parts at the top.
IMAGE_DIR = "images"
PART_GLOB = "imgs_part_*"


@validate_params(
    PRESET_CONSTRAINTS,
    prefer_skip_nested_validation=True,
)
@fill_preset_doc("pad_ufes20")
def load_pad_ufes20(data_home, *, label_map=None, site_map=None, as_frame=True, return_X_y=False):
    """Load PAD-UFES-20 from a local folder: ``metadata.csv`` and the PNG images.

    ``metadata.csv`` has (among others) ``patient_id, lesion_id, img_id, diagnostic, age,
    gender, region``; the images (``img_id`` is the file name) are in ``images/`` (also in
    its ``imgs_part_1/`` ... subfolders) or in ``imgs_part_*/`` folders beside the table.

    Parameters
    ----------
    data_home : str or path-like
        The folder holding ``metadata.csv`` and the images.
    %(preset_parameters)s

    Returns
    -------
    %(preset_returns)s

    Examples
    --------
    >>> from skinfuse.datasets import load_pad_ufes20
    >>> pad = load_pad_ufes20("path/to/pad_ufes20")  # doctest: +SKIP
    """
    root = check_root(data_home, "PAD-UFES-20")
    csv = root / CSV_NAME
    folders = [root / IMAGE_DIR] if (root / IMAGE_DIR).is_dir() else []
    folders = folders or sorted(p for p in root.glob(PART_GLOB) if p.is_dir())
    if not csv.is_file() or not folders:
        raise ValueError(
            f"no PAD-UFES-20 layout in {root}: expected {CSV_NAME} and the images in "
            f"{IMAGE_DIR}/ or {PART_GLOB}/"
        )
    spec = TableSpec(
        image_column="img_id",
        label_column="diagnostic",
        group_column="lesion_id",
        patient_column="patient_id",
        metadata_columns={"age": "age", "sex": "gender", "localization": "region"},
        label_map=resolve_map(label_map, LABEL_MAPS, "pad_ufes20"),
        site_map=resolve_map(site_map, SITE_MAPS, "pad_ufes20"),
        sex_map=SEX_MAP,
    )
    return read_lesion_table(
        csv, folders, spec, descr=DESCR, what="PAD-UFES-20 metadata file",
        as_frame=as_frame, return_X_y=return_X_y,
    )  # fmt: skip
