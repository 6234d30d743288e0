"""Preprocessing of the clinical metadata (age, sex, lesion location)."""

from __future__ import annotations

from numbers import Integral, Real

from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ._columns import CATEGORICAL_METADATA, NUMERIC_METADATA
from ._metadata_steps import CategoryNormalizer, NumberChecker
from ._utils._sklearn import Interval, StrOptions, validate_params

__all__ = ["make_metadata_preprocessor"]

#: Plausible values of numeric columns, by name (inclusive); values outside are warned about.
VALID_RANGES = {"age": (0.0, 120.0)}


@validate_params(
    {
        "numeric": ["array-like", None],
        "categorical": ["array-like", None],
        "numeric_strategy": [StrOptions({"median", "mean"})],
        "add_indicator": ["boolean"],
        "min_frequency": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="neither"),
            None,
        ],
    },
    prefer_skip_nested_validation=True,
)
def make_metadata_preprocessor(
    numeric=NUMERIC_METADATA,
    categorical=CATEGORICAL_METADATA,
    *,
    numeric_strategy: str = "median",
    add_indicator: bool = True,
    min_frequency=None,
) -> ColumnTransformer:
    """Build the ``ColumnTransformer`` that turns metadata columns into features.

    Numeric columns are imputed (``numeric_strategy``; with a missing-value
    indicator when ``add_indicator``) and standardised. Categorical columns are
    imputed with the constant ``"missing"`` and one-hot encoded with
    ``handle_unknown="ignore"``, so a category never seen in ``fit`` (a new
    body location, say) becomes all zeros at predict time instead of an error.
    Column names survive: ``get_feature_names_out`` gives e.g. ``age``,
    ``missingindicator_age``, ``sex_female``, ``localization_back``.

    Each branch starts with a checking step (``skinfuse._metadata_steps``), so that
    metadata in the wrong form is not silently misused:

    - categories are stripped and lower-cased (``"BACK"``, ``" back "`` and ``"back"``
      are one category); ``None``, ``NaN``, ``pd.NA`` and empty strings are missing;
    - numbers in a categorical column (sex as 0/1) raise a ``ValueError`` naming the
      column: map the codes to the category names first;
    - a category never seen in ``fit`` gives a ``UserWarning`` naming the column, the
      values and the number of rows (and is still encoded as all zeros);
    - an age outside ``[0, 120]`` gives a ``UserWarning`` (in ``fit`` and ``transform``):
      months and negative values look wrong; text, booleans, infinite values and
      magnitudes of ``1e12`` or more raise a ``ValueError``/``TypeError``;
    - pandas nullable dtypes (``X.convert_dtypes()``) give the same features as the
      plain ones.

    For well-formed input these steps change nothing.

    Parameters
    ----------
    numeric : sequence of str, default=("age",)
        Numeric columns.
    categorical : sequence of str, default=("sex", "localization")
        Categorical columns.
    numeric_strategy : {"median", "mean"}, default="median"
        How missing numeric values are imputed.
    add_indicator : bool, default=True
        Add a 0/1 column marking imputed numeric values.
    min_frequency : int or float, default=None
        Passed to ``OneHotEncoder``: rarer categories are grouped together.

    Returns
    -------
    preprocessor : sklearn.compose.ColumnTransformer
        Unfitted; other columns of the input are dropped.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> X = pd.DataFrame({"age": [40.0, np.nan], "sex": ["male", "female"],
    ...                   "localization": ["back", np.nan]})
    >>> make_metadata_preprocessor().fit(X).get_feature_names_out().tolist()
    ['age', 'missingindicator_age', 'sex_female', 'sex_male', 'localization_back', \
'localization_missing']
    """
    transformers = []
    if numeric:
        transformers.append(
            (
                "numeric",
                Pipeline(
                    [
                        ("check", NumberChecker(valid_ranges=dict(VALID_RANGES))),
                        (
                            "impute",
                            SimpleImputer(strategy=numeric_strategy, add_indicator=add_indicator),
                        ),
                        ("scale", StandardScaler()),
                    ]
                ),
                list(numeric),
            )
        )
    if categorical:
        transformers.append(
            (
                "categorical",
                Pipeline(
                    [
                        ("normalize", CategoryNormalizer()),
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        (
                            "onehot",
                            OneHotEncoder(
                                handle_unknown="infrequent_if_exist"
                                if min_frequency is not None
                                else "ignore",
                                min_frequency=min_frequency,
                                sparse_output=False,
                            ),
                        ),
                    ]
                ),
                list(categorical),
            )
        )
    if not transformers:
        raise ValueError(
            "make_metadata_preprocessor needs at least one numeric or categorical column"
        )
    return ColumnTransformer(transformers, remainder="drop", verbose_feature_names_out=False)
