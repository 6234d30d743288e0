"""Lesion-grouped early stopping and cross-fitting: ``fit(X, y, groups=...)`` and routing."""

import numpy as np
import pytest
import sklearn
from sklearn.model_selection import GroupKFold, cross_validate

from skinfuse._nn import splits as training
from skinfuse._nn.splits import check_groups, validation_split
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import FineTunedCNNEncoder
from skinfuse.fusion import FusionNetClassifier
from skinfuse.pipeline import make_fusion_pipeline

TINY = dict(
    backbone="tiny_cnn", weights=None, image_size=32, max_epochs=2, batch_size=32,
    augment=False, num_workers=0, random_state=0, validation_fraction=0.2, patience=1,
)  # fmt: skip


@pytest.fixture(scope="module")
def lesions(tmp_path_factory):
    return make_synthetic_lesions(
        n_samples=120, image_size=32, n_classes=3, random_state=0,
        data_dir=tmp_path_factory.mktemp("groups"),
    )  # fmt: skip


def _disjoint(groups, train, valid):
    return not set(groups[train]) & set(groups[valid])


# -- the split itself -------------------------------------------------------------------------
def test_validation_split_holds_out_whole_groups():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(100), 3)  # 3 images per lesion
    y = np.repeat(rng.integers(0, 3, 100), 3)
    train, valid = validation_split(300, y, 0.1, seed=0, groups=groups)
    assert _disjoint(groups, train, valid)
    assert sorted(np.concatenate([train, valid])) == list(range(300))
    assert len(valid) == 30  # 1/10 of the lesions, 3 images each
    assert set(y[valid]) == {0, 1, 2}  # stratified as far as groups allow
    # the same seed, the same split; another seed, another one
    again = validation_split(300, y, 0.1, seed=0, groups=groups)
    np.testing.assert_array_equal(valid, again[1])
    other = validation_split(300, y, 0.1, seed=1, groups=groups)
    assert set(other[1]) != set(valid)
    # above one half the training side is the fold: 0.75 holds out 3 of 4 parts
    train, valid = validation_split(300, y, 0.75, seed=0, groups=groups)
    assert _disjoint(groups, train, valid) and len(valid) == 225


@pytest.mark.parametrize(
    "fraction, held_out",
    [(0.1, 30), (0.15, 42), (0.4, 99), (0.45, 150), (0.6, 201), (0.75, 225)],
)  # fmt: skip
def test_validation_split_holds_out_the_nearest_share(fraction, held_out):
    """1/k nearest the fraction (0.4 -> 1/3, not 1/2; 0.6 -> 2/3): 300 images, 3 a lesion."""
    groups = np.repeat(np.arange(100), 3)
    y = np.repeat(np.arange(100) % 3, 3)
    train, valid = validation_split(300, y, fraction, seed=0, groups=groups)
    assert len(valid) == pytest.approx(held_out, abs=3) and _disjoint(groups, train, valid)


def test_validation_split_without_groups_is_the_stratified_split():
    y = np.repeat([0, 1], 50)
    a = validation_split(100, y, 0.2, seed=3)
    b = training.stratified_split(100, y, 0.2, seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    assert validation_split(100, y, 0.0, seed=3, groups=np.arange(100))[1] is None


def test_too_few_groups_and_bad_groups_say_so():
    y = np.repeat([0, 1], 10)
    with pytest.raises(ValueError, match="only 4 distinct groups"):
        validation_split(20, y, 0.1, seed=0, groups=np.repeat(np.arange(4), 5))
    with pytest.raises(ValueError, match="groups has 3 labels but X has 20 images"):
        check_groups([1, 2, 3], 20)
    with pytest.raises(ValueError, match=r"set_fit_request\(groups=False\)"):  # a sampler
        check_groups(np.arange(30), 40)


# -- the estimators ---------------------------------------------------------------------------
@pytest.fixture
def splits(monkeypatch):
    """Record every early-stopping split the training loop makes (and its groups)."""
    seen = []

    def spy(n, y_idx, fraction, seed, groups=None):
        train, valid = validation_split(n, y_idx, fraction, seed, groups)
        seen.append((groups, train, valid))
        return train, valid

    monkeypatch.setattr(training, "validation_split", spy)
    return seen


def test_fusion_net_early_stopping_never_sees_a_training_lesion(lesions, splits):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    net = FusionNetClassifier(**TINY).fit(X, y, groups=groups)
    (seen, train, valid), = splits  # fmt: skip
    np.testing.assert_array_equal(seen, groups)
    assert _disjoint(groups, train, valid)
    assert "valid_loss" in net.history_[-1]
    # without groups, the image-level split: here it mixes lesions
    FusionNetClassifier(**TINY).fit(X, y)
    seen, train, valid = splits[-1]
    assert seen is None and not _disjoint(groups, train, valid)


def test_partial_fine_tuning_split_is_grouped_too(lesions, splits):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    params = {**TINY, "trainable_blocks": 1, "cached_views": 2, "augment": True}
    FusionNetClassifier(**params).fit(X, y, groups=groups)
    _, train, valid = splits[-1]
    assert _disjoint(groups, train, valid)


def test_groups_reach_the_network_through_metadata_routing(lesions, splits):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    with sklearn.config_context(enable_metadata_routing=True):
        cross_validate(FusionNetClassifier(**TINY), X, y, cv=GroupKFold(2),
                       params={"groups": groups})  # fmt: skip
    assert len(splits) == 2
    for seen, train, valid in splits:  # each fold's training lesions, split by lesion
        assert seen is not None and len(seen) == 60
        assert _disjoint(seen, train, valid)
    # a user may opt out: the split is then image-level again
    splits.clear()
    with sklearn.config_context(enable_metadata_routing=True):
        net = FusionNetClassifier(**TINY).set_fit_request(groups=False)
        cross_validate(net, X, y, cv=GroupKFold(2), params={"groups": groups})
    assert [seen for seen, _, _ in splits] == [None, None]


def test_fine_tuned_encoder_in_a_fusion_pipeline_gets_the_groups(lesions, splits):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    encoder = FineTunedCNNEncoder(**TINY, cross_fit=None)
    with sklearn.config_context(enable_metadata_routing=True):
        make_fusion_pipeline(encoder, sampler=None).fit(X, y, groups=groups)
    (seen, train, valid), = splits  # fmt: skip
    np.testing.assert_array_equal(seen, groups)
    assert _disjoint(groups, train, valid)


def test_cross_fitting_folds_hold_out_whole_lesions(lesions, monkeypatch):
    X, y, groups = lesions.data, lesions.target, lesions.groups
    group_of = dict(zip(X["image_path"], groups))
    trained = []
    real = FineTunedCNNEncoder._train

    def spy(self, items, y_idx, seed, groups=None, **kwargs):
        trained.append((set(items), groups))
        return real(self, items, y_idx, seed, groups, **kwargs)

    monkeypatch.setattr(FineTunedCNNEncoder, "_train", spy)
    params = {**TINY, "validation_fraction": 0.0, "max_epochs": 1}
    out = FineTunedCNNEncoder(**params, cross_fit=3).fit_transform(X["image_path"], y, groups)
    assert out.shape[0] == len(X) and len(trained) == 4  # the final network, then 3 folds
    for items, fold_groups in trained[1:]:
        held_out = set(X["image_path"]) - items
        assert {group_of[i] for i in items}.isdisjoint({group_of[i] for i in held_out})
        assert sorted(fold_groups) == sorted(group_of[i] for i in items)


def test_late_fusion_routes_groups_to_its_image_network(lesions, splits):
    from skinfuse.fusion import LateFusionClassifier

    X, y, groups = lesions.data, lesions.target, lesions.groups
    model = LateFusionClassifier(FusionNetClassifier(**TINY, metadata=None))
    with sklearn.config_context(enable_metadata_routing=True):
        model.fit(X, y, groups=groups)
    (seen, train, valid), = splits  # fmt: skip
    np.testing.assert_array_equal(seen, groups)
    assert _disjoint(groups, train, valid)
    with pytest.raises(ValueError, match="enable_metadata_routing"):  # routing off: refused
        model.fit(X, y, groups=groups)
