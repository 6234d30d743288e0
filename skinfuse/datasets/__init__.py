"""Datasets: HAM10000 from a local folder or downloaded, and synthetic lesions for tests."""

from ._base import FEATURE_NAMES, HAM10000_CLASSES, get_data_home
from ._fetch import fetch_ham10000

# private, for `skinfuse predict --images` (the command line imports no private module)
from ._folder import load_image_folder as _load_image_folder  # noqa: F401
from ._ham10000 import load_ham10000
from ._synthetic import make_synthetic_lesions

__all__ = [
    "FEATURE_NAMES",
    "HAM10000_CLASSES",
    "fetch_ham10000",
    "get_data_home",
    "load_ham10000",
    "make_synthetic_lesions",
]
