"""``skinfuse info``: what a model file holds, read without building anything from it
(:func:`skinfuse._model_files.inspect_file`), as text or JSON."""

from __future__ import annotations

import json

from .._model_files import inspect_file, training_data_markdown
from . import common

__all__ = ["run_info"]

_BASIC_VERSIONS = ("python", "scikit-learn", "torch")


def _tree_lines(tree, depth=1):
    lines = []
    if tree["class"] is not None:
        lines.append("  " * depth + tree["class"].rsplit(".", 1)[-1])
        depth += 1
    for part in tree["parts"]:
        lines += _tree_lines(part, depth)
    return lines


def _text(info, verbose) -> str:
    def listed(values):
        return ", ".join(map(str, values)) if values else "not recorded"

    versions = info["versions"]
    shown = versions if verbose > 1 else {k: versions.get(k) for k in _BASIC_VERSIONS}
    lines = [
        f"model file: {info['file']} (format {info['format_version']}, saved "
        f"{info['created']} with skinfuse {info['skinfuse_version']}; this is skinfuse "
        f"{info['this_skinfuse_version']})",
        "versions: " + ", ".join(f"{k} {v}" for k, v in shown.items()),
        f"model: {info['model_class']}" + (f" (recipe {info['recipe']!r})" if info["recipe"] else ""),
    ]  # fmt: skip
    if info["estimators"] is not None:
        lines += ["estimators:", *_tree_lines(info["estimators"])]
    image_size = info["image_size"] or "no images (metadata only)"
    lines += [
        f"classes: {listed(info['classes'])}",
        f"input columns: {listed(info['input_columns'])}",
        f"image size: {image_size}",
    ]
    for network in info["networks"]:
        owner = network["owner"].rsplit(".", 1)[-1]
        for attr, part in network["parts"].items():
            detail = part if verbose > 1 else {k: part[k] for k in ("backbone",) if k in part}
            settings = ", ".join(f"{k}={v}" for k, v in detail.items() if k != "kind")
            lines.append(f"network: {owner}.{attr} ({part.get('kind')}{', ' if settings else ''}"
                         f"{settings})")  # fmt: skip
    if info["metrics"]:
        lines.append("metrics (as stored with the model):")
        lines += [f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}"
                  for k, v in info["metrics"].items()]  # fmt: skip
    else:
        lines.append("metrics: none stored")
    training = training_data_markdown(info["training_data"]).strip()
    if training:
        lines += ["training data:", *("  " + line[2:] for line in training.splitlines())]
    else:
        lines.append("training data: no summary stored")
    if info["untrusted_types"]:
        lines.append("untrusted types (skinfuse.load refuses the file unless passed "
                     "trusted=[...]; only if you know them to be safe): "
                     + ", ".join(info["untrusted_types"]))  # fmt: skip
    else:
        lines.append("types: all trusted (skinfuse.load opens it)")
    lines.append("checksums: " + ("ok" if info["checksums_ok"] else "MISMATCH (damaged file)"))
    return "\n".join(lines)


def run_info(model, *, as_json=False, verbose=1) -> dict:
    """Print what the model file ``model`` holds (as JSON with ``as_json``); return it.

    ``verbose`` > 1 adds the versions of every package recorded and the networks'
    settings. Nothing in the file is built or run.
    """
    path = common.check_in_file(model, "model file", "MODEL")
    info = inspect_file(path)
    print(json.dumps(info, indent=2) if as_json else _text(info, verbose), flush=True)
    return info
