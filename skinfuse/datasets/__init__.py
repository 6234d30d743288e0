"""Datasets: HAM10000 from a local folder or downloaded, other datasets and your own tables in
HAM10000's vocabulary, and synthetic lesions for tests."""

from ._base import FEATURE_NAMES, HAM10000_CLASSES, get_data_home
from ._derm7pt import load_derm7pt
from ._fetch import fetch_ham10000

# private, for `skinfuse predict --images` (the command line imports no private module)
from ._folder import image_files as _image_files  # noqa: F401
from ._folder import load_image_folder as _load_image_folder  # noqa: F401
from ._folder import typed_metadata as _typed_metadata  # noqa: F401
from ._ham10000 import load_ham10000
from ._isic import load_isic2019, load_isic2020
from ._layouts import LAYOUTS, detect_layout, load_lesion_folder
from ._maps import HAM10000_SITES, LABEL_MAPS, SEX_MAP, SITE_MAPS
from ._pad_ufes20 import load_pad_ufes20
from ._synthetic import make_synthetic_lesions
from ._table import load_lesion_table

__all__ = [
    "FEATURE_NAMES",
    "HAM10000_CLASSES",
    "HAM10000_SITES",
    "LABEL_MAPS",
    "LAYOUTS",
    "SEX_MAP",
    "SITE_MAPS",
    "detect_layout",
    "fetch_ham10000",
    "get_data_home",
    "load_derm7pt",
    "load_ham10000",
    "load_isic2019",
    "load_isic2020",
    "load_lesion_folder",
    "load_lesion_table",
    "load_pad_ufes20",
    "make_synthetic_lesions",
]
