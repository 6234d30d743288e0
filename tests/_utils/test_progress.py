"""Progress that reads well in a log: plain lines where the output is not a terminal."""

import io
import re

import pytest
from tqdm.std import tqdm as std_tqdm

from skinfuse._utils import _progress
from skinfuse._utils._progress import (
    PROGRESS_INTERVAL,
    PROGRESS_INTERVAL_ENV,
    LogProgress,
    progress,
    progress_interval,
    strip_ansi,
)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _Clock:
    """``time.monotonic`` under the test's control."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(_progress.time, "monotonic", clock)
    return clock


def test_a_log_gets_a_line_every_interval_with_rate_and_time_left(clock):
    log = io.StringIO()
    bar = LogProgress(total=100, desc="activations (identity)", unit="img", file=log,
                      interval=30)  # fmt: skip
    for _ in range(5):  # 10 images every 10 s: a line at 30 s, none before
        clock.now += 10
        bar.update(10)
    bar.close()
    bar.close()  # once only
    assert log.getvalue().splitlines() == [
        "activations (identity): 0/100 img (0%), started",
        "activations (identity): 30/100 img (30%), 1 img/s, 01:10 left",
        "activations (identity): 50/100 img (50%) in 00:50, 1 img/s",
    ]


def test_the_interval_comes_from_the_environment(monkeypatch, clock):
    monkeypatch.delenv(PROGRESS_INTERVAL_ENV, raising=False)
    assert progress_interval() == PROGRESS_INTERVAL == 30
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    log = io.StringIO()
    for _ in LogProgress(range(3), desc="decoding images", unit="img", file=log):
        clock.now += 2
    lines = log.getvalue().splitlines()
    assert lines == [
        "decoding images: 0/3 img (0%), started",
        "decoding images: 1/3 img (33%), 0.5 img/s, 00:04 left",
        "decoding images: 2/3 img (67%), 0.5 img/s, 00:02 left",
        "decoding images: 3/3 img (100%) in 00:06, 0.5 img/s",
    ]


@pytest.mark.parametrize("bad", ["soon", "-1", "nan"])
def test_a_bad_interval_is_named_with_the_fix(monkeypatch, bad):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, bad)
    with pytest.raises(ValueError, match=f"{PROGRESS_INTERVAL_ENV}=.*e.g. 30, or unset it"):
        progress_interval()
    assert list(LogProgress(range(2), desc="quiet", disable=True)) == [0, 1]  # not read


def test_no_total_sizes_postfix_and_disable(clock):
    log = io.StringIO()
    with LogProgress((i for i in range(4)), desc="batches", file=log, interval=0) as bar:
        for _ in bar:
            clock.now += 1
    assert log.getvalue().splitlines()[-1] == "batches: 4 it in 00:04, 1 it/s"
    log = io.StringIO()
    with LogProgress(total=4 * 2**20, desc="download", unit="B", unit_scale=True,
                     unit_divisor=1024, file=log, interval=0) as bar:  # fmt: skip
        clock.now += 2
        bar.update(2**20)
        bar.set_postfix(encoded=3, skipped=1)
    assert log.getvalue().splitlines()[1:] == [
        "download: 1.00M/4.00MB (25%), 512kB/s, 00:06 left",
        "download: 1.00M/4.00MB (25%) in 00:02, 512kB/s, encoded=3, skipped=1",
    ]
    log = io.StringIO()
    assert list(LogProgress(range(3), desc="x", file=log, disable=True)) == [0, 1, 2]
    assert log.getvalue() == ""


def test_progress_is_tqdm_on_a_terminal_and_plain_lines_elsewhere(monkeypatch):
    monkeypatch.setenv(PROGRESS_INTERVAL_ENV, "0")
    terminal, log = _Terminal(), io.StringIO()
    bar = progress(range(3), desc="bar", unit="img", file=terminal)
    assert isinstance(bar, std_tqdm)
    assert list(bar) == [0, 1, 2] and "\r" in terminal.getvalue()
    assert isinstance(progress(range(3), desc="lines", file=log), LogProgress)
    with progress(total=2, desc="lines", unit="img", file=log) as bar:
        bar.update(2)
    text = log.getvalue()
    assert "lines: 2/2 img (100%)" in text
    assert "\r" not in text and "\x1b[" not in text


def test_strip_ansi_removes_colours_and_cursor_moves():
    text = "\x1b[36m1.9342\x1b[0m  \x1b[A\x1b[2K0.0003"
    assert strip_ansi(text) == "1.9342  0.0003"
    assert not re.search("\x1b", strip_ansi(text))
