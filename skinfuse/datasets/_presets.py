"""What the presets over :func:`load_lesion_table` share: their parameters' documentation
(written once), the check of their folder and the search for their files."""

from __future__ import annotations

import csv
import os
from pathlib import Path

__all__ = ["check_root", "fill_preset_doc", "first_existing", "header", "resolve_map"]

#: The parameter constraints every preset shares (``validate_params``).
PRESET_CONSTRAINTS = {
    "data_home": [str, os.PathLike],
    "label_map": [dict, None],
    "site_map": [dict, None],
    "as_frame": ["boolean"],
    "return_X_y": ["boolean"],
}

PRESET_PARAMETERS = """\
    label_map : dict, default=None
        Diagnosis word -> HAM10000 class code, or ``None`` for a diagnosis with no HAM10000
        class (those rows are dropped with a ``UserWarning``). ``None`` uses
        ``LABEL_MAPS[{name!r}]``; to change it, copy it:
        ``{{**LABEL_MAPS[{name!r}], "word": "nv"}}``. Words are matched without regard to
        case.
    site_map : dict, default=None
        Site word -> HAM10000 localization, or ``None`` (a missing value). ``None`` uses
        ``SITE_MAPS[{name!r}]``.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame and ``target`` a Series; otherwise object ndarrays
        (and ``frame`` is None).
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch."""

PRESET_RETURNS = """\
    data : sklearn.utils.Bunch
        As :func:`load_ham10000`: ``frame`` (the table's columns, plus ``dx``, ``lesion_id``
        (the groups), ``age``, ``sex``, ``localization``, ``image_id`` and ``image_path``),
        ``data`` (``image_path, age, sex, localization``), ``target`` (HAM10000 class
        codes), ``groups``, ``target_names``, ``feature_names``, ``DESCR`` (description,
        citation, licence).
    (data, target) : tuple if ``return_X_y`` is True"""


def fill_preset_doc(name):
    """Decorator: put the shared parameters and returns into a preset's docstring."""

    def decorate(func):
        func.__doc__ = func.__doc__.replace(
            "    %(preset_parameters)s", PRESET_PARAMETERS.format(name=name)
        ).replace("    %(preset_returns)s", PRESET_RETURNS)
        return func

    return decorate


def resolve_map(mapping, maps, name):
    """A user's map, or the built-in one of ``name``."""
    return maps[name] if mapping is None else mapping


def check_root(data_home, dataset) -> Path:
    root = Path(data_home).expanduser()
    if not root.is_dir():
        raise ValueError(
            f"{dataset} folder not found: {root}; pass the folder that holds its CSV and images"
        )
    return root


def first_existing(root: Path, candidates, *, kind="file") -> Path | None:
    """The first of ``candidates`` (paths relative to ``root``) that exists as a ``kind``."""
    for rel in candidates:
        path = root / rel
        if path.is_dir() if kind == "dir" else path.is_file():
            return path
    return None


def header(path: Path) -> list[str]:
    """The column names of a CSV's first line (``[]`` if it cannot be read)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error):
        return []
