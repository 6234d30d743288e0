"""A user's own lesion table in any layout: ``load_lesion_table`` and the machinery every
preset (HAM10000, Derm7pt, ISIC 2019/2020, PAD-UFES-20) loads through."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._columns import IMAGE_COLUMN, METADATA_COLUMNS
from .._utils._sklearn import validate_params
from .._utils._validation import user_stacklevel
from ._base import make_bunch, normalise_metadata
from ._files import ImageIndex, read_csv_table

__all__ = ["TableSpec", "load_lesion_table", "read_lesion_table"]

DESCR = """\
A lesion table
--------------

Images and clinical metadata read by :func:`skinfuse.datasets.load_lesion_table` from a
table of your own. Labels, sites and sex are in HAM10000's words where a map was given
(:data:`skinfuse.datasets.LABEL_MAPS`, :data:`skinfuse.datasets.SITE_MAPS`,
:data:`skinfuse.datasets.SEX_MAP`). Cite and respect the licence of the data you loaded.
"""


@dataclass(frozen=True)
class TableSpec:
    """Which column of a lesion table is what, and how its words translate: built once."""

    image_column: str
    label_column: str | None = None
    group_column: str | None = None
    patient_column: str | None = None
    metadata_columns: dict = field(default_factory=dict)
    label_map: dict | None = None
    site_map: dict | None = None
    sex_map: dict | None = None

    def metadata_source(self, columns) -> dict:
        """skinfuse's metadata column -> the table's column (``None``: absent, NaN)."""
        unknown = sorted(set(self.metadata_columns) - set(METADATA_COLUMNS))
        if unknown:
            raise ValueError(
                f"metadata_columns has keys {unknown}; its keys are skinfuse's metadata "
                f"columns {list(METADATA_COLUMNS)} and its values your table's column names"
            )
        return {
            col: self.metadata_columns.get(col, col if col in columns else None)
            for col in METADATA_COLUMNS
        }


def _shown(values, n=5) -> str:
    values = list(values)
    return ", ".join(map(str, values[:n])) + (" ..." if len(values) > n else "")


def _rows(positions, is_csv) -> str:
    if is_csv:
        return f"lines {_shown(int(i) + 2 for i in positions)}"
    return f"rows {_shown(int(i) for i in positions)}"


def _check_columns(table, spec, source) -> None:
    named = {
        "image_column": spec.image_column,
        "label_column": spec.label_column,
        "group_column": spec.group_column,
        "patient_column": spec.patient_column,
        **{f"metadata_columns[{k!r}]": v for k, v in spec.metadata_columns.items()},
    }
    missing = {p: c for p, c in named.items() if c is not None and c not in table.columns}
    if missing:
        which = ", ".join(f"{c!r} ({p})" for p, c in missing.items())
        raise ValueError(
            f"{source} lacks the columns {which}; its columns are {list(table.columns)}. "
            "Pass the names of your table's columns."
        )


def _is_missing(values: pd.Series) -> np.ndarray:
    return (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()


def _translate(values: pd.Series, mapping: dict, *, param, source, none_means, skip=()):
    """``values`` through ``mapping`` (keys matched without case or spaces). Unknown words
    raise a ValueError naming them; a word mapped to ``None`` gives ``None``."""
    lookup = {str(k).strip().casefold(): v for k, v in mapping.items()}
    present = ~_is_missing(values)
    keys = values.astype(str).str.strip().str.casefold()
    present &= ~keys.isin(skip).to_numpy()
    unknown = keys[present & ~keys.isin(list(lookup)).to_numpy()]
    if len(unknown):
        counts = values[unknown.index].str.strip().value_counts()
        words = ", ".join(f"{w!r} ({n} rows)" for w, n in counts.head(10).items())
        raise ValueError(
            f"{source} has values that {param} does not know: {words}. Add them to {param}: "
            f"a dict from your word to a HAM10000 word, or to None ({none_means}); copy a "
            "built-in map from skinfuse.datasets (LABEL_MAPS, SITE_MAPS, SEX_MAP) and extend it"
        )
    out = pd.Series(np.nan, index=values.index, dtype=object)
    out[present] = keys[present].map(lookup)
    return out


def _labels(table, spec, source, is_csv):
    """The labels (mapped), and the rows kept (labels with no HAM class dropped)."""
    raw = table[spec.label_column]
    missing = np.flatnonzero(_is_missing(raw))
    if len(missing):
        raise ValueError(
            f"{len(missing)} of {len(table)} rows of {source} have no label in "
            f"{spec.label_column!r} ({_rows(missing, is_csv)}); every row of a labelled "
            "table needs one (pass label_column=None to load images without labels)"
        )
    if spec.label_map is None:
        return raw.astype(str).str.strip().astype(object), np.ones(len(table), bool)
    labels = _translate(
        raw, spec.label_map, param="label_map", source=source, none_means="no HAM10000 "
        "class: those rows are dropped"
    )  # fmt: skip
    keep = labels.notna().to_numpy()
    if not keep.all():
        counts = raw[~keep].astype(str).str.strip().value_counts()
        warnings.warn(
            f"dropping {int((~keep).sum())} of {len(table)} rows of {source} whose labels "
            f"have no HAM10000 class in label_map: "
            + ", ".join(f"{w!r} ({n})" for w, n in counts.items())
            + "; map them to a class in label_map to keep them",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
    return labels, keep


def _groups(table, spec, keys, source) -> pd.Series:
    """Lesion, else patient, else the image itself (warned about: splits may leak)."""
    groups = pd.Series(np.nan, index=table.index, dtype=object)
    patient_prefix = "patient:" if spec.group_column is not None else ""
    for column, prefix in ((spec.group_column, ""), (spec.patient_column, patient_prefix)):
        if column is None:
            continue
        values = table[column]
        fill = groups.isna().to_numpy() & ~_is_missing(values)
        groups[fill] = prefix + values[fill].astype(str).str.strip()
    alone = groups.isna().to_numpy()
    if alone.any():
        named = [c for c in (spec.group_column, spec.patient_column) if c is not None]
        how = (
            f"no value in {' or '.join(map(repr, named))}"
            if named
            else "no lesion or patient column"
        )
        warnings.warn(
            f"{int(alone.sum())} of {len(table)} images of {source} have {how}: each is its "
            "own group, so grouped splits may leak (two images of one lesion on both sides). "
            "Pass group_column= (lesion id) or patient_column=; if each row is a distinct "
            "lesion, pass group_column=image_column.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        groups[alone] = "image:" + keys[alone]
    return groups


def _metadata(table, spec, meta_source, source) -> pd.DataFrame:
    out = pd.DataFrame(index=table.index)
    for col, src in meta_source.items():
        values = table[src] if src is not None else pd.Series(np.nan, index=table.index)
        mapping = {"sex": spec.sex_map, "localization": spec.site_map}.get(col)
        if mapping is not None:
            param = "sex_map" if col == "sex" else "site_map"
            values = _translate(
                values, mapping, param=param, source=f"{source} (column {src!r})",
                none_means="a missing value", skip=("unknown",),
            )  # fmt: skip
        elif col != "age":
            values = values.where(~_is_missing(values), np.nan)
            values = values.map(lambda v: v.strip() if isinstance(v, str) else v)
        out[col] = values.to_numpy(dtype=object)
    return normalise_metadata(out)


def _image_paths(keys: pd.Series, index: ImageIndex, source, spec, is_csv) -> pd.Series:
    paths = keys.map(index.find)
    absent = keys[paths.isna()]
    if len(absent):
        folders = ", ".join(str(f) for f in index.folders)
        raise ValueError(
            f"the image folder {folders} is incomplete: {len(absent)} of {len(keys)} images "
            f"listed in {spec.image_column!r} of {source} are missing ({_shown(absent)}; "
            f"{len(index)} image files found). Paths are matched without regard to case, as "
            "paths relative to the folder, file names, or names without extension."
        )
    return paths.astype(object)


def read_lesion_table(table, images, spec: TableSpec, *, descr=DESCR, what="metadata file",
                      source=None, as_frame=True, return_X_y=False):  # fmt: skip
    """The Bunch of a lesion table; ``table`` a CSV path or a DataFrame, ``images`` a folder,
    a list of folders or ``None`` (the CSV's folder, else the working directory). ``what``
    names a CSV in messages, ``source`` a DataFrame (default: "the table")."""
    is_csv = not isinstance(table, pd.DataFrame)
    if is_csv:
        csv = Path(table).expanduser()
        if not csv.is_file():
            raise ValueError(f"{what} not found: {csv}; pass an existing CSV file")
        source = str(csv)
        table = read_csv_table(csv, what=what)
        default_folder = csv.parent
    else:
        source = source or "the table"
        table = table.reset_index(drop=True).copy()
        if table.empty:
            raise ValueError("the table has no rows; pass a table with one row per image")
        default_folder = Path.cwd()
    if images is None:
        folders = [default_folder]
    elif isinstance(images, (str, os.PathLike)):
        folders = [Path(images).expanduser()]
    else:
        folders = [Path(f).expanduser() for f in images]
    absent = [str(f) for f in folders if not f.is_dir()]
    if absent:
        raise ValueError(f"image folder not found: {', '.join(absent)}; pass existing folders")
    meta_source = spec.metadata_source(table.columns)
    _check_columns(table, spec, source)

    keys = table[spec.image_column]
    empty = np.flatnonzero(_is_missing(keys))
    if len(empty):
        raise ValueError(
            f"{len(empty)} of {len(table)} rows of {source} have no {spec.image_column} "
            f"({_rows(empty, is_csv)}); every row must name its image. Fix the table."
        )
    keys = keys.astype(str).str.strip()
    repeated = keys.duplicated(keep="first").to_numpy()
    if repeated.any():
        ids = list(dict.fromkeys(keys[repeated]))
        warnings.warn(
            f"{source} lists {len(ids)} {spec.image_column}(s) more than once ({_shown(ids)}); "
            f"keeping the first row of each and dropping {int(repeated.sum())} repeated rows.",
            UserWarning,
            stacklevel=user_stacklevel(),
        )
        table, keys = table.loc[~repeated], keys[~repeated]
    if spec.label_column is not None:
        labels, keep = _labels(table, spec, source, is_csv)
        table, keys, labels = table.loc[keep], keys[keep], labels[keep]
    else:
        labels = pd.Series(np.nan, index=table.index, dtype=object)
    paths = _image_paths(keys, ImageIndex(folders), source, spec, is_csv)
    groups = _groups(table, spec, keys, source)
    frame = table.copy()
    for col, values in _metadata(table, spec, meta_source, source).items():
        frame[col] = values
    frame["dx"] = labels.astype(object)
    frame["lesion_id"] = groups
    if "image_id" not in frame.columns:
        frame["image_id"] = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    frame[IMAGE_COLUMN] = paths
    names = sorted(frame["dx"].dropna().unique().tolist())
    return make_bunch(
        frame, descr=descr, as_frame=as_frame, return_X_y=return_X_y, target_names=names
    )


_MAP = [dict, None]


@validate_params(
    {
        "table": [str, os.PathLike, pd.DataFrame],
        "images": [str, os.PathLike, list, None],
        "image_column": [str],
        "label_column": [str, None],
        "group_column": [str, None],
        "patient_column": [str, None],
        "metadata_columns": [dict, None],
        "label_map": _MAP,
        "site_map": _MAP,
        "sex_map": _MAP,
        "as_frame": ["boolean"],
        "return_X_y": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def load_lesion_table(
    table,
    images=None,
    *,
    image_column,
    label_column=None,
    group_column=None,
    patient_column=None,
    metadata_columns=None,
    label_map=None,
    site_map=None,
    sex_map=None,
    as_frame=True,
    return_X_y=False,
):
    """Load images and metadata listed in a table of your own, in any layout.

    Every preset (:func:`load_ham10000`, :func:`load_derm7pt`, :func:`load_isic2019`,
    :func:`load_isic2020`, :func:`load_pad_ufes20`) is this function with its dataset's
    column names and maps.

    Parameters
    ----------
    table : str, path-like or DataFrame
        A CSV file (comma-separated, UTF-8, a header line, one row per image) or a DataFrame.
        A CSV row with more fields than the header is refused (pandas would shift it).
    images : str, path-like or list of them, default=None
        The folder(s) holding the images, searched recursively. ``None``: the CSV's folder
        (for a DataFrame, the working directory).
    image_column : str
        The column naming each image: a path relative to an image folder
        (``"sub/img1.jpg"``), a file name (``"img1.jpg"``) or a name without extension
        (``"img1"``). Matched without regard to case (``Ab/x.jpg`` finds ``AB/x.JPG``).
    label_column : str, default=None
        The diagnosis column; ``None`` for unlabelled images (``target`` is then all NaN).
    group_column : str, default=None
        The lesion id: images of one lesion are one group (``Bunch.groups``), which grouped
        splitters keep on one side. If each row is a distinct lesion, pass ``image_column``.
    patient_column : str, default=None
        The patient id: the group of rows without a lesion id (a patient group is stricter).
        Rows with neither are each their own group, with a ``UserWarning`` (splits may leak).
    metadata_columns : dict, default=None
        skinfuse's metadata column -> your column, e.g.
        ``{"age": "age_approx", "sex": "gender", "localization": "region"}``; ``None`` for
        one that is absent. A key left out is read from the column of the same name if
        there is one, else it is missing (NaN).
    label_map : dict, default=None
        Your diagnosis word -> a HAM10000 class code (:data:`HAM10000_CLASSES`), or ``None``
        for a diagnosis with no HAM10000 class: those rows are dropped with a
        ``UserWarning`` naming them. A word the map does not know is a ``ValueError``
        naming it. Words are matched without regard to case. ``None``: labels as they are.
        Built-in maps: :data:`LABEL_MAPS` (copy one and change it).
    site_map : dict, default=None
        Your site word -> a HAM10000 localization (:data:`HAM10000_SITES`), or ``None``
        (a missing value). Unknown words are a ``ValueError``. ``None``: sites as they are.
        Built-in maps: :data:`SITE_MAPS`.
    sex_map : dict, default=None
        Your sex word -> ``"male"`` / ``"female"``, or ``None`` (missing), e.g.
        :data:`SEX_MAP`. ``None``: as they are.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame and ``target`` a Series; otherwise object ndarrays.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.

    Returns
    -------
    data : sklearn.utils.Bunch
        As :func:`load_ham10000`: ``frame`` (your table's columns, plus ``dx``,
        ``lesion_id`` (the groups), ``age``, ``sex``, ``localization``, ``image_id`` if
        absent and ``image_path``), ``data`` (``image_path, age, sex, localization``),
        ``target``, ``groups``, ``target_names``, ``feature_names``, ``DESCR``. Empty or
        ``"unknown"`` metadata are NaN.
    (data, target) : tuple if ``return_X_y`` is True

    Raises
    ------
    ValueError
        The table is unreadable, empty, has a row with too many fields, lacks a named
        column, a row without image or label, a word a map does not know, or an image that
        is not in the folder(s). The message names the file, the values and the fix.

    Warns
    -----
    UserWarning
        Rows dropped (labels mapped to ``None``; repeated images), or images without a
        lesion or patient id (each its own group: grouped splits may leak).

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> from skinfuse.datasets import load_lesion_table, make_synthetic_lesions
    >>> folder = tempfile.mkdtemp()
    >>> lesions = make_synthetic_lesions(6, image_size=8, n_classes=2, data_dir=folder)
    >>> table = pd.DataFrame({"file": lesions.frame["image_path"],
    ...                       "diagnosis": ["Nevus", "Melanoma"] * 3,
    ...                       "patient": ["p1", "p1", "p2", "p2", "p3", "p3"],
    ...                       "years": [30, 30, 50, 50, None, None]})
    >>> bunch = load_lesion_table(table, folder, image_column="file",
    ...                           label_column="diagnosis", patient_column="patient",
    ...                           metadata_columns={"age": "years"},
    ...                           label_map={"nevus": "nv", "melanoma": "mel"})
    >>> bunch.target.tolist()[:2], bunch.target_names.tolist()
    (['nv', 'mel'], ['mel', 'nv'])
    >>> bunch.data["age"].tolist()[-2:]
    [nan, nan]
    """
    spec = TableSpec(
        image_column=image_column,
        label_column=label_column,
        group_column=group_column,
        patient_column=patient_column,
        metadata_columns=dict(metadata_columns or {}),
        label_map=label_map,
        site_map=site_map,
        sex_map=sex_map,
    )
    return read_lesion_table(
        table, images, spec, what="table", as_frame=as_frame, return_X_y=return_X_y
    )
