"""Command line: train, apply and evaluate a model on a folder of images, without Python.

``skinfuse train`` fits a recipe on a labelled folder (HAM10000, Derm7pt, ISIC 2019, ISIC 2020
or PAD-UFES-20 layout, detected or named by ``--layout``) and saves a model file;
``skinfuse predict`` writes a CSV of predictions (and Grad-CAM figures) for a folder of
images; ``skinfuse evaluate`` scores a model on a labelled folder with lesion-grouped
confidence intervals; ``skinfuse info`` shows what a model file holds without loading it;
``skinfuse export`` writes its network to ONNX; ``skinfuse demo`` runs the fusion pipeline
end to end; ``skinfuse serve`` shows a model on a local web page, one image at a time.
"""

from __future__ import annotations

import sys

from .parser import build_parser

#: Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


def _verbose(args) -> int:
    """0 with -q, 1 by default, 2 with -v (per-batch progress bars of the networks)..."""
    return 0 if args.quiet else 1 + args.verbose


def _run_command(args) -> None:
    verbose = _verbose(args)
    if getattr(args, "num_threads", None) is not None:  # the commands that compute
        from .common import set_num_threads

        set_num_threads(args.num_threads)
    if args.command == "train":
        from .train import run_train

        run_train(
            args.data, layout=args.layout, recipe=args.recipe, out=args.out, cv=args.cv,
            cache_dir=args.cache_dir, random_state=args.random_state, card=args.card,
            metadata_columns=args.metadata_columns, device=args.device, force=args.force,
            precision=args.precision,
            calibrate=not args.no_calibration, coverage=args.coverage, verbose=verbose,
        )  # fmt: skip
    elif args.command == "predict":
        from .predict import run_predict

        run_predict(
            args.model, out=args.out, data=args.data, layout=args.layout, images=args.images,
            recursive=args.recursive, metadata=args.metadata,
            metadata_columns=args.metadata_columns, grad_cam=args.grad_cam,
            per_figure=args.per_figure, device=args.device, coverage=args.coverage,
            precision=args.precision,
            verbose=verbose,
        )  # fmt: skip
    elif args.command == "evaluate":
        from .evaluate import run_evaluate

        run_evaluate(
            args.model, data=args.data, layout=args.layout, out=args.out,
            n_resamples=args.n_resamples, random_state=args.random_state,
            metadata_columns=args.metadata_columns, device=args.device,
            precision=args.precision, subgroups=not args.no_subgroups, verbose=verbose,
        )  # fmt: skip
    elif args.command == "demo":
        from .demo import run_demo

        run_demo(
            args.data, n_samples=args.n_samples, n_splits=args.n_splits,
            image_size=args.image_size, out=args.out, random_state=args.random_state,
            device=args.device, precision=args.precision, verbose=verbose,
        )  # fmt: skip
    elif args.command == "info":
        from .info import run_info

        run_info(args.model, as_json=args.json, verbose=verbose)
    elif args.command == "serve":
        from .serve import run_serve

        run_serve(args.model, host=args.host, port=args.port, device=args.device,
                  verbose=verbose)  # fmt: skip
    elif args.command == "export":
        from .export import run_export

        run_export(args.model, onnx=args.onnx, opset=args.opset, verbose=verbose)
    else:
        from .. import show_versions

        show_versions()


def main(argv=None) -> int:
    """Run the command line; return the exit status: 2 for a user error (shown in one line),
    130 when stopped by Ctrl-C (one line, ``interrupted``)."""
    try:
        args = build_parser(__doc__).parse_args(argv)
        try:
            from .._config import config_context

            with config_context(engine=getattr(args, "engine", None)):  # None: as it is
                _run_command(args)
        except (ValueError, OSError) as exc:  # a user error: one line, no traceback
            message = " ".join(str(exc).split())
            print(f"skinfuse {args.command}: error: {message}", file=sys.stderr, flush=True)
            return 2
    except KeyboardInterrupt:
        print("\ninterrupted" if _mid_line() else "interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED
    return 0


def _mid_line() -> bool:
    """Whether a progress bar may have left the terminal's cursor mid-line (stderr a tty)."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())
