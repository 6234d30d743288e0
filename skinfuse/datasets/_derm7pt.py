"""Load Derm7pt (the 7-point checklist dermoscopy dataset) from a local folder."""

from __future__ import annotations

from .._utils._sklearn import validate_params
from ._maps import LABEL_MAPS, SEX_MAP, SITE_MAPS
from ._presets import PRESET_CONSTRAINTS, check_root, fill_preset_doc, first_existing, resolve_map
from ._table import TableSpec, read_lesion_table

__all__ = ["load_derm7pt"]

DESCR = """\
.. _derm7pt_dataset:

Derm7pt dermoscopic images
--------------------------

The 1,011 cases of the 7-point checklist dermoscopy dataset: one dermoscopic image per case
(one case per lesion, so each image is its own group), from another centre, camera and
population than HAM10000. Use it as an external test set: never train or select on it.

**Target**: its 20 free-text diagnoses in HAM10000's codes through
``LABEL_MAPS["derm7pt"]``: the nevi are ``nv``, the melanomas ``mel``, seborrheic keratosis
and lentigo ``bkl``, basal cell carcinoma ``bcc``, vascular lesion ``vasc``, dermatofibroma
``df``; melanosis and miscellaneous have no HAM10000 class (dropped, with a warning). There
is no actinic keratosis (``akiec``).

**Inputs**: ``image_path``, ``sex``, ``localization`` (its 9 sites through
``SITE_MAPS["derm7pt"]``). There is no ``age`` (all NaN). The 7-point criteria in
``Bunch.frame`` are a dermatologist's reading of the image: never a model input.

**Citation**: Kawahara J., Daneshvar S., Argenziano G., Hamarneh G. "Seven-Point Checklist
and Skin Lesion Classification Using Multitask Multimodal Neural Nets." IEEE Journal of
Biomedical and Health Informatics 23(2), 538-546 (2019). doi:10.1109/JBHI.2018.2824327.

**Licence**: Creative Commons Attribution-NonCommercial-NoDerivatives 4.0 (CC BY-NC-ND
4.0). Non-commercial use only, no redistribution of modified images; cite the paper above.
"""

#: Where Derm7pt's table may be, relative to its folder (the release has meta/meta.csv).
CSV_NAMES = ("meta.csv", "meta/meta.csv")
IMAGE_DIR = "images"


@validate_params(
    PRESET_CONSTRAINTS,
    prefer_skip_nested_validation=True,
)
@fill_preset_doc("derm7pt")
def load_derm7pt(data_home, *, label_map=None, site_map=None, as_frame=True, return_X_y=False):
    """Load Derm7pt from a local folder: ``meta.csv`` (or ``meta/meta.csv``) and ``images/``.

    The ``derm`` column of the table gives each image's path under ``images/``; paths are
    matched without regard to case (the release stores some folders in another case than
    its table names them). Cases whose diagnosis has no HAM10000 class (melanosis,
    miscellaneous) are dropped with a ``UserWarning``.

    Parameters
    ----------
    data_home : str or path-like
        The folder holding ``meta.csv`` (or ``meta/meta.csv``) and ``images/``.
    %(preset_parameters)s

    Returns
    -------
    %(preset_returns)s

    Raises
    ------
    ValueError
        If the folder, its table or an image is missing, or a diagnosis or site is not in
        the maps. The message names it.

    Examples
    --------
    With Derm7pt in ``path/to/derm7pt`` (skipped as a doctest: it needs the real images):

    >>> from skinfuse.datasets import load_derm7pt
    >>> derm = load_derm7pt("path/to/derm7pt")  # doctest: +SKIP
    >>> derm.data.shape, derm.target_names.tolist()  # doctest: +SKIP
    ((987, 4), ['bcc', 'bkl', 'df', 'mel', 'nv', 'vasc'])
    """
    root = check_root(data_home, "Derm7pt")
    csv = first_existing(root, CSV_NAMES)
    if csv is None or not (root / IMAGE_DIR).is_dir():
        raise ValueError(
            f"no Derm7pt layout in {root}: expected {' or '.join(CSV_NAMES)} and the folder "
            f"{IMAGE_DIR}/ (the table's derm column names each image under it)"
        )
    spec = TableSpec(
        image_column="derm",
        label_column="diagnosis",
        group_column="derm",  # one case per lesion: each image is its own lesion
        metadata_columns={"age": None, "sex": "sex", "localization": "location"},
        label_map=resolve_map(label_map, LABEL_MAPS, "derm7pt"),
        site_map=resolve_map(site_map, SITE_MAPS, "derm7pt"),
        sex_map=SEX_MAP,
    )
    return read_lesion_table(
        csv, root / IMAGE_DIR, spec, descr=DESCR, what="Derm7pt table",
        as_frame=as_frame, return_X_y=return_X_y,
    )  # fmt: skip
