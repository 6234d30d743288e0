"""Fusion pipelines: image embedding + metadata -> (selection) -> (resampling) -> classifier."""

from __future__ import annotations

from numbers import Integral, Real

from imblearn.pipeline import Pipeline
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from ._columns import IMAGE_COLUMN, METADATA_COLUMNS
from ._utils._sklearn import HasMethods, Interval, StrOptions, validate_params
from .imbalance import AdaptiveSMOTE, PriorCorrectedClassifier
from .metadata import make_metadata_preprocessor

__all__ = ["make_fusion_pipeline"]


#: What ``preset`` sets: the sampler, and the MLP of ``classifier="mlp"`` (hidden layer, alpha).
PRESETS = {
    "best": {"sampler": None, "mlp": ((512,), 1e-2)},
    "seed": {"sampler": "smote", "mlp": ((256,), 1e-3)},
}


def make_mlp(preset="best", random_state=None):
    """The MLP of ``classifier="mlp"`` under ``preset`` (early stopping, 300 iterations at most)."""
    hidden, alpha = PRESETS[preset]["mlp"]
    return MLPClassifier(
        hidden_layer_sizes=hidden,
        alpha=alpha,
        early_stopping=True,
        max_iter=300,
        random_state=random_state,
    )


def _make_classifier(classifier, class_weight, random_state, preset="best"):
    """The ``classifier`` step; the parameters are already validated by make_fusion_pipeline."""
    if isinstance(classifier, str):
        if classifier == "mlp":
            if class_weight is not None:
                raise ValueError(
                    "classifier='mlp' does not take class_weight; balance the classes with "
                    "sampler='smote' or prior_correction= instead, or use classifier='logreg' "
                    "or 'rf'"
                )
            return make_mlp(preset, random_state)
        if classifier == "rf":
            return RandomForestClassifier(
                n_estimators=300, class_weight=class_weight, n_jobs=-1, random_state=random_state
            )
        if classifier == "logreg":
            # tol=1e-3: on standardised features it scores as sklearn's 1e-4 does (within 0.001
            # balanced accuracy on HAM10000 embeddings) at 2-4x fewer lbfgs iterations
            return LogisticRegression(max_iter=2000, tol=1e-3, class_weight=class_weight)
    if class_weight is not None:
        if "class_weight" not in classifier.get_params():
            raise ValueError(
                f"{type(classifier).__name__} has no class_weight parameter; leave class_weight=None "
                "and balance the classes with a sampler instead"
            )
        classifier = classifier.set_params(class_weight=class_weight)
    return classifier


def _make_sampler(sampler, random_state):
    if sampler is None or sampler == "passthrough":
        return "passthrough"
    if sampler == "smote":
        return AdaptiveSMOTE(random_state=random_state)
    return sampler


def _metadata_columns(preprocessor):
    cols = []
    for _, _, columns in preprocessor.transformers:
        cols.extend(columns if not isinstance(columns, str) else [columns])
    return cols


@validate_params(
    {
        "encoder": [HasMethods(["fit", "transform"]), None],
        "image_column": [str],
        "metadata": [StrOptions({"default"}), HasMethods(["fit", "transform"]), None],
        "metadata_columns": ["array-like"],
        "scale": ["boolean"],
        "select_k": [Interval(Integral, 1, None, closed="left"), StrOptions({"all"}), None],
        "sampler": [
            StrOptions({"auto", "smote", "passthrough"}),
            HasMethods(["fit_resample"]),
            None,
        ],
        "classifier": [StrOptions({"mlp", "rf", "logreg"}), HasMethods(["fit", "predict"])],
        "class_weight": [StrOptions({"balanced", "balanced_subsample"}), dict, None],
        "prior_correction": [Interval(Real, 0, 1, closed="both"), None],
        "preset": [StrOptions(set(PRESETS))],
        "random_state": ["random_state"],
    },
    prefer_skip_nested_validation=True,
)
def make_fusion_pipeline(
    encoder=None,
    *,
    image_column: str = IMAGE_COLUMN,
    metadata="default",
    metadata_columns=METADATA_COLUMNS,
    scale: bool = True,
    select_k=None,
    sampler="auto",
    classifier="mlp",
    class_weight=None,
    prior_correction=None,
    preset="best",
    random_state=None,
) -> Pipeline:
    """Build the fusion model: image embedding and metadata side by side, then a classifier.

    The result is an imbalanced-learn ``Pipeline`` with steps

    ``features`` (``ColumnTransformer``: ``image`` = ``encoder`` on ``image_column``,
    ``metadata`` = the metadata preprocessor) -> ``scale`` (``StandardScaler``) ->
    ``select`` (``SelectKBest(f_classif)``, the ANOVA F-test) -> ``sampler`` (SMOTE)
    -> ``classifier``.

    Disabled steps are ``"passthrough"``, so a grid can switch them on and off, and every
    knob is reachable as ``step__param``: ``features__image__lr``,
    ``select__k``, ``classifier__alpha``... The sampler is a top-level step (imblearn
    refuses samplers in nested pipelines) and only runs in ``fit``.

    Parameters
    ----------
    encoder : transformer or None, default=None
        An image encoder (e.g. :class:`~skinfuse.encoders.FrozenCNNEncoder`). ``None``
        gives the metadata-only model.
    image_column : str, default="image_path"
        Column of image paths in ``X``.
    metadata : "default", transformer or None, default="default"
        ``"default"`` uses :func:`~skinfuse.metadata.make_metadata_preprocessor`; a
        transformer is applied to ``metadata_columns``; ``None`` gives the image-only
        model.
    metadata_columns : sequence of str, default=("age", "sex", "localization")
        Columns fed to a custom metadata transformer.
    scale : bool, default=True
        Standardise the fused features (embeddings are not on the metadata's scale).
    select_k : int, "all" or None, default=None
        Keep the ``k`` features with the highest ANOVA F-score (``SelectKBest(f_classif)``).
    sampler : "auto", "smote", imblearn sampler, "passthrough" or None, default="auto"
        ``"smote"`` is :class:`~skinfuse.imbalance.AdaptiveSMOTE`, which adapts
        ``k_neighbors`` to small classes; ``None`` and ``"passthrough"`` resample
        nothing; ``"auto"``: the ``preset``'s (none for ``"best"``, SMOTE for ``"seed"``).
    classifier : {"mlp", "rf", "logreg"} or estimator, default="mlp"
        The final classifier. ``"mlp"``: ``MLPClassifier((512,), alpha=1e-2,
        early_stopping=True)`` (``preset="seed"``: ``(256,)``, ``alpha=1e-3``); ``"rf"``: 300 trees; ``"logreg"``:
        ``LogisticRegression(tol=1e-3, max_iter=2000)`` (the features are
        standardised, so a looser tolerance than scikit-learn's 1e-4 scores the
        same in 2-4x fewer iterations).
    class_weight : "balanced", "balanced_subsample", dict or None, default=None
        Set on classifiers that take it (``"rf"``, ``"logreg"``, most linear models;
        ``"balanced_subsample"``: random forests only).
    prior_correction : float in [0, 1] or None, default=None
        Wrap the classifier in :class:`~skinfuse.imbalance.PriorCorrectedClassifier` with this
        ``power``: its probabilities are divided by the training class prior to
        that power, trading a little accuracy for recall of rare classes without
        refitting (use with ``sampler=None``: after SMOTE the prior is flat). Its
        knobs become ``classifier__power`` and ``classifier__estimator__...``.
    preset : {"best", "seed"}, default="best"
        The defaults of ``sampler="auto"`` and ``classifier="mlp"``. ``"best"``: the
        setting measured best on HAM10000's lesion-grouped folds (no resampling, a wider,
        more regularised MLP; with ``FrozenCNNEncoder()``'s defaults it is the best frozen
        recipe of docs/results.md). ``"seed"``: the original study's recipe (SMOTE, then
        ``MLP(256, alpha=1e-3)``): more recall of rare classes, less accuracy. Arguments
        given explicitly win over the preset.
    random_state : int, RandomState or None, default=None
        Seed of SMOTE and of the built-in classifiers.

    Returns
    -------
    pipeline : imblearn.pipeline.Pipeline

    Examples
    --------
    >>> from skinfuse.encoders import FrozenCNNEncoder
    >>> from skinfuse.pipeline import make_fusion_pipeline
    >>> model = make_fusion_pipeline(FrozenCNNEncoder(), classifier="logreg")
    >>> [name for name, _ in model.steps]
    ['features', 'scale', 'select', 'sampler', 'classifier']
    """
    if encoder is None and metadata is None:
        raise ValueError("make_fusion_pipeline needs an encoder, metadata, or both; got neither")
    branches = []
    if encoder is not None:
        branches.append(("image", encoder, [image_column]))
    if metadata is not None:
        if isinstance(metadata, str):  # "default"
            preprocessor = make_metadata_preprocessor()
            columns = _metadata_columns(preprocessor)
        else:
            preprocessor = metadata
            columns = list(metadata_columns)
        branches.append(("metadata", preprocessor, columns))
    sampler = PRESETS[preset]["sampler"] if sampler == "auto" else sampler
    steps = [
        ("features", ColumnTransformer(branches, remainder="drop", verbose_feature_names_out=True)),
        ("scale", StandardScaler() if scale else "passthrough"),
        ("select", SelectKBest(f_classif, k=select_k) if select_k is not None else "passthrough"),
        ("sampler", _make_sampler(sampler, random_state)),
        ("classifier", _make_classifier(classifier, class_weight, random_state, preset)),
    ]
    if prior_correction is not None:
        steps[-1] = ("classifier", PriorCorrectedClassifier(steps[-1][1], power=prior_correction))
    return Pipeline(steps)
