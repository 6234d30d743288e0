"""Progress of long work, readable where it is shown: a tqdm bar on a terminal (or a
notebook's widget), a plain line every :func:`progress_interval` seconds elsewhere (a log
file, CI, ``nohup``).

tqdm redraws its bar in place with carriage returns (and moves the cursor with escape codes
when bars nest): in a file that is one long line written at the end, or a wall of ``\\r``.
Where its stream is not a terminal, :func:`progress` returns a :class:`LogProgress`
instead: the same small interface (iterate, ``update``, ``set_postfix``, ``close``, a
context manager), writing newline-terminated lines with what is being done, done/total,
the rate and the time left, and nothing else. Every progress display of skinfuse goes
through :func:`progress`.
"""

from __future__ import annotations

import os
import re
import sys
import time

__all__ = [
    "PROGRESS_INTERVAL",
    "PROGRESS_INTERVAL_ENV",
    "LogProgress",
    "is_terminal",
    "progress",
    "progress_interval",
    "redraws",
    "strip_ansi",
]

#: Seconds between two progress lines where the output is not a terminal.
PROGRESS_INTERVAL = 30.0
#: The environment variable that overrides :data:`PROGRESS_INTERVAL` (seconds; 0: a line
#: at every step).
PROGRESS_INTERVAL_ENV = "SKINFUSE_PROGRESS_INTERVAL"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def progress_interval() -> float:
    """Seconds between two progress lines: ``$SKINFUSE_PROGRESS_INTERVAL`` if set, else
    :data:`PROGRESS_INTERVAL`."""
    text = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    if not text:
        return PROGRESS_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise ValueError(
            f"{PROGRESS_INTERVAL_ENV}={text!r} is not a number of seconds >= 0; set it to e.g. "
            f"{PROGRESS_INTERVAL:g}, or unset it"
        )
    return value


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or odd stream: no)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def strip_ansi(text: str) -> str:
    """``text`` without its ANSI escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text)


def _number(x) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def redraws(stream) -> bool:
    """Whether what is written to ``stream`` is redrawn in place (a terminal, or a
    notebook, where tqdm shows a widget and ANSI colours render): bars and colours there,
    plain lines elsewhere."""
    from tqdm.auto import tqdm

    in_notebook = any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)
    return in_notebook or is_terminal(stream)


def progress(iterable=None, *, desc, total=None, unit="it", unit_scale=False,
             unit_divisor=1000, disable=False, file=None):  # fmt: skip
    """A progress display over ``iterable`` (or updated by hand): tqdm where ``file``
    (default: ``sys.stderr`` now) is a terminal or in a notebook, else :class:`LogProgress`.

    Examples
    --------
    >>> import io
    >>> log = io.StringIO()
    >>> sum(progress(range(4), desc="adding", unit="number", file=log))
    6
    >>> print(log.getvalue().splitlines()[-1])  # doctest: +ELLIPSIS
    adding: 4/4 number (100%) in 00:00...
    """
    file = sys.stderr if file is None else file
    if redraws(file):
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale,
                    unit_divisor=unit_divisor, disable=disable, file=file)  # fmt: skip
    return LogProgress(iterable, desc=desc, total=total, unit=unit, unit_scale=unit_scale,
                       unit_divisor=unit_divisor, disable=disable, file=file)  # fmt: skip


class LogProgress:
    """Progress as plain lines: one at the start, one at most every ``interval`` seconds
    (default: :func:`progress_interval`) while counting, one at the end.

    A line reads ``desc: done/total unit (percent), rate unit/s, time left`` while counting
    and ``desc: done/total unit (percent) in elapsed, rate unit/s`` at the end; without a
    ``total``, ``desc: done unit, rate unit/s``. No carriage returns, no escape codes.

    Examples
    --------
    >>> import io
    >>> log = io.StringIO()
    >>> with LogProgress(total=3, desc="encoding", unit="img", file=log, interval=0) as bar:
    ...     bar.update(1)
    ...     bar.update(2)
    >>> print(log.getvalue())  # doctest: +ELLIPSIS
    encoding: 0/3 img (0%), started
    encoding: 1/3 img (33%)...
    encoding: 3/3 img (100%) in 00:00...
    <BLANKLINE>
    """

    def __init__(self, iterable=None, *, desc, total=None, unit="it", unit_scale=False,
                 unit_divisor=1000, disable=False, file=None, interval=None):  # fmt: skip
        if total is None and iterable is not None:
            try:
                total = len(iterable)
            except TypeError:  # a generator
                total = None
        self.iterable, self.desc, self.total, self.unit = iterable, desc, total, unit
        self.unit_scale, self.unit_divisor = unit_scale, unit_divisor
        self.disable, self.file = disable, sys.stderr if file is None else file
        if disable:  # nothing to show: the environment is not read either
            interval = PROGRESS_INTERVAL
        self.interval = progress_interval() if interval is None else float(interval)
        self.n, self.postfix, self.closed = 0, "", disable
        self.start = self.last = time.monotonic()
        if not disable:
            self._write(self._line(started=True))

    def __iter__(self):
        if self.disable:
            yield from self.iterable
            return
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1) -> None:
        """Count ``n`` more; write a line if ``interval`` seconds passed since the last."""
        if self.closed:
            return
        self.n += n
        if self.total is not None and self.n >= self.total:
            return  # the last line is close's
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write(self._line())

    def set_postfix(self, refresh=True, **values) -> None:
        """Extra ``name=value`` shown at the end of the next line (``refresh``: ignored)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        """Write the last line (once)."""
        if self.closed:
            return
        self.closed = True
        self._write(self._line(finished=True))

    # -- the line ---------------------------------------------------------------------------
    def _count(self, n) -> str:
        from tqdm import tqdm

        if self.unit_scale:
            return tqdm.format_sizeof(n, divisor=self.unit_divisor)
        return f"{n:g}" if isinstance(n, float) else str(n)

    def _line(self, *, started=False, finished=False) -> str:
        from tqdm import tqdm

        elapsed = time.monotonic() - self.start
        done = self._count(self.n)
        if self.total is not None:
            done += f"/{self._count(self.total)}"
        space = "" if self.unit_scale else " "  # 1.50MB, as tqdm writes it; 12 img
        parts = [f"{self.desc}: {done}{space}{self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if started:
            parts.append("started")
        else:
            rate = self.n / elapsed if elapsed > 0 else None
            if finished:
                parts[0] += f" in {tqdm.format_interval(elapsed)}"
            if rate is not None:
                parts.append(f"{self._count(rate) if self.unit_scale else _number(rate)}"
                             f"{space}{self.unit}/s")  # fmt: skip
            if not finished and rate and self.total is not None:
                left = max(self.total - self.n, 0) / rate
                parts.append(f"{tqdm.format_interval(left)} left")
        if self.postfix:
            parts.append(self.postfix)
        return ", ".join(parts)

    def _write(self, line) -> None:
        try:
            self.file.write(line + "\n")
            self.file.flush()
        except (ValueError, OSError):  # a closed stream: progress is not worth an error
            pass
