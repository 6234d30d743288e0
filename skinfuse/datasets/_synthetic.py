"""Synthetic, multi-modal skin lesion data: real image files plus metadata.

:func:`make_synthetic_lesions` writes small dermoscopy-like images (a coloured
blob on noisy skin) to disk and returns the same ``Bunch`` as the HAM10000
loaders, so every part of skinfuse can be exercised and tested without
downloading anything. This module holds the design (classes, lesions, second
images), the metadata and the files on disk; the pixels are drawn in
:mod:`skinfuse.datasets._synthetic_images`.

Signal design
-------------
Both modalities carry *partial, complementary* information about the class
``k`` (index into ``target_names``):

* the **image** encodes mostly ``k // 2`` (the "pair" of the class): lesion
  colour, size, border irregularity and texture depend on the pair only, so
  from pixels alone classes ``2j`` and ``2j + 1`` look the same;
* the **metadata** encodes mostly ``k % 2`` (the "parity"): age depends
  strongly on the parity, the body site weakly on the class, sex very weakly.

Only a model that combines both can tell all classes apart. The class signal
lives inside the lesion; the skin background is class-independent noise, and
the returned ``masks`` say where each lesion is.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from numbers import Integral
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state

from .._columns import CATEGORICAL_METADATA, IMAGE_COLUMN
from .._utils._sklearn import Interval, StrOptions, validate_params
from ._base import HAM10000_CLASSES, get_data_home, make_bunch
from ._synthetic_images import make_images

__all__ = ["make_synthetic_lesions"]

#: Bump when the generator changes, so cached folders are not reused.
_GENERATOR_VERSION = 1

#: Body sites used by HAM10000 (``localization``), most frequent first.
_LOCALIZATIONS = [
    "back",
    "lower extremity",
    "trunk",
    "upper extremity",
    "abdomen",
    "face",
    "chest",
    "foot",
    "neck",
    "scalp",
    "hand",
    "ear",
    "genital",
    "acral",
]

#: Share of lesions that get a second (rotated, shifted) image.
_SECOND_IMAGE_FRACTION = 0.2

#: Probability that a metadata value is missing (NaN), per lesion.
_MISSING_RATE = {"age": 0.03, "sex": 0.02, "localization": 0.02}

_IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG"}
_COMPLETE_MARKER = "_skinfuse_synthetic.json"

_DESCR = """\
Synthetic skin lesions (skinfuse.datasets.make_synthetic_lesions)
----------------------------------------------------------------

Fake dermoscopy-like images (a coloured blob on noisy, skin-coloured
background) with HAM10000-style metadata (age, sex, localization). These are
not medical data: use them to test code, never to draw clinical conclusions.

- {n_samples} images of {n_lesions} lesions, {image_size} x {image_size} px,
  {image_format} files in {data_dir}
- classes: {classes}
- the image encodes mostly the class pair ``k // 2`` (lesion colour, size,
  border irregularity, texture); the metadata encodes mostly the class parity
  ``k % 2`` (age strongly, body site and sex weakly). Fusing both modalities
  is needed to separate all classes.
- about 20% of lesions have a second image (rotated and shifted); use
  ``groups`` (lesion ids) for grouped splits.
- about 3% of ages and 2% of sex / localization values are missing (NaN).
- ``masks`` holds the boolean lesion mask of every image.
"""


@validate_params(
    {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "image_size": [Interval(Integral, 8, None, closed="left")],
        "n_classes": [Interval(Integral, 2, None, closed="left")],
        "weights": ["array-like", None],
        "data_dir": [str, os.PathLike, None],
        "image_format": [StrOptions(set(_IMAGE_FORMATS))],
        "as_frame": ["boolean"],
        "return_X_y": ["boolean"],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_synthetic_lesions(
    n_samples=200,
    *,
    image_size=64,
    n_classes=7,
    weights=None,
    data_dir=None,
    image_format="png",
    as_frame=True,
    return_X_y=False,
    random_state=None,
):
    """Generate a synthetic multi-modal skin lesion data set on disk.

    Writes ``n_samples`` image files of lesion-like blobs on a noisy
    skin-coloured background and builds HAM10000-style metadata for them.
    The image carries mostly the class *pair* ``k // 2`` and the metadata
    mostly the class *parity* ``k % 2``, so a model needs both modalities to
    separate all classes (see the module docstring).

    Parameters
    ----------
    n_samples : int, default=200
        Number of images (rows). About 20% of lesions have two images, so
        there are fewer lesions than images.
    image_size : int, default=64
        Height and width of the square RGB images, in pixels (at least 8).
    n_classes : int, default=7
        Number of classes (at least 2). Up to 7, the classes are the first
        ``n_classes`` HAM10000 codes (``akiec``, ``bcc``, ``bkl``, ``df``,
        ``mel``, ``nv``, ``vasc``); above, ``class_0``, ``class_1``, ...
    weights : array-like of shape (n_classes,) or (n_classes - 1,), default=None
        Proportion of images in each class, as in
        :func:`sklearn.datasets.make_classification`. With ``n_classes - 1``
        values the last class gets the remainder. ``None`` means balanced.
        Every class gets at least one image.
    data_dir : str or path-like, default=None
        Folder to write the images to (created if needed). ``None`` uses
        ``get_data_home() / "synthetic" / <hash of the arguments>`` when
        ``random_state`` is an int (reused when already complete), and a
        fresh temporary folder otherwise.
    image_format : {"png", "jpg"}, default="png"
        File format of the images. JPEG is lossy: its pixels differ slightly
        from the generated ones.
    as_frame : bool, default=True
        If True, ``data`` is a DataFrame and ``target`` a Series; otherwise
        both are object ndarrays and ``frame`` is None.
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a ``Bunch``.
    random_state : int, RandomState instance or None, default=None
        Seed of the generator. The same int gives the same pixels and
        metadata.

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with attributes:

        frame : DataFrame of shape (n_samples, 8)
            Columns ``lesion_id, image_id, dx, dx_type, age, sex,
            localization, image_path`` (``dx_type`` is ``"synthetic"``,
            ``image_path`` absolute paths). None if ``as_frame=False``.
        data : DataFrame of shape (n_samples, 4)
            The model inputs ``image_path, age, sex, localization``.
        target : Series of shape (n_samples,)
            Diagnosis code ``dx``.
        groups : ndarray of shape (n_samples,)
            Lesion ids, for grouped cross-validation.
        target_names : ndarray of shape (n_classes,)
            Class names, in class-index order.
        feature_names : list of str
            Column names of ``data``.
        masks : ndarray of bool, shape (n_samples, image_size, image_size)
            Lesion mask of every image.
        DESCR : str
            Description of the data set.

    (data, target) : tuple if ``return_X_y`` is True

    Notes
    -----
    Classes ``2j`` and ``2j + 1`` form a *pair* that looks alike in the images
    (only odd classes are slightly darker); age, body site and sex tell the two
    apart. With ``n_classes=2`` the image therefore carries only that weak cue;
    use ``n_classes >= 4`` to see the benefit of fusing both modalities.

    With ``random_state=None`` (or a ``RandomState``) and ``data_dir=None`` the
    images go to a new temporary folder that is not removed; pass ``data_dir``
    to control where they go.

    Examples
    --------
    >>> import tempfile
    >>> from skinfuse.datasets import make_synthetic_lesions
    >>> bunch = make_synthetic_lesions(
    ...     50, image_size=16, n_classes=4, data_dir=tempfile.mkdtemp(), random_state=0
    ... )
    >>> bunch.data.columns.tolist()
    ['image_path', 'age', 'sex', 'localization']
    >>> bunch.target_names.tolist()
    ['akiec', 'bcc', 'bkl', 'df']
    >>> bunch.masks.shape
    (50, 16, 16)
    """
    # plain ints (numpy ints do not serialise into the cache key)
    n_samples, image_size, n_classes = int(n_samples), int(image_size), int(n_classes)
    if n_samples < n_classes:
        raise ValueError(
            f"n_samples={n_samples} is smaller than n_classes={n_classes}; "
            f"every class needs at least one image: pass n_samples >= {n_classes} "
            "or fewer classes."
        )
    weights = _check_weights(weights, n_classes)
    rng, seed = _rng_and_seed(random_state)

    # Only an int seed defines the data, so only then may files be reused.
    key = None
    if seed is not None:
        key = _cache_key(n_samples, image_size, n_classes, weights, image_format, seed)
    if data_dir is None:
        if key is not None:
            data_dir = get_data_home() / "synthetic" / key
        else:
            data_dir = tempfile.mkdtemp(prefix="skinfuse_synthetic_")
    data_dir = Path(data_dir).expanduser().resolve()

    if n_classes <= len(HAM10000_CLASSES):
        target_names = sorted(HAM10000_CLASSES)[:n_classes]
    else:
        target_names = [f"class_{k}" for k in range(n_classes)]

    # --- who is who: classes, lesions, second images --------------------------
    y, lesion_index, is_second = _make_design(n_samples, weights, rng)
    n_lesions = int(lesion_index.max()) + 1
    lesion_class = np.empty(n_lesions, dtype=np.int64)
    lesion_class[lesion_index] = y

    meta = _make_metadata(lesion_class, n_classes, rng)
    images, masks = make_images(y, lesion_index, is_second, n_classes, image_size, rng)

    file_names = [f"synth_{i:06d}.{image_format}" for i in range(n_samples)]
    paths = [str(data_dir / name) for name in file_names]
    _write_images(images, paths, data_dir, image_format, key)

    lesion_ids = np.array([f"SYNLES_{j:06d}" for j in range(n_lesions)], dtype=object)
    frame = pd.DataFrame(
        {
            "lesion_id": lesion_ids[lesion_index],
            "image_id": [f"SYN_{i:06d}" for i in range(n_samples)],
            "dx": np.asarray(target_names, dtype=object)[y],
            "dx_type": "synthetic",
            **{col: values[lesion_index] for col, values in meta.items()},
            IMAGE_COLUMN: paths,
        }
    )
    # same dtypes as load_ham10000: object columns of str (NaN where missing)
    for col in ("lesion_id", "image_id", "dx", "dx_type", *CATEGORICAL_METADATA, IMAGE_COLUMN):
        frame[col] = frame[col].astype(object)
    descr = _DESCR.format(
        n_samples=n_samples,
        n_lesions=n_lesions,
        image_size=image_size,
        image_format=image_format.upper(),
        data_dir=data_dir,
        classes=", ".join(target_names),
    )
    return make_bunch(
        frame,
        descr=descr,
        as_frame=as_frame,
        return_X_y=return_X_y,
        target_names=target_names,
        masks=masks,
    )


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------


def _rng_and_seed(random_state):
    """Return a numpy Generator and the int seed (None unless an int was given)."""
    if isinstance(random_state, Integral):
        return np.random.default_rng(int(random_state)), int(random_state)
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    return np.random.default_rng(seed), None


def _check_weights(weights, n_classes):
    if weights is None:
        return np.full(n_classes, 1.0 / n_classes)
    try:
        w = np.asarray(weights, dtype=float).ravel()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"weights={weights!r} is not a sequence of numbers; pass class "
            "proportions, e.g. [0.5, 0.3, 0.2] for 3 classes."
        ) from exc
    shown = w.tolist()
    if w.size == n_classes - 1:
        w = np.append(w, 1.0 - w.sum())
        if w[-1] <= 0:
            raise ValueError(
                f"weights={shown} sum to {w[:-1].sum():.4g}, leaving "
                "nothing for the last class; with n_classes - 1 weights their "
                "sum must be < 1."
            )
    elif w.size != n_classes:
        raise ValueError(
            f"weights has {w.size} values but n_classes={n_classes}; pass "
            f"{n_classes} proportions (or {n_classes - 1}, the last class gets "
            "the remainder)."
        )
    if not np.all(np.isfinite(w)) or np.any(w <= 0):
        raise ValueError(
            f"weights={shown} must all be finite and > 0; every class "
            "needs some images (use a smaller n_classes to drop classes)."
        )
    if not np.isclose(w.sum(), 1.0, rtol=0, atol=1e-6):
        raise ValueError(
            f"weights={shown} sum to {w.sum():.6g}, not 1; pass class "
            "proportions, e.g. np.asarray(weights) / np.sum(weights)."
        )
    return w


def _cache_key(n_samples, image_size, n_classes, weights, image_format, seed):
    """Hash of every argument that changes the files on disk."""
    payload = json.dumps(
        {
            "version": _GENERATOR_VERSION,
            "n_samples": n_samples,
            "image_size": image_size,
            "n_classes": n_classes,
            "weights": [round(float(w), 12) for w in weights],
            "image_format": image_format,
            "random_state": int(seed),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# design and metadata
# ---------------------------------------------------------------------------


def _class_counts(n_samples, weights):
    """Images per class: largest remainder, then at least one per class."""
    raw = n_samples * weights
    counts = np.floor(raw).astype(int)
    rest = n_samples - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:rest]] += 1
    for k in np.flatnonzero(counts == 0):
        counts[np.argmax(counts)] -= 1
        counts[k] += 1
    return counts


def _make_design(n_samples, weights, rng):
    """Class, lesion index and "is second image" flag of every row (shuffled)."""
    counts = _class_counts(n_samples, weights)
    y_parts, first_parts = [], []
    for k, n_k in enumerate(counts):
        # lesions with two images: _SECOND_IMAGE_FRACTION of the lesions
        n_double = min(
            round(float(n_k) * _SECOND_IMAGE_FRACTION / (1 + _SECOND_IMAGE_FRACTION)),
            n_k // 2,
        )
        n_les = n_k - n_double
        lesion_of_row = np.concatenate(
            [np.arange(n_les), rng.choice(n_les, size=n_double, replace=False)]
        )
        y_parts.append(np.full(n_k, k))
        first_parts.append(lesion_of_row)
    y = np.concatenate(y_parts)
    # make lesion indices global (ids are renumbered after shuffling)
    offsets = np.concatenate([[0], np.cumsum([p.max() + 1 for p in first_parts])])
    lesion = np.concatenate([p + o for p, o in zip(first_parts, offsets[:-1])])
    n_lesions = int(offsets[-1])

    order = rng.permutation(n_samples)
    y, lesion = y[order], lesion[order]
    # the first row of a lesion (in final order) is its "first" image
    _, first_row = np.unique(lesion, return_index=True)
    is_second = np.ones(n_samples, dtype=bool)
    is_second[first_row] = False
    # renumber lesions by first appearance, so ids follow the row order
    renumber = np.empty(n_lesions, dtype=np.int64)
    renumber[lesion[np.sort(first_row)]] = np.arange(n_lesions)
    return y, renumber[lesion], is_second


def _make_metadata(lesion_class, n_classes, rng):
    """Age, sex and localization per lesion (keyed by column name); mostly encode ``class % 2``."""
    n = lesion_class.size
    parity = lesion_class % 2
    pair = lesion_class // 2

    # age: strongly by parity, a little by pair, rounded to 5 years as in HAM10000
    age = rng.normal(38.0 + 27.0 * parity + 2.0 * (pair % 3), 11.0)
    age = np.clip(np.round(age / 5.0) * 5.0, 0.0, 85.0)

    # sex: weakly by parity
    p_male = 0.45 + 0.12 * parity
    sex = np.where(rng.random(n) < p_male, "male", "female").astype(object)

    # localization: HAM10000-like base, shifted by parity and a little by class
    n_loc = len(_LOCALIZATIONS)
    base = np.array([22, 21, 15, 11, 11, 7, 4, 3, 2, 1.5, 1, 0.6, 0.5, 0.2])
    base = base / base.sum()
    parity_pref = np.zeros((2, n_loc))
    parity_pref[0, [0, 2, 4, 6]] = 0.25  # trunk sites
    parity_pref[1, [5, 8, 9, 11]] = 0.25  # sun-exposed head and neck sites
    class_pref = np.zeros((n_classes, n_loc))
    class_pref[np.arange(n_classes), (3 * np.arange(n_classes)) % n_loc] = 1.0
    probs = 0.45 * base + 0.40 * parity_pref[np.arange(n_classes) % 2] + 0.15 * class_pref
    probs /= probs.sum(axis=1, keepdims=True)
    cdf = np.cumsum(probs[lesion_class], axis=1)
    loc_index = (rng.random((n, 1)) > cdf).sum(axis=1).clip(max=n_loc - 1)
    localization = np.asarray(_LOCALIZATIONS, dtype=object)[loc_index]

    age[rng.random(n) < _MISSING_RATE["age"]] = np.nan
    sex[rng.random(n) < _MISSING_RATE["sex"]] = np.nan
    localization[rng.random(n) < _MISSING_RATE["localization"]] = np.nan
    return {"age": age, "sex": sex, "localization": localization}


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def _write_images(images, paths, data_dir, image_format, key):
    """Write the images unless ``data_dir`` already holds this exact data set.

    ``key`` identifies the data set (None: not reproducible, always write).
    """
    from PIL import Image

    marker = data_dir / _COMPLETE_MARKER
    if marker.is_file():
        try:
            done = json.loads(marker.read_text()).get("key") == key
        except (OSError, ValueError):
            done = False
        if key is not None and done and all(os.path.isfile(p) for p in paths):
            return
        marker.unlink(missing_ok=True)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"cannot create data_dir={str(data_dir)!r} ({exc}); pass a writable folder as data_dir."
        ) from exc
    pil_format = _IMAGE_FORMATS[image_format]
    options = {"compress_level": 1} if pil_format == "PNG" else {"quality": 95}
    for img, path in zip(images, paths):
        Image.fromarray(img).save(path, format=pil_format, **options)
    if key is not None:
        marker.write_text(json.dumps({"key": key, "n_images": len(paths)}))
