"""Every public function validates its parameters with scikit-learn's ``validate_params``.

As in scikit-learn's own ``sklearn/tests/test_public_functions.py``: each public function
outside the estimator modules declares a constraint for every parameter, and refuses a bad
value with an ``InvalidParameterError`` (both a ``ValueError`` and a ``TypeError``) that
names the parameter and the function, before doing any work.
"""

import importlib
import inspect

import numpy as np
import pytest

# Modules whose public functions are validated with validate_params (the estimator modules,
# encoders/, fusion.py and explain/, validate in fit instead).
MODULES = [
    "skinfuse.datasets",
    "skinfuse.images",
    "skinfuse.metadata",
    "skinfuse.pipeline",
    "skinfuse.recipes",
]


def _public_functions():
    functions = []
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                functions.append(pytest.param(obj, id=f"{module_name}.{name}"))
    return functions


@pytest.mark.parametrize("func", _public_functions())
def test_every_parameter_has_a_constraint(func):
    constraints = getattr(func, "_skl_parameter_constraints", None)
    assert constraints is not None, f"{func.__name__} is not decorated with validate_params"
    assert set(constraints) == set(inspect.signature(func).parameters)


def _valid_arguments(func, tmp_path):
    """Valid values of the parameters without a default; folders inside ``tmp_path``."""
    image = np.zeros((2, 2), np.uint8)
    return {
        "make_synthetic_lesions": {"data_dir": tmp_path},
        "load_ham10000": {"data_home": tmp_path},
        "fetch_ham10000": {"data_home": tmp_path},
        "read_image": {"source": image},
        "to_rgb_uint8": {"image": image},
        "load_images": {"images": [image]},
        "check_image_files": {"images": [image]},
    }.get(func.__name__, {})


def _cases():
    from skinfuse.datasets import (
        fetch_ham10000,
        get_data_home,
        load_ham10000,
        make_synthetic_lesions,
    )
    from skinfuse.images import check_image_files, load_images, read_image, to_rgb_uint8
    from skinfuse.metadata import make_metadata_preprocessor
    from skinfuse.pipeline import make_fusion_pipeline

    bad = {
        make_synthetic_lesions: {
            "n_samples": 0,
            "image_size": 7,
            "n_classes": 1,
            "weights": "uniform",
            "data_dir": 3,
            "image_format": "gif",
            "as_frame": "yes",
            "return_X_y": None,
            "random_state": "seed",
        },
        load_ham10000: {"data_home": None, "as_frame": "yes", "return_X_y": 1},
        fetch_ham10000: {
            "data_home": 3,
            "download_if_missing": "no",
            "base_url": 3,
            "as_frame": "yes",
            "return_X_y": "yes",
            "verbose": -1,
        },
        get_data_home: {"data_home": 3},
        make_metadata_preprocessor: {
            "numeric": "age",  # a str is not a sequence of column names
            "categorical": 3,
            "numeric_strategy": "most_frequent",
            "add_indicator": "yes",
            "min_frequency": 0,
        },
        make_fusion_pipeline: {
            "encoder": "frozen",
            "image_column": 3,
            "metadata": "custom",
            "metadata_columns": "age",
            "scale": "yes",
            "select_k": 0,
            "sampler": "smoat",
            "classifier": "svm",
            "class_weight": "equal",
            "prior_correction": 1.5,
            "random_state": -1,
        },
        read_image: {"source": 3, "size": 0, "resample": "cubic"},
        to_rgb_uint8: {"image": 3},
        load_images: {"size": 0, "on_error": "ignore", "resample": "cubic", "verbose": -1},
        check_image_files: {"on_error": "ignore"},
    }
    return [
        pytest.param(func, param, value, id=f"{func.__name__}-{param}")
        for func, params in bad.items()
        for param, value in params.items()
    ]


@pytest.mark.parametrize(("func", "param", "value"), _cases())
def test_bad_parameter_is_refused_by_name(func, param, value, tmp_path):
    kwargs = {**_valid_arguments(func, tmp_path), param: value}
    match = f"The '{param}' parameter of {func.__name__} must be"
    with pytest.raises(ValueError, match=match) as excinfo:
        func(**kwargs)
    assert isinstance(excinfo.value, TypeError)  # InvalidParameterError is both
    assert not list(tmp_path.iterdir())  # refused before any work: nothing written
