"""Command line: ``python -m skinfuse demo [--data PATH]``."""

from __future__ import annotations

import argparse
import sys


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2 (argparse's status)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def main(argv=None) -> int:
    """Run the command line; return the exit status (2 for a user error, shown in one line)."""
    parser = _Parser(prog="skinfuse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    demo = sub.add_parser(
        "demo", help="run the fusion pipeline end to end and print a results table"
    )
    demo.add_argument("--data", default=None, help="HAM10000 folder; default: synthetic lesions")
    demo.add_argument(
        "--n-samples", type=_int_at_least(20), default=400, help="size of the synthetic set"
    )
    demo.add_argument(
        "--n-splits", type=_int_at_least(2), default=3, help="lesion-grouped CV folds"
    )
    demo.add_argument(
        "--image-size",
        type=_int_at_least(8),
        default=None,
        help="CNN input size (128 synthetic, 224 HAM10000)",
    )
    demo.add_argument(
        "--out", default="skinfuse_demo", help="output folder (default: skinfuse_demo)"
    )
    demo.add_argument("--random-state", type=_int_at_least(0), default=0)
    sub.add_parser("versions", help="print versions of skinfuse and its dependencies")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        try:
            run_demo(
                args.data,
                n_samples=args.n_samples,
                n_splits=args.n_splits,
                image_size=args.image_size,
                out=args.out,
                random_state=args.random_state,
            )
        except (ValueError, OSError) as exc:  # a user error: one line, no traceback
            print(f"skinfuse demo: error: {' '.join(str(exc).split())}", file=sys.stderr)
            return 2
    elif args.command == "versions":
        from . import show_versions

        show_versions()
    return 0


if __name__ == "__main__":
    sys.exit(main())
