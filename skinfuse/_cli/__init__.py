"""The command line (private): ``skinfuse train | predict | evaluate | demo | versions``.

``entry.py`` parses the arguments and turns user errors into one line on stderr (exit
status 2); each command lives in a module of its own (``train.py``, ``predict.py``,
``evaluate.py``, ``demo.py``), and ``common.py`` holds what they share (path checks before
any work, loading a model, messages). Data come through :mod:`skinfuse.datasets`, models
through :mod:`skinfuse.recipes`, scores through :mod:`skinfuse.metrics`.
"""

from .entry import main

__all__ = ["main"]
