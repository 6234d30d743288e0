"""Command line: ``python -m skinfuse demo [--data PATH]``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="skinfuse", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="run the fusion pipeline end to end and print a results table"
    )
    demo.add_argument("--data", default=None, help="HAM10000 folder; default: synthetic lesions")
    demo.add_argument("--n-samples", type=int, default=400, help="size of the synthetic set")
    demo.add_argument("--n-splits", type=int, default=3, help="lesion-grouped CV folds")
    demo.add_argument(
        "--image-size", type=int, default=None, help="CNN input size (128 synthetic, 224 HAM10000)"
    )
    demo.add_argument(
        "--out", default="skinfuse_demo", help="output folder (default: skinfuse_demo)"
    )
    demo.add_argument("--random-state", type=int, default=0)
    sub.add_parser("versions", help="print versions of skinfuse and its dependencies")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        run_demo(
            args.data,
            n_samples=args.n_samples,
            n_splits=args.n_splits,
            image_size=args.image_size,
            out=args.out,
            random_state=args.random_state,
        )
    elif args.command == "versions":
        from . import show_versions

        show_versions()
    return 0


if __name__ == "__main__":
    sys.exit(main())
