"""The metadata preprocessor: well-formed input unchanged, wrong forms refused or warned about."""

import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skinfuse._metadata_steps import CategoryNormalizer, NumberChecker
from skinfuse.metadata import make_metadata_preprocessor

COLUMNS = ["age", "sex", "localization"]


def _frame():
    return pd.DataFrame(
        {
            "age": [40.0, np.nan, 55.0, 70.0, 15.0, 40.0],
            "sex": ["male", "female", None, "male", "female", "female"],
            "localization": ["back", np.nan, "face", "back", "trunk", "face"],
        }
    )


def _plain_sklearn(min_frequency=None):
    """The preprocessor as it was built before the checking steps (the reference)."""
    numeric = Pipeline(
        [("impute", SimpleImputer(strategy="median", add_indicator=True)), ("s", StandardScaler())]
    )
    onehot = OneHotEncoder(
        handle_unknown="ignore" if min_frequency is None else "infrequent_if_exist",
        min_frequency=min_frequency,
        sparse_output=False,
    )
    categorical = Pipeline(
        [("impute", SimpleImputer(strategy="constant", fill_value="missing")), ("o", onehot)]
    )
    return ColumnTransformer(
        [("n", numeric, ["age"]), ("c", categorical, ["sex", "localization"])],
        verbose_feature_names_out=False,
    )


@pytest.mark.parametrize("min_frequency", [None, 5])
def test_well_formed_input_gives_the_features_of_the_plain_sklearn_steps(lesions, min_frequency):
    X = lesions.data
    train, test = X.iloc[:80], X.iloc[80:]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # well-formed input: not a word, but
        warnings.filterwarnings("ignore", "column 'localization' has 1 value.* not seen in fit")
        ours = make_metadata_preprocessor(min_frequency=min_frequency).fit(train)
        got = ours.transform(test)
    reference = _plain_sklearn(min_frequency).fit(train)
    assert ours.get_feature_names_out().tolist() == reference.get_feature_names_out().tolist()
    np.testing.assert_array_equal(got, reference.transform(test))
    assert X[COLUMNS].isna().any().all()  # the synthetic lesions do have missing values
    assert not set(test["localization"].dropna()) <= set(train["localization"].dropna())


def test_categories_are_normalised_before_encoding():
    X = _frame()
    shouted = X.assign(
        sex=["MALE", " female", None, "Male ", "FEMALE", "female"],
        localization=["BACK", None, " Face", "back ", "\ttrunk\n", "FACE"],
    )
    expected = make_metadata_preprocessor().fit(X)
    model = make_metadata_preprocessor().fit(shouted)
    assert model.get_feature_names_out().tolist() == expected.get_feature_names_out().tolist()
    np.testing.assert_array_equal(model.transform(shouted), expected.transform(X))
    np.testing.assert_array_equal(model.transform(X), expected.transform(X))


def test_missing_values_stay_missing_whatever_their_form():
    X = _frame()
    forms = X.astype({"sex": object, "localization": object})
    forms["sex"] = ["male", "female", pd.NA, "male", "female", "female"]
    forms["localization"] = ["back", None, "face", "back", "trunk", "face"]
    model = make_metadata_preprocessor().fit(X)
    np.testing.assert_array_equal(model.transform(forms), model.transform(X))
    blank = forms.assign(localization=["back", "   ", "face", "back", "trunk", "face"])
    np.testing.assert_array_equal(model.transform(blank), model.transform(X))
    names = model.get_feature_names_out().tolist()
    assert names.count("sex_missing") == 1 and names.count("localization_missing") == 1


def test_unseen_category_at_predict_warns_and_is_encoded_as_zeros():
    X = _frame()
    model = make_metadata_preprocessor().fit(X)
    new = X.iloc[:3].assign(localization=["Arm", "back", "arm "])
    match = r"column 'localization' has 1 value\(s\) not seen in fit: 'arm' \(in 2 of 3 rows\)"
    with pytest.warns(UserWarning, match=match) as record:
        out = model.transform(new)
    assert len(record) == 1  # sex has no unseen value: one warning
    assert record[0].filename == __file__  # the caller's line, not scikit-learn's
    names = model.get_feature_names_out()
    location = np.char.startswith(names.astype(str), "localization_")
    np.testing.assert_array_equal(out[[0, 2]][:, location], 0.0)
    assert out[1, list(names).index("localization_back")] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.transform(X.assign(localization=np.nan))  # missing is not unseen


@pytest.mark.parametrize(
    "codes",
    [
        [1, 0, 1, 1, 0, 0],
        [1.0, 0.0, np.nan, 1.0, 0.0, 0.0],
        pd.array([1, 0, None, 1, 0, 0], dtype="Int64"),
        np.array([1, 0, "female", 1, "male", None], dtype=object),
        [True, False, True, True, False, False],
    ],
    ids=["int", "float", "Int64", "mixed", "bool"],
)
def test_numeric_codes_for_a_category_are_refused_in_fit(codes):
    match = r"column 'sex' is categorical but holds numbers .* map the codes to the category names"
    with pytest.raises(ValueError, match=match):
        make_metadata_preprocessor().fit(_frame().assign(sex=codes))


def test_numeric_codes_at_predict_are_refused_too():
    model = make_metadata_preprocessor().fit(_frame())
    with pytest.raises(ValueError, match=r"column 'localization' .* holds numbers \(3\) in 1 rows"):
        model.transform(_frame().iloc[:2].assign(localization=["back", 3]))


def test_ages_outside_0_to_120_warn_in_fit_and_transform():
    X = _frame().assign(age=[480.0, np.nan, 55.0, -3.0, 15.0, 40.0])  # months, a typo
    match = r"column 'age': 2 of 6 values lie outside \[0, 120\] \(seen: -3 to 480\).*months"
    with pytest.warns(UserWarning, match=match) as record:
        model = make_metadata_preprocessor().fit(X)
    assert len(record) == 1  # fit_transform of the inner pipeline warns once
    with pytest.warns(UserWarning, match=r"1 of 2 values lie outside \[0, 120\] \(seen: 30 to 960"):
        model.transform(X.iloc[:2].assign(age=[30, 960]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.transform(X.assign(age=[0.0, 120.0, np.nan, 1.5, 99.0, 40.0]))  # bounds included


def test_pandas_nullable_dtypes_give_the_features_of_the_plain_dtypes():
    X = _frame()
    nullable = X.convert_dtypes()
    assert {str(t) for t in nullable.dtypes} <= {"Int64", "Float64", "string"}
    assert nullable.isna().to_numpy().sum() == X.isna().to_numpy().sum()
    plain = make_metadata_preprocessor().fit(X)
    model = make_metadata_preprocessor().fit(nullable)
    assert model.get_feature_names_out().tolist() == plain.get_feature_names_out().tolist()
    np.testing.assert_array_equal(model.transform(nullable), plain.transform(X))
    np.testing.assert_array_equal(plain.transform(nullable), plain.transform(X))
    integers = X.assign(age=pd.array([40, None, 55, 70, 15, 40], dtype="Int64"))
    np.testing.assert_array_equal(plain.transform(integers), plain.transform(X))
    objects = X.astype(object).assign(age=[40, pd.NA, 55.0, 70, 15, 40])
    np.testing.assert_array_equal(plain.transform(objects), plain.transform(X))


@pytest.mark.parametrize(
    "age, error, match",
    [
        (["40", "55"], ValueError, r"column 'age' must hold numbers; got text \('40', '55'\)"),
        ([True, False], TypeError, "column 'age' must hold numbers; got booleans"),
        ([40.0, np.inf], ValueError, "column 'age' holds infinite values in 1 rows"),
        ([40.0, 1e200], ValueError, "column 'age' holds 1 values of magnitude 1e.12 or more"),
        # an object column built explicitly: pandas < 2.3 cannot infer one from a huge int
        (pd.Series([40, 10**400], dtype=object), ValueError, "column 'age' holds infinite values"),
        ([b"40", 55], TypeError, "column 'age' must hold numbers; got values of type bytes"),
    ],
)
def test_ages_that_are_not_numbers_are_refused(age, error, match):
    X = _frame().iloc[:2].assign(age=age)
    with pytest.raises(error, match=match):
        make_metadata_preprocessor().fit(X)


def test_categories_that_are_not_strings_are_refused():
    X = _frame().iloc[:2].assign(localization=[b"back", "face"])
    with pytest.raises(TypeError, match="column 'localization' is categorical: .* type bytes"):
        make_metadata_preprocessor().fit(X)


@pytest.mark.parametrize(
    "step, X",
    [
        (CategoryNormalizer(), _frame()[["sex", "localization"]]),
        (NumberChecker(valid_ranges={"age": (0, 120)}), _frame()[["age"]]),
    ],
    ids=["CategoryNormalizer", "NumberChecker"],
)
def test_checking_steps_follow_the_estimator_contract(step, X):
    fitted = clone(step).fit(X)
    out = fitted.transform(X)
    assert out.shape == X.shape
    assert fitted.get_feature_names_out().tolist() == list(X.columns)
    assert fitted.n_features_in_ == X.shape[1]
    pd.testing.assert_frame_equal(
        pd.DataFrame(pickle.loads(pickle.dumps(fitted)).transform(X)), pd.DataFrame(out)
    )
    frame = clone(step).set_output(transform="pandas").fit_transform(X)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(X.columns)
    assert clone(step).get_params() == step.get_params()
    with pytest.raises(ValueError, match="feature names should match"):
        fitted.transform(X.iloc[:, :0].assign(other=1, more=2, again=3))
    with (
        pytest.raises(ValueError, match=f"expecting {X.shape[1]} features"),
        pytest.warns(UserWarning, match="does not have valid feature names"),
    ):
        fitted.transform(np.zeros((2, 3)))


def test_the_fitted_preprocessor_pickles_and_works_under_set_output_pandas():
    X = _frame()
    model = make_metadata_preprocessor().set_output(transform="pandas").fit(X)
    again = pickle.loads(pickle.dumps(model))
    out = again.transform(X.convert_dtypes())
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == make_metadata_preprocessor().fit(X).get_feature_names_out().tolist()
    np.testing.assert_array_equal(out.to_numpy(), make_metadata_preprocessor().fit_transform(X))


def test_category_normalizer_warns_about_each_column_and_quotes_few_values():
    step = CategoryNormalizer().fit(pd.DataFrame({"a": ["x"], "b": ["y"]}))
    new = pd.DataFrame({"a": [f"v{i}" for i in range(8)], "b": ["y"] * 8})
    with pytest.warns(UserWarning) as record:
        step.transform(new)
    (message,) = [str(w.message) for w in record]
    assert re.search(r"column 'a' has 8 value\(s\) .*'v4' and 3 more \(in 8 of 8 rows\)", message)
