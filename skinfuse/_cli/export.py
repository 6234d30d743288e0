"""``skinfuse export``: a model file's network to ONNX, its preprocessing to JSON."""

from __future__ import annotations

from . import common

__all__ = ["run_export"]


def run_export(model, *, onnx, opset=18, verbose=1) -> dict:
    """Export the network of the model file ``model`` to ``onnx``; return the paths written."""
    path = common.check_in_file(model, "model file", "MODEL")
    out = common.check_out_file(onnx, "--onnx")
    try:
        import onnx as _onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ValueError(
            f"skinfuse export needs {error.name}: pip install 'skinfuse[onnx]'"
        ) from None
    from .._export import export_onnx

    loaded = common.load_model(path)
    try:
        paths = export_onnx(loaded, out, opset=opset)
    except TypeError as error:  # a model without an exportable network: a user error
        raise ValueError(str(error)) from None
    common.say(verbose, f"wrote {paths['onnx']} and its preprocessing {paths['preprocessing']}")
    return paths
