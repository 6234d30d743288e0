"""The layout of a model file (its members, its format version) and the types it may hold."""

from __future__ import annotations

#: The layout of a model file; bumped when a file written now could not be read back the
#: same way by an older skinfuse.
FORMAT_VERSION = 1
_FORMAT_NAME = "skinfuse-model"

_MANIFEST = "manifest.json"
_SKOPS = "model.skops"
_WEIGHTS = "weights.safetensors"
_HISTORIES = "histories.json"

#: Types outside skops' defaults (scikit-learn's estimators, NumPy arrays, builtins) that
#: the models skinfuse builds need, by their import path. skinfuse's own classes are added
#: by :func:`_trusted_types`.
TRUSTED_TYPES = (
    "imblearn.pipeline.Pipeline",
    "imblearn.over_sampling._smote.base.SMOTE",
    "imblearn.over_sampling._random_over_sampler.RandomOverSampler",
    "imblearn.under_sampling._prototype_selection._random_under_sampler.RandomUnderSampler",
    "numpy.dtype",
    "sklearn.calibration._TemperatureScaling",  # TemperatureCalibratedClassifier.calibrator_
    "sklearn.feature_selection._univariate_selection.f_classif",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",  # VotingClassifier.named_estimators_ (a dict of its steps)
)


class _TorchPart:
    """Placeholder for a torch part of an estimator in the skops payload (rebuilt on load)."""

    def __init__(self, key, kind):
        self.key = key
        self.kind = kind

    def __repr__(self):
        return f"_TorchPart({self.key!r}, {self.kind!r})"


# Every model file names this class by its import path (skops records types by path, and
# load trusts it by that name): it keeps the path it had when the format was written,
# where the package re-exports it.
_TorchPart.__module__ = "skinfuse._model_files"


def _type_name(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _skinfuse_types() -> list[str]:
    """skinfuse's own classes that may appear in a model (imports no torch)."""
    from .._metadata_steps import CategoryNormalizer, NumberChecker
    from ..calibration import TemperatureCalibratedClassifier
    from ..conformal import PredictionSets
    from ..encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
    from ..fusion import FusionNetClassifier
    from ..imbalance import AdaptiveSMOTE, PriorCorrectedClassifier

    classes = (
        CategoryNormalizer, NumberChecker, FrozenCNNEncoder, FineTunedCNNEncoder,
        ConvAutoencoderEncoder, FusionNetClassifier, AdaptiveSMOTE, PriorCorrectedClassifier,
        TemperatureCalibratedClassifier, PredictionSets, _TorchPart,
    )  # fmt: skip
    return [_type_name(cls) for cls in classes]


def _trusted_types(extra=None) -> list[str]:
    extra = [] if extra is None else list(extra)
    if not all(isinstance(name, str) for name in extra):
        raise TypeError(
            f"trusted must be a list of type names such as 'mypackage.module.MyClass'; got "
            f"{extra!r}"
        )
    return sorted({*TRUSTED_TYPES, *_skinfuse_types(), *extra})
