"""The command line's ``argparse`` parser, for sphinx-argparse (``docs/cli.md``).

The parser is built inside :func:`skinfuse._cli.entry.main`. Where the command line offers a
function that returns it (``build_parser``, ``make_parser``...), that function is used;
otherwise :func:`parser` runs ``main`` with ``parse_args`` stopped before it parses, and
returns the parser ``main`` built. Nothing runs: no command, no import of torch.
"""

from __future__ import annotations

import argparse
from unittest import mock

_BUILDERS = ("build_parser", "make_parser", "get_parser", "_build_parser", "_make_parser")


class _Built(Exception):
    """Raised instead of parsing: carries the parser that ``main`` built."""

    def __init__(self, parser):
        super().__init__("parser built")
        self.parser = parser


def parser() -> argparse.ArgumentParser:
    """The ``skinfuse`` command's parser, with its sub-commands."""
    from skinfuse._cli import entry

    for name in _BUILDERS:
        build = getattr(entry, name, None)
        if callable(build):
            return build()

    def stop(self, *args, **kwargs):
        raise _Built(self)

    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop):
        try:
            entry.main([])
        except _Built as built:
            return built.parser
    raise RuntimeError("skinfuse._cli.entry.main returned without parsing its arguments")
