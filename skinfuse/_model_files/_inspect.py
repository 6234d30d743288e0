"""What a model file holds, read without building anything from it (``skinfuse info``).

Only JSON is read: the manifest (:func:`read_manifest`) and the schema of the skops
payload, whose type names skops checks against the trusted list
(:func:`skops.io.get_untrusted_types`) without creating an object. So a file from an
unknown source is safe to inspect before anyone calls :func:`load` on it.
"""

from __future__ import annotations

import io
import json
import zipfile

from ._format import _SKOPS, _trusted_types
from ._load import read_manifest
from ._manifest import _sha256

__all__ = ["inspect_file"]


def _estimator_tree(node):
    """The estimators of a skops schema node: ``{"class": ..., "parts": [...]}`` per
    object, following its parameters (keys without a leading or trailing ``_``), not its
    fitted attributes (which repeat them)."""

    def children(value):
        if isinstance(value, list):
            return [tree for item in value for tree in children(item)]
        if not isinstance(value, dict):
            return []
        if value.get("__loader__") == "ObjectNode" and value.get("__module__") != "builtins":
            params = value.get("content", {}).get("content", {})
            parts = [
                tree for key, item in params.items()
                if not key.startswith("_") and not key.endswith("_")
                for tree in children(item)
            ]  # fmt: skip
            return [{"class": f"{value['__module__']}.{value['__class__']}", "parts": parts}]
        if value.get("__loader__") in ("DictNode", "ListNode", "TupleNode"):
            content = value.get("content")
            items = content.values() if isinstance(content, dict) else content or []
            return [tree for item in items for tree in children(item)]
        return []

    found = children(node)
    return found[0] if len(found) == 1 else {"class": None, "parts": found}


def _payload(path, manifest):
    """The model file's payloads and whether each matches the manifest's checksum."""
    checks, schema = {}, None
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        for name, expected in manifest.get("sha256", {}).items():
            checks[name] = name in names and _sha256(zf.read(name)) == expected
        payload = zf.read(_SKOPS) if _SKOPS in names else None
    if payload is not None:
        with zipfile.ZipFile(io.BytesIO(payload)) as inner:
            schema = json.loads(inner.read("schema.json"))
    return payload, schema, checks


def inspect_file(path) -> dict:
    """What the model file ``path`` holds (JSON-serialisable), read without loading it.

    Raises ``ValueError`` when ``path`` is not a skinfuse model file of this format.
    """
    import skops.io as sio

    from .. import __version__

    manifest = read_manifest(path)
    try:
        payload, schema, checks = _payload(path, manifest)
    except (KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path} is damaged: its {_SKOPS} cannot be read ({exc})") from None
    # the file's own claims of trust (the trusted=[...] given to save) are not taken
    untrusted = [] if payload is None else sorted(
        set(sio.get_untrusted_types(data=payload)) - set(_trusted_types())
    )  # fmt: skip
    metrics = dict(manifest.get("metrics") or {})
    return {
        "file": str(path),
        "format_version": manifest["format_version"],
        "created": manifest.get("created"),
        "skinfuse_version": manifest.get("skinfuse_version"),
        "this_skinfuse_version": __version__,
        "versions": manifest.get("versions", {}),
        "model_class": manifest.get("model_class"),
        "recipe": metrics.pop("recipe", None),
        "estimators": None if schema is None else _estimator_tree(schema),
        "classes": manifest.get("classes"),
        "input_columns": manifest.get("feature_names_in"),
        "image_size": manifest.get("image_size"),
        "metrics": metrics,
        "training_data": manifest.get("training_data"),
        "networks": manifest.get("torch_parts", []),
        "trusted_types": manifest.get("trusted_types", []),
        "untrusted_types": untrusted,
        "checksums_ok": all(checks.values()) and _SKOPS in checks,
    }
