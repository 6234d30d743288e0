import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skinfuse.datasets import FEATURE_NAMES, make_synthetic_lesions

COLUMNS = [
    "lesion_id",
    "image_id",
    "dx",
    "dx_type",
    "age",
    "sex",
    "localization",
    "image_path",
]
LOCALIZATIONS = {
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
}


def _read(paths):
    return np.stack([np.asarray(Image.open(p)) for p in paths])


@pytest.fixture(scope="module")
def bunch(tmp_path_factory):
    return make_synthetic_lesions(
        120, image_size=24, data_dir=tmp_path_factory.mktemp("synth"), random_state=0
    )


def test_bunch_layout_and_dtypes(bunch):
    frame = bunch.frame
    assert frame.columns.tolist() == COLUMNS
    assert frame.shape == (120, 8)
    assert bunch.data.columns.tolist() == FEATURE_NAMES
    assert bunch.feature_names == FEATURE_NAMES
    assert bunch.target.tolist() == frame["dx"].tolist()
    assert bunch.target_names.tolist() == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert set(bunch.target) == set(bunch.target_names)
    assert bunch.groups.tolist() == frame["lesion_id"].tolist()
    assert "Synthetic" in bunch.DESCR and "not medical data" in bunch.DESCR.replace("\n", " ")
    # same dtypes as load_ham10000
    assert frame["age"].dtype == np.float64
    for col in ("lesion_id", "image_id", "dx", "dx_type", "sex", "localization", "image_path"):
        assert frame[col].dtype == object, col
    assert (frame["dx_type"] == "synthetic").all()
    assert set(frame["sex"].dropna()) == {"male", "female"}
    assert set(frame["localization"].dropna()) <= LOCALIZATIONS
    ages = frame["age"].dropna()
    assert ages.between(0, 85).all() and (ages % 5 == 0).all()
    # clearly fake ids, unique per image
    assert frame["image_id"].tolist() == [f"SYN_{i:06d}" for i in range(120)]
    assert frame["lesion_id"].str.fullmatch(r"SYNLES_\d{6}").all()


def test_masks_shape(bunch):
    assert bunch.masks.shape == (120, 24, 24)
    assert bunch.masks.dtype == bool
    area = bunch.masks.mean(axis=(1, 2))
    assert (area > 0.01).all() and (area < 0.6).all()
    # the lesion never touches the border of the image
    border = np.concatenate(
        [bunch.masks[:, 0], bunch.masks[:, -1], bunch.masks[:, :, 0], bunch.masks[:, :, -1]],
        axis=1,
    )
    assert not border.any()


def test_files_exist_and_decode(bunch):
    paths = bunch.data["image_path"].tolist()
    assert len(set(paths)) == 120
    for i, path in enumerate(paths):
        assert os.path.isabs(path) and os.path.isfile(path)
        assert os.path.basename(path) == f"synth_{i:06d}.png"
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (24, 24)


def test_masks_align_with_images(bunch):
    images = _read(bunch.data["image_path"]).astype(float)
    for img, mask in zip(images, bunch.masks):
        inside = img[mask].mean(axis=0)
        outside = img[~mask].mean(axis=0)
        # lesions are darker / more saturated than the skin around them
        assert np.abs(inside - outside).max() > 15
    # skin is bright: the background is lighter than the lesion on average
    inside = np.array([img[m].mean() for img, m in zip(images, bunch.masks)])
    outside = np.array([img[~m].mean() for img, m in zip(images, bunch.masks)])
    assert (outside > inside).mean() > 0.9


def test_class_signal_lives_inside_the_lesion(tmp_path):
    bunch = make_synthetic_lesions(350, image_size=24, data_dir=tmp_path, random_state=1)
    images = _read(bunch.data["image_path"]).astype(float) / 255
    # background colour, away from the soft lesion border
    far = [
        img[~(m | np.roll(m, 1, 0) | np.roll(m, -1, 0) | np.roll(m, 1, 1) | np.roll(m, -1, 1))]
        for img, m in zip(images, bunch.masks)
    ]
    background = pd.DataFrame([f.mean(axis=0) for f in far]).groupby(bunch.target.to_numpy())
    lesion = pd.DataFrame([img[m].mean(axis=0) for img, m in zip(images, bunch.masks)])
    lesion = lesion.groupby(bunch.target.to_numpy())
    # per-class mean background colours agree within a few grey levels...
    assert np.ptp(background.mean().to_numpy(), axis=0).max() < 0.04
    # ...while lesion colours differ a lot between class pairs
    assert np.ptp(lesion.mean().to_numpy(), axis=0).max() > 0.2


def test_groups_second_images(bunch):
    frame = bunch.frame
    sizes = frame.groupby("lesion_id").size()
    assert set(sizes) == {1, 2}
    # about 20% of lesions have a second image
    assert 0.12 <= (sizes == 2).mean() <= 0.28
    # images of one lesion share class and metadata but not pixels
    meta_cols = ["dx", "age", "sex", "localization"]
    per_lesion = frame.groupby("lesion_id")[meta_cols].nunique(dropna=False)
    assert (per_lesion == 1).all().all()
    lesion = sizes[sizes == 2].index[0]
    a, b = frame.index[frame["lesion_id"] == lesion]
    images = _read(frame.loc[[a, b], "image_path"])
    assert not np.array_equal(images[0], images[1])
    # ... and lesion ids are numbered in order of first appearance
    first = frame.drop_duplicates("lesion_id")["lesion_id"]
    assert first.tolist() == [f"SYNLES_{j:06d}" for j in range(len(first))]


def test_missing_metadata_is_nan(tmp_path):
    frame = make_synthetic_lesions(3000, image_size=8, data_dir=tmp_path, random_state=0).frame
    lesions = frame.drop_duplicates("lesion_id")
    assert 0.015 < lesions["age"].isna().mean() < 0.05
    assert 0.008 < lesions["sex"].isna().mean() < 0.035
    assert 0.008 < lesions["localization"].isna().mean() < 0.035
    assert not (frame[["sex", "localization"]] == "unknown").any().any()
    assert frame[["lesion_id", "image_id", "dx", "image_path"]].notna().all().all()


def test_same_random_state_same_data(tmp_path):
    a = make_synthetic_lesions(40, image_size=16, data_dir=tmp_path / "a", random_state=7)
    b = make_synthetic_lesions(40, image_size=16, data_dir=tmp_path / "b", random_state=7)
    c = make_synthetic_lesions(40, image_size=16, data_dir=tmp_path / "c", random_state=8)
    cols = [col for col in COLUMNS if col != "image_path"]
    pd.testing.assert_frame_equal(a.frame[cols], b.frame[cols])
    np.testing.assert_array_equal(_read(a.data["image_path"]), _read(b.data["image_path"]))
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(_read(a.data["image_path"]), _read(c.data["image_path"]))
    assert not a.frame[cols].equals(c.frame[cols])
    assert not np.array_equal(a.masks, c.masks)


def test_random_state_instance_and_none(tmp_path):
    rs = np.random.RandomState(3)
    a = make_synthetic_lesions(20, image_size=8, data_dir=tmp_path / "a", random_state=rs)
    b = make_synthetic_lesions(20, image_size=8, data_dir=tmp_path / "b", random_state=rs)
    assert not np.array_equal(a.masks, b.masks)  # the instance advances
    c = make_synthetic_lesions(20, image_size=8, data_dir=tmp_path / "c")
    images_c = _read(c.data["image_path"])
    d = make_synthetic_lesions(20, image_size=8, data_dir=tmp_path / "c")
    # random_state=None never reuses old files: the images on disk are the new ones
    assert d.data["image_path"].tolist() == c.data["image_path"].tolist()
    assert not np.array_equal(c.masks, d.masks)
    assert not np.array_equal(_read(d.data["image_path"]), images_c)


def test_default_data_dir_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SKINFUSE_DATA_HOME", str(tmp_path))
    a = make_synthetic_lesions(30, image_size=8, random_state=0)
    folder = Path(a.data["image_path"][0]).parent
    assert folder.parent == tmp_path / "synthetic"
    stamp = os.stat(a.data["image_path"][0]).st_mtime_ns
    b = make_synthetic_lesions(30, image_size=8, random_state=0)
    assert b.data["image_path"].tolist() == a.data["image_path"].tolist()
    assert os.stat(b.data["image_path"][0]).st_mtime_ns == stamp  # reused, not rewritten
    # any other argument -> another folder
    c = make_synthetic_lesions(30, image_size=8, random_state=1)
    d = make_synthetic_lesions(30, image_size=8, weights=[0.3] + [0.7 / 6] * 6, random_state=0)
    folders = {Path(x.data["image_path"][0]).parent for x in (a, c, d)}
    assert len(folders) == 3
    # an incomplete folder is written again
    os.remove(a.data["image_path"][5])
    e = make_synthetic_lesions(30, image_size=8, random_state=0)
    assert os.path.isfile(e.data["image_path"][5])


def test_default_data_dir_without_seed_is_a_fresh_temp_dir():
    a = make_synthetic_lesions(10, image_size=8)
    b = make_synthetic_lesions(10, image_size=8)
    try:
        dir_a = Path(a.data["image_path"][0]).parent
        dir_b = Path(b.data["image_path"][0]).parent
        assert dir_a != dir_b and dir_a.is_dir() and dir_b.is_dir()
    finally:
        shutil.rmtree(dir_a, ignore_errors=True)
        shutil.rmtree(dir_b, ignore_errors=True)


@pytest.mark.parametrize(
    ("weights", "expected"),
    [
        (None, [34, 33, 33]),
        ([0.5, 0.3, 0.2], [50, 30, 20]),
        ([0.6, 0.3], [60, 30, 10]),
        ([0.998, 0.001, 0.001], [98, 1, 1]),
    ],
)
def test_weights_give_class_counts(tmp_path, weights, expected):
    bunch = make_synthetic_lesions(
        100, image_size=8, n_classes=3, weights=weights, data_dir=tmp_path, random_state=0
    )
    counts = bunch.target.value_counts().reindex(["akiec", "bcc", "bkl"])
    assert counts.tolist() == expected


def test_many_classes_and_jpeg(tmp_path):
    bunch = make_synthetic_lesions(
        60, image_size=16, n_classes=9, image_format="jpg", data_dir=tmp_path, random_state=0
    )
    assert bunch.target_names.tolist() == [f"class_{k}" for k in range(9)]
    assert set(bunch.target) == set(bunch.target_names)
    path = bunch.data["image_path"][0]
    assert re.fullmatch(r"synth_000000\.jpg", os.path.basename(path))
    with Image.open(path) as img:
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (16, 16)


def test_as_frame_false_and_return_X_y(tmp_path):
    bunch = make_synthetic_lesions(
        20, image_size=8, n_classes=2, as_frame=False, data_dir=tmp_path, random_state=0
    )
    assert bunch.frame is None
    assert isinstance(bunch.data, np.ndarray) and bunch.data.shape == (20, 4)
    assert isinstance(bunch.target, np.ndarray) and set(bunch.target) == {"akiec", "bcc"}
    assert bunch.masks.shape == (20, 8, 8)
    X, y = make_synthetic_lesions(
        20, image_size=8, n_classes=2, return_X_y=True, data_dir=tmp_path, random_state=0
    )
    assert X.columns.tolist() == FEATURE_NAMES and len(y) == 20
    assert X["image_path"].tolist() == bunch.data[:, 0].tolist()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_samples": 0}, ValueError, r"'n_samples' .* int in the range \[1, inf\)\. Got 0"),
        ({"n_samples": 2.5}, TypeError, r"'n_samples' .* int in the range \[1, inf\)\. Got 2\.5"),
        ({"n_samples": 5, "n_classes": 7}, ValueError, "n_samples >= 7"),
        ({"n_classes": 1}, ValueError, r"'n_classes' .* int in the range \[2, inf\)\. Got 1"),
        ({"image_size": 4}, ValueError, r"'image_size' .* int in the range \[8, inf\)\. Got 4"),
        ({"image_format": "bmp"}, ValueError, r"'image_format' .* a str among .* Got 'bmp'"),
        ({"weights": [0.5, 0.5]}, ValueError, "weights has 2 values but n_classes=7"),
        ({"n_classes": 3, "weights": [0.5, 0.3, 0.3]}, ValueError, "sum to 1.1, not 1"),
        ({"n_classes": 3, "weights": [0.7, 0.4]}, ValueError, "nothing for the last class"),
        ({"n_classes": 3, "weights": [0.5, 0.6, -0.1]}, ValueError, "finite and > 0"),
        ({"n_classes": 2, "weights": ["a", "b"]}, TypeError, "not a sequence of numbers"),
        ({"random_state": -1}, ValueError, "'random_state' parameter of make_synthetic_lesions"),
        ({"random_state": "0"}, TypeError, "'random_state' parameter of make_synthetic_lesions"),
        ({"data_dir": 3}, TypeError, "'data_dir' parameter of make_synthetic_lesions"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, error, match):
    params = {"n_samples": 20, "image_size": 8, "data_dir": tmp_path, "random_state": 0}
    with pytest.raises(error, match=match):
        make_synthetic_lesions(**{**params, **kwargs})
    assert not list(tmp_path.iterdir())  # nothing written for bad arguments


def _image_features(paths, cells=8):
    """Per-channel mean and std plus an 8 x 8 thumbnail of every image."""
    images = _read(paths).astype(float) / 255
    n, size = images.shape[:2]
    block = size // cells
    thumb = images.reshape(n, cells, block, cells, block, 3).mean(axis=(2, 4))
    return np.hstack([images.mean(axis=(1, 2)), images.std(axis=(1, 2)), thumb.reshape(n, -1)])


def _metadata_features(data):
    age = data["age"].to_numpy(float)
    missing = np.isnan(age)
    age = np.where(missing, np.nanmean(age), age)
    onehot = pd.get_dummies(data[["sex", "localization"]], dummy_na=True).to_numpy(float)
    return np.column_stack([age, missing, onehot])


def test_fusion_beats_each_modality(tmp_path):
    bunch = make_synthetic_lesions(400, image_size=32, data_dir=tmp_path, random_state=0)
    y = bunch.target.to_numpy()
    X_image = _image_features(bunch.data["image_path"])
    X_meta = _metadata_features(bunch.data)
    train, test = next(
        GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0).split(
            X_image, y, groups=bunch.groups
        )
    )
    assert not set(bunch.groups[train]) & set(bunch.groups[test])
    accuracy = {}
    for name, X in {
        "image": X_image,
        "metadata": X_meta,
        "fusion": np.hstack([X_image, X_meta]),
    }.items():
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        accuracy[name] = model.fit(X[train], y[train]).score(X[test], y[test])
    majority = pd.Series(y[test]).value_counts(normalize=True).iloc[0]
    assert accuracy["image"] > majority + 0.1, accuracy
    assert accuracy["metadata"] > majority + 0.05, accuracy
    assert accuracy["fusion"] > max(accuracy["image"], accuracy["metadata"]) + 0.05, accuracy
