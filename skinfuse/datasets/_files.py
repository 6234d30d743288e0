"""Reading a lesion table's files: the CSV (refusing rows with more fields than its header)
and the image folders (paths matched without regard to case)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pandas as pd

from ..images import IMAGE_EXTENSIONS

__all__ = ["ImageIndex", "read_csv_table"]


def _too_many_fields(path: Path) -> tuple[int, int, int] | None:
    """``(line, fields, header fields)`` of the first row with more fields than the header."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        n_header = None
        for row in reader:
            if not row:
                continue
            if n_header is None:
                n_header = len(row)
            elif len(row) > n_header:
                return reader.line_num, len(row), n_header
    return None


def read_csv_table(path, *, what="metadata file") -> pd.DataFrame:
    """A CSV as a DataFrame of strings (empty cells NaN); ``ValueError`` naming the file if it
    is empty, unreadable, has no rows, or has a row with more fields than its header (pandas
    would silently shift such a row, or the whole table, by one column)."""
    path = Path(path)
    try:
        extra = _too_many_fields(path)
        if extra is not None:
            line, n, n_header = extra
            raise ValueError(
                f"Expected {n_header} fields in line {line}, saw {n}: a row has more fields "
                "than the header (an unquoted comma in a value?)"
            )
        table = pd.read_csv(path, dtype=str, index_col=False)
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"the {what} {path} is empty; expected a header line and one row per image"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(
            f"cannot read the {what} {path}: {reason}. Expected a comma-separated UTF-8 file "
            "with a header line and one row per image; fix or re-download it."
        ) from None
    if table.empty:
        raise ValueError(f"the {what} {path} lists no images (it has a header but no rows)")
    # text columns as Python objects, missing values NaN, whatever pandas' default string
    # dtype (pandas 3 reads dtype=str as its "str" dtype): the frames load_ham10000 returned
    return table.astype(object)


_AMBIGUOUS = object()


def _key(text: str) -> str:
    text = text.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text.casefold()


class ImageIndex:
    """The image files under some folders (recursively), found by a path relative to a
    folder, a file name or a name without extension, without regard to case."""

    def __init__(self, folders):
        self.folders = [Path(f) for f in folders]
        # relative path, relative path without extension, file name, name without extension
        self._keys: list[dict] = [{}, {}, {}, {}]
        for folder in self.folders:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                for name in sorted(filenames):
                    stem, ext = os.path.splitext(name)
                    if ext.lower() not in IMAGE_EXTENSIONS:
                        continue
                    path = os.path.abspath(os.path.join(dirpath, name))
                    rel = os.path.relpath(path, folder).replace(os.sep, "/")
                    for table, key in zip(self._keys, (rel, os.path.splitext(rel)[0], name, stem)):
                        key = key.casefold()
                        if table.get(key, path) != path:
                            table[key] = _AMBIGUOUS
                        else:
                            table[key] = path

    def __len__(self) -> int:
        return sum(1 for v in self._keys[0].values() if v is not _AMBIGUOUS)

    def find(self, name: str) -> str | None:
        """The absolute path of ``name``; ``None`` if absent; ``ValueError`` if ambiguous."""
        key = _key(name)
        has_ext = os.path.splitext(key)[1] in IMAGE_EXTENSIONS
        order = (0, 2) if has_ext else (1, 3)
        for k in order:
            if "/" in key and k in (2, 3):
                key = key.rsplit("/", 1)[1]
            path = self._keys[k].get(key)
            if path is _AMBIGUOUS:
                raise ValueError(
                    f"the image {name!r} matches several files in "
                    f"{', '.join(map(str, self.folders))} (names that differ only by case, or "
                    "the same name in two subfolders); name it by its path relative to the "
                    "image folder"
                )
            if path is not None:
                return path
        return None
