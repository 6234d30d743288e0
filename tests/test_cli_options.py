"""The conventions of the command line: --version, wrapped help, -v/-q, --device, the GPU
refusal, Ctrl-C, ``predict --recursive`` and ``--metadata-columns``."""

import shutil

import numpy as np
import pandas as pd
import pytest

import skinfuse
from skinfuse._cli import common, main
from skinfuse._cli.parser import WIDTH
from skinfuse._model_files import torch_estimators_in
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.recipes import RECIPES, make_recipe

COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
COMMANDS = ["train", "predict", "evaluate", "demo", "info", "versions"]


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A flat HAM10000 folder of 40 synthetic lesions, with an extra numeric column."""
    root = tmp_path_factory.mktemp("ham")
    lesions = make_synthetic_lesions(40, image_size=16, random_state=1, data_dir=root / "gen")
    (root / "images").mkdir()
    frame = lesions.frame.copy()
    for image_id, path in zip(frame["image_id"], frame["image_path"]):
        shutil.copy(path, root / "images" / f"{image_id}.png")
    frame["diameter"] = np.round(np.random.default_rng(0).uniform(2, 12, len(frame)), 1)
    frame[[*COLUMNS, "diameter"]].to_csv(root / "metadata.csv", index=False)
    return root


@pytest.fixture(scope="module")
def model_file(ham, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "tiny.skinfuse"
    assert main(["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out), "-q"]) == 0
    return out


def _one_line_error(err, *needles):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _exit_code(args):
    with pytest.raises(SystemExit) as excinfo:
        main(args)
    return excinfo.value.code


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts loading data or a model."""

    def fail(*args, **kwargs):
        raise AssertionError("the command started working before checking its arguments")

    monkeypatch.setattr(common, "load_model", fail)
    monkeypatch.setattr(common, "load_data", fail)


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    from skinfuse._nn import device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device, "_mps_available", lambda: False)


# -- --version, --help -------------------------------------------------------------------------
def test_version_prints_the_version_and_exits_0(capsys):
    assert _exit_code(["--version"]) == 0
    assert capsys.readouterr().out == f"skinfuse {skinfuse.__version__}\n"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_wrapped_and_every_command_takes_v_and_q(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: the help stays readable
    assert _exit_code([command, "--help"] if command else ["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= WIDTH, max(lines, key=len)
    if command:
        assert "-v, --verbose" in "\n".join(lines) and "-q, --quiet" in "\n".join(lines)
    if command == "train":  # the recipe listing hangs under its descriptions
        assert any(line.startswith(" " * 20) for line in lines)


# -- -v / -q -----------------------------------------------------------------------------------
RUNNERS = {
    "train": ("skinfuse._cli.train.run_train", ["--data", "D", "--recipe", "tiny", "--out", "m"]),
    "predict": ("skinfuse._cli.predict.run_predict", ["M", "--images", "I", "--out", "p.csv"]),
    "evaluate": ("skinfuse._cli.evaluate.run_evaluate", ["M", "--data", "D"]),
    "demo": ("skinfuse._cli.demo.run_demo", []),
    "info": ("skinfuse._cli.info.run_info", ["M"]),
}


@pytest.mark.parametrize("command", sorted(RUNNERS))
@pytest.mark.parametrize("flags, verbose", [([], 1), (["-q"], 0), (["--quiet"], 0),
                                            (["-v"], 2), (["-vv"], 3)])  # fmt: skip
def test_verbosity_reaches_every_command(command, flags, verbose, monkeypatch):
    target, args = RUNNERS[command]
    seen = {}
    monkeypatch.setattr(target, lambda *a, **kw: seen.update(kw))
    assert main([command, *args, *flags]) == 0
    assert seen["verbose"] == verbose


def test_v_and_q_together_are_refused(capsys):
    assert _exit_code(["demo", "-v", "-q"]) == 2
    _one_line_error(capsys.readouterr().err, "not allowed with argument")


def test_quiet_predict_prints_nothing_but_its_output(model_file, ham, tmp_path, capsys):
    out = tmp_path / "p.csv"
    args = ["predict", str(model_file), "--data", str(ham), "--out", str(out)]
    assert main([*args, "-q"]) == 0
    assert capsys.readouterr().out == "" and len(pd.read_csv(out)) == 40
    assert main(args) == 0
    assert "predictions written" in capsys.readouterr().out


# -- Ctrl-C ------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(RUNNERS))
def test_ctrl_c_ends_with_one_line_and_status_130(command, monkeypatch, capsys):
    target, args = RUNNERS[command]

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    assert main([command, *args]) == 130
    assert capsys.readouterr().err == "interrupted\n"


# -- --device and recipes that need a GPU ------------------------------------------------------
def test_make_recipe_sets_the_device_of_every_estimator_that_takes_one():
    vote = make_recipe("partial-ensemble", device="cpu").estimator  # inside the calibration
    assert [member.device for _, member in vote.estimators] == ["cpu", "cpu"]
    bare = {"calibrate": False}
    encoder = make_recipe("tiny", device="cuda:1", **bare).named_steps["features"]
    assert encoder.transformers[0][1].device == "cuda:1"
    encoder = make_recipe("tiny", **bare).named_steps["features"]
    assert encoder.transformers[0][1].device == "auto"
    default = make_recipe("partial", **bare).get_params()
    assert make_recipe("partial", device=None, **bare).get_params() == default


def test_only_the_gpu_recipes_need_a_gpu():
    assert {name for name, r in RECIPES.items() if r.needs_gpu} == {"gpu", "gpu-ensemble"}


def test_train_passes_the_device_to_the_recipe(ham, tmp_path, monkeypatch):
    from skinfuse import recipes

    seen = {}

    def make(name, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(recipes, "make_recipe", make)
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(tmp_path / "m"), "-q"]
    assert main([*args, "--device", "cpu"]) == 2
    assert seen["device"] == "cpu"
    assert main(args) == 2
    assert seen["device"] is None  # the estimators' own default ("auto")


def test_the_precision_flag_reaches_train_and_is_checked(ham, tmp_path, monkeypatch, capsys):
    from skinfuse import recipes

    seen = {}

    def make(name, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop here")

    monkeypatch.setattr(recipes, "make_recipe", make)
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(tmp_path / "m"), "-q"]
    assert main([*args, "--precision", "fp32"]) == 2
    assert seen["precision"] == "fp32"
    assert main(args) == 2
    assert seen["precision"] is None  # the estimators' own default ("auto")
    assert _exit_code([*args, "--precision", "fp16"]) == 2
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_the_engine_flag_holds_during_the_command_only(ham, tmp_path, monkeypatch, capsys):
    import skinfuse
    from skinfuse import recipes

    seen = []

    def make(name, **kwargs):
        seen.append(skinfuse.get_config()["engine"])
        raise ValueError("stop here")

    monkeypatch.setattr(recipes, "make_recipe", make)
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(tmp_path / "m"), "-q"]
    assert main([*args, "--engine", "torch"]) == 2
    assert main(args) == 2
    assert seen == ["torch", "auto"]
    assert skinfuse.get_config()["engine"] == "auto"  # restored after the command
    assert _exit_code([*args, "--engine", "tvm"]) == 2
    assert "invalid choice: 'tvm'" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_the_precision_flag_is_set_on_a_loaded_model(command, model_file, ham, tmp_path,
                                                     monkeypatch):  # fmt: skip
    seen = []
    real = common.set_precision

    def spy(model, precision):
        real(model, precision)
        seen.extend(est.precision for est in torch_estimators_in(model))

    monkeypatch.setattr(common, "set_precision", spy)
    out = ["--out", str(tmp_path / "p.csv")] if command == "predict" else []
    assert main([command, str(model_file), "--data", str(ham), *out, "-q",
                 "--precision", "fp32"]) == 0  # fmt: skip
    assert seen and set(seen) == {"fp32"}


@pytest.mark.parametrize("recipe", ["gpu", "gpu-ensemble"])
def test_a_gpu_recipe_is_refused_without_a_gpu(recipe, tmp_path, capsys, no_gpu, no_work):
    args = ["train", "--data", str(tmp_path), "--recipe", recipe, "--out", str(tmp_path / "m")]
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, f"skinfuse train: error: recipe {recipe!r} needs a "
                    "CUDA GPU", "no CUDA device is available", "--force")  # fmt: skip
    assert not (tmp_path / "m").exists()


def test_force_trains_a_gpu_recipe_anyway(tmp_path, capsys, no_gpu, monkeypatch):
    def load_data(*args, **kwargs):
        raise ValueError("reached the data")

    monkeypatch.setattr(common, "load_data", load_data)
    args = ["train", "--data", str(tmp_path), "--recipe", "gpu", "--out", str(tmp_path / "m")]
    assert main([*args, "--force"]) == 2
    _one_line_error(capsys.readouterr().err, "reached the data")


@pytest.mark.parametrize("command", ["train", "predict", "evaluate", "demo"])
def test_an_unavailable_device_is_refused_before_any_work(command, tmp_path, capsys, no_gpu,
                                                          no_work, monkeypatch):  # fmt: skip
    from skinfuse._cli import demo

    monkeypatch.setattr(demo, "_models", lambda *a: pytest.fail("the demo started working"))
    model = tmp_path / "m.skinfuse"
    model.write_text("x")
    args = {
        "train": ["--data", str(tmp_path), "--recipe", "tiny", "--out", str(tmp_path / "n")],
        "predict": [str(model), "--images", str(tmp_path), "--out", str(tmp_path / "p.csv")],
        "evaluate": [str(model), "--data", str(tmp_path)],
        "demo": ["--out", str(tmp_path / "demo")],
    }[command]
    assert main([command, *args, "--device", "cuda:0"]) == 2
    _one_line_error(capsys.readouterr().err, "--device cuda:0", "CUDA is not available")


def test_a_malformed_device_is_a_usage_error(capsys):
    assert _exit_code(["demo", "--device", "gpu"]) == 2
    _one_line_error(capsys.readouterr().err, "expected auto, cpu, cuda, cuda:N or mps, got 'gpu'")


def test_predict_runs_the_networks_on_the_device_asked(model_file):
    from skinfuse._model_files import torch_estimators_in

    model = skinfuse.load(model_file)
    # the recipe's unfitted steps (inside the calibration's ``estimator``) and fitted copies
    found = torch_estimators_in(model)
    fitted = [est for est in found if hasattr(est, "device_")]
    unfitted = [est for est in found if not hasattr(est, "device_")]
    assert fitted and unfitted and {est.device_ for est in fitted} == {"cpu"}
    common.set_device(model, "cuda:3")  # set, not run: no GPU needed
    assert {est.device_ for est in fitted} == {"cuda:3"}
    assert not any(hasattr(est, "device_") for est in unfitted)
    common.set_device(model, None)
    assert {est.device_ for est in fitted} == {"cuda:3"}


# -- predict --recursive -----------------------------------------------------------------------
@pytest.fixture
def nested(ham, tmp_path):
    """photos/: 2 images, sub/: 2 more, sub/deeper/: 1 more, .hidden/: 1 left out."""
    files = sorted((ham / "images").iterdir())
    layout = {"": files[:2], "sub": files[2:4], "sub/deeper": files[4:5], ".hidden": files[5:6]}
    root = tmp_path / "photos"
    for folder, images in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy(image, root / folder / image.name)
    return root, [p.stem for p in files[:5]]


def test_predict_warns_about_subfolders_and_reads_them_with_recursive(
    model_file, nested, tmp_path, capsys
):
    root, ids = nested
    out = tmp_path / "p.csv"
    args = ["predict", str(model_file), "--images", str(root), "--out", str(out), "-q"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "3 images in 1 subfolder(s) of" in err and "--recursive" in err
    assert pd.read_csv(out)["image_id"].tolist() == ids[:2]
    assert main([*args, "--recursive"]) == 0
    assert "subfolder" not in capsys.readouterr().err
    table = pd.read_csv(out)
    assert sorted(table["image_id"]) == sorted(ids)
    deepest = table.set_index("image_id").loc[ids[4], "image_path"]
    assert deepest.endswith(f"sub/deeper/{ids[4]}.png")


def test_a_folder_with_images_only_in_subfolders_asks_for_recursive(
    model_file, nested, tmp_path, capsys
):
    root, _ = nested
    for image in root.glob("*.png"):
        image.unlink()
    args = ["predict", str(model_file), "--images", str(root), "--out", str(tmp_path / "p.csv")]
    assert main(args) == 2
    _one_line_error(capsys.readouterr().err, "no images in", "pass --recursive")


def test_recursive_goes_with_images(model_file, ham, tmp_path, capsys, no_work):
    args = ["predict", str(model_file), "--data", str(ham), "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--recursive"]) == 2
    _one_line_error(capsys.readouterr().err, "--recursive goes with --images")


# -- --metadata-columns ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def custom_model(ham, tmp_path_factory):
    """The tiny recipe trained on age, diameter (an extra numeric column) and sex."""
    out = tmp_path_factory.mktemp("custom") / "custom.skinfuse"
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out), "-q",
            "--metadata-columns", "age,diameter,sex"]  # fmt: skip
    assert main(args) == 0
    return out


def test_train_on_chosen_metadata_columns(custom_model, ham):
    model = skinfuse.load(custom_model)
    assert model.feature_names_in_.tolist() == ["image_path", "age", "diameter", "sex"]
    pipeline = model.estimator_  # the recipe's pipeline, inside its calibration
    metadata = pipeline.named_steps["features"].named_transformers_["metadata"]
    assert metadata.get_feature_names_out().tolist()[:3] == ["age", "diameter", "sex_female"]
    table = pd.read_csv(ham / "metadata.csv")
    X = pd.DataFrame({"image_path": [str(ham / "images" / f"{i}.png") for i in table.image_id],
                      "age": table.age, "diameter": table.diameter, "sex": table.sex})  # fmt: skip
    assert X["diameter"].std() > 1  # a real column, read as numbers
    np.testing.assert_allclose(
        metadata.transform(X)[:, 1], (X.diameter - X.diameter.mean()) / X.diameter.std(ddof=0)
    )


def test_predict_and_evaluate_read_the_models_columns(custom_model, ham, tmp_path, capsys):
    out = tmp_path / "p.csv"
    assert main(["predict", str(custom_model), "--data", str(ham), "--out", str(out), "-q"]) == 0
    table = pd.read_csv(ham / "metadata.csv")
    X = pd.DataFrame({"image_path": [str(ham / "images" / f"{i}.png") for i in table.image_id],
                      "age": table.age, "diameter": table.diameter, "sex": table.sex})  # fmt: skip
    proba = skinfuse.load(custom_model).predict_proba(X)
    np.testing.assert_allclose(pd.read_csv(out).iloc[:, 3:].to_numpy(), proba, rtol=1e-6)
    # a plain folder with a CSV of the same columns gives the same predictions
    csv = tmp_path / "clinical.csv"
    table[["image_id", "age", "diameter", "sex"]].to_csv(csv, index=False)
    args = ["predict", str(custom_model), "--images", str(ham / "images"), "--metadata",
            str(csv), "--out", str(out), "-q", "--metadata-columns", "sex,age,diameter"]  # fmt: skip
    assert main(args) == 0
    by_id = pd.read_csv(out).set_index("image_id").loc[table.image_id]
    np.testing.assert_allclose(by_id.iloc[:, 2:].to_numpy(), proba, rtol=1e-6)
    assert main(["evaluate", str(custom_model), "--data", str(ham), "--n-resamples", "10",
                 "-q"]) == 0  # fmt: skip
    assert "| balanced_accuracy |" in capsys.readouterr().out


def test_metadata_columns_other_than_the_models_are_refused(custom_model, ham, tmp_path, capsys):
    args = ["predict", str(custom_model), "--data", str(ham), "--out", str(tmp_path / "p.csv")]
    assert main([*args, "--metadata-columns", "age,sex,localization"]) == 2
    _one_line_error(capsys.readouterr().err, "trained on the metadata columns age,diameter,sex")


def test_a_column_the_data_lacks_is_named(ham, tmp_path, capsys):
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(tmp_path / "m"), "-q"]
    assert main([*args, "--metadata-columns", "age,weight"]) == 2
    _one_line_error(capsys.readouterr().err, "weight not in the dataset's table", "diameter")
    assert _exit_code([*args, "--metadata-columns", "age,,sex"]) == 2
    _one_line_error(capsys.readouterr().err, "expected distinct column names")
