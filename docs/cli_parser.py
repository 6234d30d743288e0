"""The command line's ``argparse`` parser, for sphinx-argparse (``docs/cli.md``)."""

from __future__ import annotations

import argparse


def parser() -> argparse.ArgumentParser:
    """The ``skinfuse`` command's parser, with its sub-commands (nothing runs)."""
    from skinfuse._cli import entry
    from skinfuse._cli.parser import build_parser

    return build_parser(entry.__doc__)
