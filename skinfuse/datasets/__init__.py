"""Datasets: HAM10000 from a local folder or downloaded, and synthetic lesions for tests."""

from ._base import FEATURE_NAMES, HAM10000_CLASSES, get_data_home
from ._fetch import fetch_ham10000
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
