"""On a real Dask cluster (a LocalCluster of 2 worker processes): grid search, cross-validation
and permutation importance under joblib's dask backend score as in one process and encode
each image once cluster-wide; embed_images survives a worker killed midway."""

import multiprocessing
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

distributed = pytest.importorskip("distributed")

import joblib  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    StratifiedGroupKFold,
    cross_validate,
)

from skinfuse.encoders import FrozenCNNEncoder, cache_info, clear_cache, embed_images  # noqa: E402
from skinfuse.pipeline import make_fusion_pipeline  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:column .* not seen in fit:UserWarning"),  # small folds
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),  # f_classif
    pytest.mark.filterwarnings("ignore:Features .* are constant:UserWarning"),
]
TINY = dict(backbone="tiny_cnn", weights=None, image_size=16, batch_size=8)


@pytest.fixture(scope="module")
def client():
    """2 worker processes of one thread each, with skinfuse and torch imported already."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.run(lambda: __import__("skinfuse.encoders") and None)
        yield client


@pytest.fixture
def fresh(client):
    """Both workers up, with empty in-memory caches and zeroed counters."""
    client.wait_for_workers(2, timeout=60)
    client.run(clear_cache)
    return client


def _encoded(client):
    """Images encoded since the last clear_cache, by the workers and by this process."""
    on_workers = client.run(lambda: cache_info()["encoded"])
    return sum(on_workers.values()), cache_info()["encoded"]


def _model(cache_dir):
    return make_fusion_pipeline(
        FrozenCNNEncoder(**TINY, cache_dir=str(cache_dir)),
        select_k=8,
        sampler=None,
        classifier="logreg",
        random_state=0,
    )


def _data(lesions):
    return lesions.data, lesions.target, lesions.groups


CV = StratifiedGroupKFold(n_splits=3, shuffle=True, random_state=0)


def test_grid_search_scores_as_one_process_and_encodes_each_image_once(fresh, lesions, tmp_path):
    X, y, groups = _data(lesions)
    grid = {"classifier__C": [0.1, 1.0], "select__k": [8, "all"]}
    alone = GridSearchCV(_model(tmp_path / "alone"), grid, cv=CV, n_jobs=1)
    alone.fit(X, y, groups=groups)
    clear_cache()
    with joblib.parallel_config(backend="dask"):
        spread = GridSearchCV(_model(tmp_path / "cluster"), grid, cv=CV, n_jobs=-1)
        spread.fit(X, y, groups=groups)
    on_workers, here = _encoded(fresh)
    assert on_workers > 0  # the fits ran on the workers
    assert on_workers + here == X["image_path"].nunique() == 120
    for key, value in alone.cv_results_.items():
        if "test_score" in key:
            np.testing.assert_array_equal(spread.cv_results_[key], value, err_msg=key)
    assert spread.best_params_ == alone.best_params_


def test_cross_validate_and_permutation_importance_score_as_one_process(fresh, lesions, tmp_path):
    X, y, groups = _data(lesions)
    alone = cross_validate(_model(tmp_path / "alone"), X, y, groups=groups, cv=CV)
    model = _model(tmp_path / "alone").fit(X, y)
    importance = permutation_importance(model, X, y, n_repeats=2, random_state=0)
    clear_cache()
    with joblib.parallel_config(backend="dask"):
        spread = cross_validate(_model(tmp_path / "cluster"), X, y, groups=groups, cv=CV, n_jobs=-1)
        spread_importance = permutation_importance(
            model, X, y, n_repeats=2, random_state=0, n_jobs=-1
        )
    np.testing.assert_array_equal(spread["test_score"], alone["test_score"])
    np.testing.assert_array_equal(spread_importance.importances, importance.importances)
    on_workers, here = _encoded(fresh)
    assert on_workers + here == 120  # cross-validation; permutations read the "alone" cache


# -- bulk embedding with a worker killed midway ---------------------------------------------------
class DiesAtBlankImage(nn.Module):
    """A tiny backbone that, in a Dask worker (a daemonic process), notes how many images
    each call gets (a file per process under ``log``) and kills its process, once
    (``log/died``), at the first blank image; elsewhere an ordinary convolution."""

    def __init__(self, log):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.log = log

    def forward(self, x):
        if not multiprocessing.current_process().daemon:
            return self.conv(x)
        per_channel = x.flatten(2)
        if (per_channel.amax(2) == per_channel.amin(2)).all(1).any():
            try:
                os.close(os.open(os.path.join(self.log, "died"), os.O_CREAT | os.O_EXCL))
            except FileExistsError:  # died once already
                pass
            else:
                time.sleep(1.0)  # chunks finished elsewhere reach the client first
                os._exit(1)
        with open(os.path.join(self.log, f"{os.getpid()}.txt"), "a") as f:
            f.write(f"{len(x)}\n")
        return self.conv(x)


def test_embed_images_survives_a_worker_killed_midway(fresh, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (240, 12, 12, 3), dtype=np.uint8)
    images[130] = 7  # blank: kills its worker in the second batch of chunk 7 of 12
    (tmp_path / "images").mkdir()
    paths = [str(tmp_path / "images" / f"{i}.png") for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(image).save(path)
    (tmp_path / "log").mkdir()
    torch.manual_seed(0)
    module = DiesAtBlankImage(str(tmp_path / "log"))
    encoder = FrozenCNNEncoder(module, weights=None, image_size=16, batch_size=8).fit(paths)
    cache_dir = tmp_path / "cache"
    done = embed_images(encoder, paths, cache_dir=cache_dir, client=fresh, chunk_size=20, verbose=0)
    assert (tmp_path / "log" / "died").exists()  # a worker did die
    # every image went through the network once, and the dead worker's first batch of
    # chunk 7 once more: its chunk was redone, no finished chunk was
    counts = [int(n) for f in (tmp_path / "log").glob("*.txt") for n in f.read_text().split()]
    assert sum(counts) == 240 + 8
    assert (done.encoded + done.skipped, done.n_chunks) == (240, 12)
    assert len(list(cache_dir.rglob("*.v2.npz"))) == 12
    clear_cache()
    reader = FrozenCNNEncoder(module, weights=None, image_size=16, batch_size=8)
    out = reader.set_params(cache_dir=str(cache_dir)).fit(paths).transform(paths)
    assert cache_info()["encoded"] == 0
    expected = FrozenCNNEncoder(module, weights=None, image_size=16, cache=False).fit(paths)
    np.testing.assert_allclose(out, expected.transform(paths), rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_each_worker_picks_its_own_device(fresh, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8)
    encoder = FrozenCNNEncoder(**TINY).fit(images)
    encoder.device_ = "cpu"  # as if fitted where there is no GPU
    done = embed_images(encoder, images, cache_dir=tmp_path, client=fresh, chunk_size=10, verbose=0)
    assert [os.path.basename(f).rpartition("-")[2] for f in done.folders] == ["bf16"]
