"""Fixtures of the explain tests: a CNN *trained* on synthetic lesions, and a stand-in
estimator that implements the ``__skinfuse_gradcam__`` protocol with it."""

import copy

import matplotlib
import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from skinfuse._nn.backbones import IMAGENET_MEAN, IMAGENET_STD, ImageEmbedder
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.images import load_images

matplotlib.use("Agg")

SIZE = 32
PAIR = {"akiec": "brown", "bcc": "brown", "bkl": "pink", "df": "pink"}


def pair_of(y):
    """The image-borne label of 4-class synthetic lesions: the class pair (colour, size...)."""
    return np.array([PAIR[v] for v in np.asarray(y)], dtype=object)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny convolutions run faster on one thread, the more so on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _features():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
    )  # fmt: skip


class PairCNNClassifier(ClassifierMixin, BaseEstimator):
    """A stand-in for FineTunedCNNEncoder / FusionNetClassifier: a small CNN classifier of
    images (a column of paths) that implements the ``__skinfuse_gradcam__`` protocol."""

    def __init__(self, *, epochs=10, image_size=SIZE, random_state=0):
        self.epochs = epochs
        self.image_size = image_size
        self.random_state = random_state

    def _pixels(self, X):
        column = X[["image_path"]] if hasattr(X, "columns") else X
        images, _ = load_images(column, size=self.image_size)
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    def fit(self, X, y):
        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        x, t = self._pixels(X), torch.from_numpy(codes)
        with torch.random.fork_rng():
            torch.manual_seed(self.random_state)
            net = nn.Sequential(
                ImageEmbedder(_features(), IMAGENET_MEAN, IMAGENET_STD),
                nn.Linear(16, len(self.classes_)),
            )
            opt = torch.optim.Adam(net.parameters(), lr=3e-3)
            for _ in range(self.epochs):
                for idx in torch.randperm(len(x)).split(32):
                    loss = nn.functional.cross_entropy(net(x[idx]), t[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        self.net_ = net.eval()
        return self

    def predict_proba(self, X):
        with torch.no_grad():
            return torch.softmax(self.net_(self._pixels(X)), dim=1).numpy()

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __skinfuse_gradcam__(self, X):
        return self.net_, "0.features.6", self.image_size, self.classes_


def randomized(estimator, seed=1):
    """Model-parameter randomization (Adebayo et al. 2018): same architecture, new weights."""
    out = copy.deepcopy(estimator)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for m in out.net_.modules():
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return out


@pytest.fixture(scope="session")
def unseen(tmp_path_factory):
    """40 other synthetic lesions (not used for training), with their lesion masks."""
    return make_synthetic_lesions(
        n_samples=40, image_size=SIZE, n_classes=4, random_state=1,
        data_dir=tmp_path_factory.mktemp("unseen"),
    )  # fmt: skip


@pytest.fixture(scope="session")
def pair_cnn(lesions):
    """The stand-in estimator trained (10 epochs, < 1 s) to tell the lesion pairs apart."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return PairCNNClassifier().fit(lesions.data, pair_of(lesions.target))
    finally:
        torch.set_num_threads(before)


def lesion_focus(heat, masks):
    """(share of the heat inside the lesion, median per image of mean heat inside / outside)."""
    heat = np.asarray(heat, dtype=np.float64)
    inside = (heat * masks).sum(axis=(1, 2))
    share = float(np.mean(inside / np.maximum(heat.sum(axis=(1, 2)), 1e-12)))
    mean_in = inside / masks.sum(axis=(1, 2))
    mean_out = (heat * ~masks).sum(axis=(1, 2)) / (~masks).sum(axis=(1, 2))
    ratio = float(np.median(mean_in / np.maximum(mean_out, 1e-12)))
    return share, ratio
