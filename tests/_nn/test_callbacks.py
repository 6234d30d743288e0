"""callbacks= and checkpoint_dir= of the skorch-trained estimators: the user's callbacks see
every epoch, a fit killed after epoch k resumes from its checkpoint_dir and ends with the
weights of an uninterrupted fit (bit for bit, on the CPU), clone/get_params/set_params keep
the callbacks, and model files store neither."""

import numpy as np
import pytest
import torch
from sklearn.base import clone
from skorch.callbacks import Callback

import skinfuse
from skinfuse.encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder
from skinfuse.fusion import FusionNetClassifier

# a validation split with early stopping, a warm-up then cosine schedule, augmentation and
# dropout-free tiny CNN: every piece of state a resumed fit has to get back
TINY = dict(
    backbone="tiny_cnn", weights=None, image_size=16, max_epochs=4, lr=3e-3, batch_size=16,
    validation_fraction=0.25, patience=3, warmup_epochs=1, augment=True, cross_fit=None,
    num_workers=0, cache=False, random_state=0,
)  # fmt: skip


class Recorder(Callback):
    """Records the epoch number of every epoch it sees."""

    def __init__(self, seen=None):
        self.seen = seen

    def on_epoch_end(self, net, **kwargs):
        self.seen.append(len(net.history))


class Killer(Callback):
    """Raises once epoch ``at`` has ended, as a crash or a killed job would during the next
    (an exception in an epoch's own on_epoch_end comes before its state is written: that
    epoch is replayed)."""

    def __init__(self, at=2):
        self.at = at

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == self.at + 1:  # the new epoch's row is there already
            raise RuntimeError("killed")


def _weights(est):
    return {k: v.clone() for k, v in est.net_.module_.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def images(lesions):
    return lesions.data[["image_path"]].iloc[:64], lesions.target.to_numpy()[:64]


def test_a_recording_callback_sees_every_epoch(images):
    X, y = images
    seen = []
    enc = FineTunedCNNEncoder(**{**TINY, "patience": None}, callbacks=[Recorder(seen)])
    enc.fit(X, y)
    assert seen == [1, 2, 3, 4]
    assert enc.n_iter_ == 4
    # the built-in callbacks are still there, the user's list is left as given
    assert isinstance(enc.callbacks[0], Recorder) and len(enc.callbacks) == 1
    seen_ae = []
    ae = ConvAutoencoderEncoder(
        4, image_size=16, channels=(4, 8), max_epochs=3, cache=False, random_state=0,
        callbacks=[("recorder", Recorder(seen_ae))],
    ).fit(X)  # fmt: skip
    assert seen_ae == [1, 2, 3] and len(ae.history_) == 3


def test_a_killed_fit_resumes_to_the_uninterrupted_weights(images, tmp_path):
    """Bit-identical, not allclose: the resumed fit restores the weights, the optimizer, the
    scheduler, early stopping's state and every random stream (shuffling, augmentation),
    so it runs exactly the same float operations on the same CPU."""
    X, y = images
    whole = FineTunedCNNEncoder(**TINY).fit(X, y)
    with pytest.raises(RuntimeError, match="killed"):
        FineTunedCNNEncoder(**TINY, checkpoint_dir=tmp_path, callbacks=[Killer(2)]).fit(X, y)
    assert (tmp_path / "final" / "state.pt").exists()
    seen = []
    resumed = FineTunedCNNEncoder(**TINY, checkpoint_dir=tmp_path, callbacks=[Recorder(seen)])
    resumed.fit(X, y)
    assert seen == [3, 4]  # went on after epoch 2, did not start over
    assert resumed.n_iter_ == whole.n_iter_ == 4
    _assert_same_weights(_weights(resumed), _weights(whole))
    np.testing.assert_array_equal(
        resumed.history_[:, "valid_loss"], whole.history_[:, "valid_loss"]
    )
    # a finished fit: loaded without training, the same weights again
    seen.clear()
    again = FineTunedCNNEncoder(**TINY, checkpoint_dir=tmp_path, callbacks=[Recorder(seen)])
    _assert_same_weights(_weights(again.fit(X, y)), _weights(whole))
    assert seen == []


def test_a_checkpoint_of_another_fit_is_refused(images, tmp_path):
    X, y = images
    FineTunedCNNEncoder(**{**TINY, "max_epochs": 1}, checkpoint_dir=tmp_path).fit(X, y)
    with pytest.raises(ValueError, match="state of another fit.*new checkpoint_dir"):
        FineTunedCNNEncoder(**TINY, checkpoint_dir=tmp_path).fit(X, y)


def test_cross_fitting_writes_one_state_per_network(images, tmp_path):
    X, y = images
    params = {**TINY, "max_epochs": 1, "cross_fit": 2, "patience": None}
    FineTunedCNNEncoder(**params, checkpoint_dir=tmp_path).fit_transform(X, y)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "fold-1", "fold-2"]


def test_callbacks_are_parameters(images):
    rec = Recorder([])
    enc = FineTunedCNNEncoder(**TINY, callbacks=[("rec", rec)], checkpoint_dir="ckpt")
    params = enc.get_params()
    assert params["callbacks"][0][1] is rec and params["checkpoint_dir"] == "ckpt"
    copy = clone(enc)
    name, cb = copy.callbacks[0]
    assert name == "rec" and isinstance(cb, Recorder) and cb is not rec
    assert copy.get_params()["checkpoint_dir"] == "ckpt"
    copy.set_params(callbacks=None, checkpoint_dir=None)
    assert copy.callbacks is None and enc.callbacks[0][1] is rec
    with pytest.raises(ValueError, match="callbacks"):
        FineTunedCNNEncoder(**TINY, callbacks=Recorder([])).fit(*images)


def test_model_files_store_neither_callbacks_nor_checkpoint_dir(lesions, tmp_path):
    """A model fitted with callbacks saves (they are dropped, as the training machine's
    business); the fitted estimator keeps them; the loaded one predicts the same."""
    X, y = lesions.data.iloc[:64], lesions.target.to_numpy()[:64]
    seen = []
    net = FusionNetClassifier(
        "tiny_cnn", weights=None, image_size=16, max_epochs=2, validation_fraction=0,
        num_workers=0, random_state=0, callbacks=[Recorder(seen)],
        checkpoint_dir=tmp_path / "ckpt",
    ).fit(X, y)  # fmt: skip
    assert seen == [1, 2]
    loaded = skinfuse.load(skinfuse.save(net, tmp_path / "net.skinfuse"))
    assert loaded.callbacks is None and loaded.checkpoint_dir is None
    assert isinstance(net.callbacks[0], Recorder) and net.checkpoint_dir == tmp_path / "ckpt"
    np.testing.assert_array_equal(loaded.predict_proba(X), net.predict_proba(X))
