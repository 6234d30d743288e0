"""Reading and decoding images: the one place in skinfuse that touches pixels.

Every encoder and dataset goes through these functions, so that all of them agree
on how a file becomes an RGB ``uint8`` array: EXIF orientation is honoured,
grayscale, palette, RGBA, CMYK and 16-bit images become 8-bit RGB, and images
are resized with antialiasing.
"""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ._utils._sklearn import Interval, StrOptions, validate_params

__all__ = [
    "IMAGE_EXTENSIONS",
    "as_image_list",
    "check_image_files",
    "load_images",
    "read_image",
    "to_rgb_uint8",
]

#: File extensions that skinfuse reads (any format Pillow decodes works, these are tested).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
_MAX_LISTED = 5
# What Pillow raises for a file it cannot decode (besides its bomb check): a truncated or
# malformed file can surface as any of these, from the format plugins or the codecs.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)
_ON_ERROR = StrOptions({"raise", "warn", "skip"})
_SIZE = Interval(Integral, 1, None, closed="left")


def _as_hw(size) -> tuple[int, int] | None:
    """``size`` as (height, width): an int or a pair (validated), whose values are checked here."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be a positive int or a (height, width) pair, got {size!r}")
    return size


@validate_params({"image": ["array-like", Image.Image]}, prefer_skip_nested_validation=True)
def to_rgb_uint8(image) -> np.ndarray:
    """Convert an image array of any common layout to ``(H, W, 3) uint8``.

    Parameters
    ----------
    image : ndarray or PIL.Image.Image
        ``(H, W)`` grayscale, ``(H, W, 1)``, ``(H, W, 3)`` RGB or ``(H, W, 4)``
        RGBA (alpha is dropped). ``uint8`` is kept, ``uint16`` is scaled by
        1/257, floats are taken to be in ``[0, 1]`` when their maximum is at
        most 1 and in ``[0, 255]`` otherwise; values are clipped.

    Returns
    -------
    rgb : ndarray of shape (H, W, 3), dtype uint8

    Examples
    --------
    >>> import numpy as np
    >>> to_rgb_uint8(np.full((2, 2), 65535, dtype=np.uint16))[0, 0]
    array([255, 255, 255], dtype=uint8)
    """
    return _to_rgb_uint8(image)


def _to_rgb_uint8(image) -> np.ndarray:
    """:func:`to_rgb_uint8` without parameter validation (called once per image)."""
    if isinstance(image, Image.Image):
        return _pil_to_rgb_array(image)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ValueError(
            "an image array must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
            f"got shape {arr.shape}"
        )
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr.astype(np.uint32) * 255 + 32767) // 65535
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    elif np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float32))
        scale = 255.0 if arr.size and arr.max() <= 1.0 else 1.0
        arr = np.rint(np.clip(arr * scale, 0, 255))
    elif np.issubdtype(arr.dtype, np.integer):
        arr = np.clip(arr, 0, 255)
    else:
        raise TypeError(f"cannot read an image array of dtype {arr.dtype}")
    arr = arr.astype(np.uint8, copy=False)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def _pil_to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("RGB", "L"):
        return _to_rgb_uint8(np.array(img))
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _to_rgb_uint8(np.asarray(img).astype(np.uint16))
    if mode == "I":  # 32-bit int: 16-bit PNGs often open as this
        arr = np.asarray(img)
        if arr.size and arr.max() > 255:
            arr = np.clip(arr, 0, 65535).astype(np.uint16)
        return _to_rgb_uint8(arr)
    if mode == "F":
        return _to_rgb_uint8(np.asarray(img))
    # P, PA, LA, RGBA, CMYK, YCbCr, 1, ...: Pillow converts them correctly.
    return np.array(img.convert("RGB"))


@validate_params(
    {
        "source": [str, os.PathLike, "array-like", Image.Image],
        "size": [_SIZE, "array-like", None],
        "resample": [StrOptions(set(_RESAMPLE))],
    },
    prefer_skip_nested_validation=True,
)
def read_image(source, *, size=None, resample: str = "bilinear") -> np.ndarray:
    """Read one image into an ``(H, W, 3) uint8`` RGB array.

    Parameters
    ----------
    source : str, path-like or ndarray
        A file Pillow can read (JPEG, PNG, TIFF, BMP...) or an image array
        (see :func:`to_rgb_uint8`).
    size : int or (height, width), default=None
        Resize to this size (antialiased). ``None`` keeps the original size.
    resample : {"bilinear", "bicubic", "lanczos", "nearest"}, default="bilinear"
        Resampling filter used when resizing.

    Returns
    -------
    image : ndarray of shape (H, W, 3), dtype uint8

    Raises
    ------
    ValueError
        If the file does not exist, is a directory, cannot be read, is too large
        to decode safely (Pillow's decompression-bomb limit,
        ``PIL.Image.MAX_IMAGE_PIXELS``) or cannot be decoded; the message names
        the file and what is wrong.

    Examples
    --------
    >>> import numpy as np
    >>> read_image(np.zeros((10, 20), dtype=np.uint8), size=8).shape
    (8, 8, 3)
    """
    return _read_image(source, size=size, resample=resample)


def _read_image(source, *, size=None, resample="bilinear") -> np.ndarray:
    """:func:`read_image` without parameter validation (the loaders call it once per image)."""
    hw = _as_hw(size)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with Image.open(path) as img:
                if hw is not None and img.format == "JPEG":
                    # Let libjpeg decode at a reduced scale when the target is much smaller.
                    img.draft("RGB", (hw[1], hw[0]))
                img = ImageOps.exif_transpose(img)
                img.load()
                arr = _pil_to_rgb_array(img)
        except FileNotFoundError:
            raise ValueError(f"image file not found: {path}") from None
        except IsADirectoryError:
            raise ValueError(f"image path is a directory, not an image file: {path}") from None
        except PermissionError:
            raise ValueError(f"cannot read image file {path}: permission denied") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(
                f"image file {path} is too large to decode safely: {exc} If you trust it, "
                "raise PIL.Image.MAX_IMAGE_PIXELS."
            ) from None
        except _DECODE_ERRORS as exc:
            raise ValueError(f"cannot decode image file {path}: {exc}") from None
    else:
        arr = _to_rgb_uint8(source)
    if hw is not None and arr.shape[:2] != hw:
        pil = Image.fromarray(arr)
        arr = np.array(pil.resize((hw[1], hw[0]), _RESAMPLE[resample]))
    return arr


# The column of images is checked by as_image_list itself, item by item, with messages that
# say what was received (a single path, a many-column DataFrame...): "no_validation" here.
@validate_params({"X": "no_validation"}, prefer_skip_nested_validation=True)
def as_image_list(X) -> list:
    """Turn a column of images into a list of paths (str) or arrays.

    Accepts a 1-D list/array/Series of paths, a one-column DataFrame or 2-D
    array of shape ``(n, 1)`` of paths, a 3-D (``(n, H, W)``) or 4-D
    (``(n, H, W, C)``) array of images, or a list of image arrays.

    Raises
    ------
    TypeError, ValueError
        If ``X`` is not one of the above; the message says what was received.

    Examples
    --------
    >>> import pandas as pd
    >>> as_image_list(pd.DataFrame({"image_path": ["a.jpg", "b.png"]}))
    ['a.jpg', 'b.png']
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover
        pd = None
    if isinstance(X, (str, os.PathLike)):
        raise TypeError(
            "expected a column of images (list, array, Series or one-column DataFrame), "
            f"got a single path {os.fspath(X)!r}; wrap it in a list: [path]"
        )
    if pd is not None and isinstance(X, pd.DataFrame):
        if X.shape[1] != 1:
            raise ValueError(
                "expected a one-column DataFrame of image paths, got columns "
                f"{list(X.columns)}; select the image column, e.g. X[['image_path']]"
            )
        X = X.iloc[:, 0]
    if pd is not None and isinstance(X, pd.Series):
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray):
        if X.dtype != object and X.dtype.kind not in "US":
            if X.ndim in (3, 4):
                return list(X)
            raise ValueError(
                "a numeric array of images must have shape (n, H, W) or (n, H, W, C); "
                f"got shape {X.shape}. For file paths pass strings."
            )
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"expected a 1-D column of image paths, got shape {X.shape}")
        X = X.tolist()
    if not isinstance(X, Sequence):
        X = list(X)
    items = []
    for i, item in enumerate(X):
        if isinstance(item, (list, tuple)) and len(item) == 1:
            item = item[0]
        if isinstance(item, Path):
            item = os.fspath(item)
        if isinstance(item, str) or (isinstance(item, np.ndarray) and item.ndim in (2, 3)):
            items.append(item)
        elif isinstance(item, np.str_):
            items.append(str(item))
        else:
            raise TypeError(
                f"item {i} of the image column is a {type(item).__name__} ({item!r:.60}); "
                "expected a file path (str) or an image array"
            )
    return items


def _failure_message(failures: list[tuple[int, str, str]], n: int) -> str:
    listed = "; ".join(f"{src}: {why}" for _, src, why in failures[:_MAX_LISTED])
    more = f" (and {len(failures) - _MAX_LISTED} more)" if len(failures) > _MAX_LISTED else ""
    return f"{len(failures)} of {n} images could not be read: {listed}{more}"


def _path_problems(items) -> list[tuple[int, str, str]]:
    """``(index, path, what is wrong)`` for each path that is missing or not a file."""
    problems = []
    for i, item in enumerate(items):
        if isinstance(item, str) and not os.path.isfile(item):
            why = "is a directory, not an image file" if os.path.isdir(item) else "file not found"
            problems.append((i, item, why))
    return problems


def _listed(paths: list[str]) -> str:
    return ", ".join(paths[:_MAX_LISTED]) + (" ..." if len(paths) > _MAX_LISTED else "")


@validate_params(
    {"images": "no_validation", "on_error": [_ON_ERROR]}, prefer_skip_nested_validation=True
)
def check_image_files(images, *, on_error: str = "raise") -> np.ndarray:
    """Check that every path in a column of images is a file, before any long work.

    Cheap (one ``stat`` per file). Decoding errors are found later by
    :func:`load_images`.

    Parameters
    ----------
    images : column of images
        See :func:`as_image_list`. Arrays always pass.
    on_error : {"raise", "warn", "skip"}, default="raise"
        ``"raise"`` raises a ``ValueError`` listing the missing files (and the
        paths that are directories) and how many of N they are; ``"warn"``
        warns instead; ``"skip"`` says nothing.

    Returns
    -------
    ok : ndarray of bool, shape (n_images,)
        True where the image is a file (or is an array).

    Examples
    --------
    >>> import numpy as np
    >>> check_image_files(["no/such/file.jpg", np.zeros((4, 4))], on_error="skip").tolist()
    [False, True]
    """
    items = as_image_list(images)
    problems = _path_problems(items)
    ok = np.ones(len(items), dtype=bool)
    ok[[i for i, _, _ in problems]] = False
    if problems and on_error != "skip":
        missing = [path for _, path, why in problems if why == "file not found"]
        folders = [path for _, path, why in problems if why != "file not found"]
        parts = []
        if missing:
            parts.append(
                f"image file not found: {_listed(missing)}; "
                f"{len(missing)} of {len(items)} paths are missing"
            )
        if folders:
            parts.append(
                f"image path is a directory, not an image file: {_listed(folders)}; "
                f"{len(folders)} of {len(items)} paths are directories"
            )
        msg = "; ".join(parts) + ". Check the image folder (or the paths in the image column)."
        if on_error == "raise":
            raise ValueError(msg)
        warnings.warn(msg, UserWarning, stacklevel=2)
    return ok


@validate_params(
    {
        "images": "no_validation",
        "size": [_SIZE, "array-like"],
        "on_error": [_ON_ERROR],
        "resample": [StrOptions(set(_RESAMPLE))],
        "verbose": ["verbose"],
    },
    prefer_skip_nested_validation=True,
)
def load_images(
    images, *, size=64, on_error: str = "raise", resample: str = "bilinear", verbose: int = 0
):
    """Decode a column of images into one ``(n, H, W, 3) uint8`` array.

    Parameters
    ----------
    images : column of images
        See :func:`as_image_list`.
    size : int or (height, width), default=64
        Every image is resized to this size.
    on_error : {"raise", "warn", "skip"}, default="raise"
        What to do with an image that is missing, a directory, unreadable, too
        large to decode safely (``PIL.Image.MAX_IMAGE_PIXELS``) or undecodable.
        ``"raise"``: a ``ValueError`` naming the files, what is wrong and how
        many of N failed (missing files and directories are found before
        decoding starts). ``"warn"``/``"skip"``: the image is
        left black, with (``"warn"``) or without a warning; use the returned
        mask to tell them apart.
    resample : str, default="bilinear"
        Resampling filter, see :func:`read_image`.
    verbose : int, default=0
        Show a progress bar when > 0.

    Returns
    -------
    pixels : ndarray of shape (n, H, W, 3), dtype uint8
    ok : ndarray of bool, shape (n,)
        False where the image could not be read.

    Examples
    --------
    >>> import numpy as np
    >>> pixels, ok = load_images(np.zeros((2, 5, 5, 3), dtype=np.uint8), size=4)
    >>> pixels.shape, ok.tolist()
    ((2, 4, 4, 3), [True, True])
    """
    hw = _as_hw(size)
    items = as_image_list(images)
    ok = check_image_files(items, on_error=on_error if on_error == "raise" else "skip")
    out = np.zeros((len(items), *hw, 3), dtype=np.uint8)
    failures = _path_problems(items)
    iterator = range(len(items))
    if verbose:
        from ._utils._progress import progress

        iterator = progress(iterator, desc="decoding images", unit="img")
    for i in iterator:
        if not ok[i]:
            continue
        try:
            out[i] = _read_image(items[i], size=hw, resample=resample)
        except ValueError as exc:
            ok[i] = False
            failures.append((i, str(items[i]) if isinstance(items[i], str) else f"#{i}", str(exc)))
            if on_error == "raise":
                break
    if failures:
        failures.sort()
        msg = _failure_message(failures, len(items))
        if on_error == "raise":
            raise ValueError(msg)
        if on_error == "warn":
            warnings.warn(msg, UserWarning, stacklevel=2)
    return out, ok
