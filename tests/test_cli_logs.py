"""The command line in a log file (``skinfuse train ... > log 2>&1``: CI, ``nohup``): progress
as plain lines, no carriage returns, no colour codes; and ``--num-threads``."""

import contextlib
import re
import shutil

import pytest
import torch

from skinfuse import recipes
from skinfuse._cli import main
from skinfuse._utils._progress import PROGRESS_INTERVAL_ENV
from skinfuse.datasets import make_synthetic_lesions
from skinfuse.fusion import FusionNetClassifier

COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
#: an ANSI escape sequence (colour, cursor move) or a carriage return (a bar redrawn)
ESCAPES = re.compile(r"\x1b\[|\r")


@pytest.fixture(scope="module")
def ham(tmp_path_factory):
    """A flat HAM10000 folder (metadata.csv + images/) of 40 synthetic lesions."""
    root = tmp_path_factory.mktemp("ham")
    lesions = make_synthetic_lesions(40, image_size=16, random_state=2, data_dir=root / "gen")
    (root / "images").mkdir()
    frame = lesions.frame.copy()
    for image_id, path in zip(frame["image_id"], frame["image_path"]):
        shutil.copy(path, root / "images" / f"{image_id}.png")
    frame[COLUMNS].to_csv(root / "metadata.csv", index=False)
    return root


def _logged(args, log):
    """``main(args)`` with stdout and stderr written to the file ``log`` (not a terminal)."""
    with open(log, "w", encoding="utf-8") as fh:
        assert not fh.isatty()
        with contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            status = main(args)
    return status, log.read_text(encoding="utf-8")


def test_train_in_a_log_shows_progress_lines_and_no_escape_codes(ham, tmp_path, monkeypatch):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    out = tmp_path / "m.skinfuse"
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out), "--cv", "2"]
    status, text = _logged(args, tmp_path / "log")
    assert status == 0 and out.is_file(), text
    assert not ESCAPES.search(text), repr(text)
    progress = [line for line in text.splitlines() if line.startswith("encoding (")]
    # each encoding here (the images not cached yet) is one batch: a line when it starts,
    # one when it ends
    what = r"encoding \(FrozenCNNEncoder, identity\): "
    assert len(progress) >= 2 and len(progress) % 2 == 0, text
    for started, ended in zip(progress[::2], progress[1::2]):
        n = re.fullmatch(what + r"0/(\d+) img \(0%\), started", started).group(1)
        assert re.fullmatch(what + rf"{n}/{n} img \(100%\) in \d\d:\d\d, [\d.]+ img/s", ended)
    assert "model written to" in text


def test_the_epoch_table_of_a_network_has_no_colour_codes_in_a_log(ham, tmp_path, monkeypatch):
    """skorch colours each column's best value: not in a file. The partial recipe's
    activation caching shows its progress at the default verbosity."""
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")

    def make_recipe(name, *, random_state, verbose, **kwargs):  # the partial recipe, tiny
        return FusionNetClassifier(
            backbone="tiny_cnn", weights=None, image_size=32, trainable_blocks=1,
            cached_views=2, max_epochs=2, validation_fraction=0.0, random_state=random_state,
            verbose=verbose,
        )  # fmt: skip

    monkeypatch.setattr(recipes, "make_recipe", make_recipe)
    out = tmp_path / "m.skinfuse"
    args = ["train", "--data", str(ham), "--recipe", "tiny", "--out", str(out),
            "--no-calibration"]  # fmt: skip
    status, text = _logged(args, tmp_path / "log")
    assert status == 0 and out.is_file(), text
    assert not ESCAPES.search(text), repr(text)
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epoch", "train_loss"])
    first_epoch = lines[header + 2].split()
    assert first_epoch[0] == "1" and all(re.fullmatch(r"[\d.]+", v) for v in first_epoch)
    for view in ("identity", "hflip"):  # batches of 32: a line with the time left after one
        view_lines = [line for line in lines if line.startswith(f"activations ({view}): ")]
        assert [line.split(": ")[1].split(" (")[0] for line in view_lines] == [
            "0/40 img", "32/40 img", "40/40 img"
        ], text  # fmt: skip
        assert re.search(r"\(80%\), [\d.]+ img/s, 00:00 left$", view_lines[1]), text


# -- --num-threads -----------------------------------------------------------------------------
RUNNERS = {
    "train": ("skinfuse._cli.train.run_train", ["--data", "D", "--recipe", "tiny", "--out", "m"]),
    "predict": ("skinfuse._cli.predict.run_predict", ["M", "--images", "I", "--out", "p.csv"]),
    "evaluate": ("skinfuse._cli.evaluate.run_evaluate", ["M", "--data", "D"]),
    "demo": ("skinfuse._cli.demo.run_demo", []),
}


@pytest.fixture
def torch_threads():
    """torch's intra-op threads come back after the test."""
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


@pytest.mark.parametrize("command", sorted(RUNNERS))
def test_num_threads_sets_torchs_intra_op_threads(command, monkeypatch, torch_threads):
    target, args = RUNNERS[command]
    seen = []
    monkeypatch.setattr(target, lambda *a, **kw: seen.append(torch.get_num_threads()))
    interop = torch.get_num_interop_threads()
    assert main([command, *args, "--num-threads", "3"]) == 0
    assert seen == [3] and torch.get_num_interop_threads() == interop
    torch.set_num_threads(torch_threads)
    assert main([command, *args]) == 0  # by default: left as it is
    assert seen == [3, torch_threads]


def test_num_threads_below_1_is_a_usage_error(capsys, torch_threads):
    with pytest.raises(SystemExit) as excinfo:
        main(["demo", "--num-threads", "0"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--num-threads: must be at least 1, got 0" in err[0]
    assert torch.get_num_threads() == torch_threads
