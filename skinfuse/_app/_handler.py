"""One upload in, the page's result out: probabilities, prediction set, referral, Grad-CAM.

No server here: :func:`analyse` takes the bytes of an image and the form's fields and returns
a JSON-ready dict, or raises :class:`InputError` with a message for the page.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["InputError", "ModelPage", "analyse"]

#: The largest upload read (bytes); a dermoscopic JPEG is a few MB.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: The most pixels decoded (Pillow raises its DecompressionBombError above twice this).
MAX_PIXELS = 50_000_000
#: Longest side of the returned overlay (the image is shown at most this large).
MAX_SIDE = 512

RESEARCH_ONLY = (
    "A research tool, not a medical device: it has not been approved for diagnosis, and its "
    "output must not guide the care of a patient."
)


class InputError(ValueError):
    """A bad upload or form field: the message is shown on the page."""


@dataclass(frozen=True)
class ModelPage:
    """What the page needs to know about a loaded model, read once at start-up.

    Build it with :meth:`from_file`.
    """

    model: object
    classes: tuple
    class_names: dict
    metadata_columns: tuple
    categories: dict = field(default_factory=dict)
    age_range: tuple = (0.0, 120.0)
    coverage: float | None = None
    card: dict = field(default_factory=dict)

    @classmethod
    def from_file(cls, path):
        """Load the model file ``path`` (``skinfuse.load``) and read its manifest's facts."""
        from .._columns import IMAGE_COLUMN, METADATA_COLUMNS
        from .._model_files import inspect_file, load, read_manifest
        from ..conformal import PredictionSets
        from ..datasets import HAM10000_CLASSES
        from ..metadata import VALID_RANGES

        model = load(path)
        info = inspect_file(path)
        manifest = read_manifest(path)
        classes = tuple(str(c) for c in model.classes_)
        names = getattr(model, "feature_names_in_", None)
        columns = (METADATA_COLUMNS if names is None
                   else tuple(str(c) for c in names if c != IMAGE_COLUMN))  # fmt: skip
        summary = (info.get("training_data") or {}).get("metadata") or {}
        categories = {
            c: sorted(summary[c]["categories"])
            for c in columns
            if summary.get(c, {}).get("kind") == "categorical"
        }
        coverage = model.coverage if isinstance(model, PredictionSets) else None
        card = _card(info, manifest, path)
        words = {c: HAM10000_CLASSES.get(c, c) for c in classes}
        age_range = VALID_RANGES.get("age", (0.0, 120.0))
        return cls(model, classes, words, columns, categories, age_range, coverage, card)

    def form(self) -> dict:
        """The form's fields: which metadata the model reads, and their allowed values."""
        fields = []
        for column in self.metadata_columns:
            if column in self.categories:
                fields.append({"name": column, "kind": "category",
                               "choices": self.categories[column]})  # fmt: skip
            elif column == "age":
                low, high = self.age_range
                fields.append({"name": column, "kind": "number", "min": low, "max": high})
            else:
                fields.append({"name": column, "kind": "number"})
        return {"fields": fields, "card": self.card, "notice": RESEARCH_ONLY,
                "coverage": self.coverage}  # fmt: skip


def _card(info, manifest, path) -> dict:
    """The model card's facts, as label -> text."""
    from pathlib import Path

    from .._model_files import calibration_line, sets_line

    facts = {
        "Model file": Path(path).name,
        "Model": info["model_class"].rsplit(".", 1)[-1]
        + (f" (recipe {info['recipe']})" if info.get("recipe") else ""),
        "Saved": f"{info['created']} with skinfuse {info['skinfuse_version']}",
        "Classes": ", ".join(map(str, info["classes"] or [])),
        "Inputs": ", ".join(map(str, info["input_columns"] or [])),
    }
    training = info.get("training_data") or {}
    if training.get("n_images"):
        facts["Training data"] = f"{training['n_images']} images"
    facts["Calibration"] = calibration_line(manifest)
    facts["Prediction sets"] = sets_line(manifest)
    for key, value in (info.get("metrics") or {}).items():
        facts[f"Metric: {key}"] = f"{value:.3g}" if isinstance(value, float) else str(value)
    return facts


def decode_image(data: bytes) -> np.ndarray:
    """The upload as an ``(H, W, 3) uint8`` array, or an :class:`InputError` saying why not."""
    from PIL import Image, ImageOps

    if not data:
        raise InputError("no image: choose an image file (JPEG or PNG) to upload")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"the file is {len(data) / 2**20:.0f} MB; the page reads images up "
                         f"to {MAX_UPLOAD_BYTES // 2**20} MB")  # fmt: skip
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise InputError(
                    f"the image is {img.width} x {img.height} pixels, more than the "
                    f"{MAX_PIXELS // 10**6} million the page decodes (a decompression-bomb "
                    "guard): upload a smaller copy"
                )
            img = ImageOps.exif_transpose(img)
            img.load()
            return np.asarray(img.convert("RGB"))
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError("the image is too large to decode safely: upload a smaller copy") from None
    except Image.UnidentifiedImageError:
        raise InputError("the file is not an image Pillow can read: upload a JPEG or PNG "
                         "image") from None  # fmt: skip
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"the image could not be decoded ({exc}): it may be truncated or "
                         "damaged; upload it again or another copy") from None  # fmt: skip


def _metadata(page: ModelPage, fields: dict) -> dict:
    """The form's metadata as the model's values (NaN: not given); InputError when wrong."""
    values = {}
    for column in page.metadata_columns:
        raw = fields.get(column)
        raw = "" if raw is None else str(raw).strip()
        if raw == "" or raw == "unknown":
            values[column] = np.nan
        elif column in page.categories:
            if raw not in page.categories[column]:
                known = ", ".join(page.categories[column])
                raise InputError(f"{column} {raw!r} is not one the model knows; choose one of "
                                 f"{known}, or leave it empty")  # fmt: skip
            values[column] = raw
        else:
            try:
                number = float(raw)
            except ValueError:
                raise InputError(f"{column} must be a number, got {raw!r}") from None
            low, high = page.age_range if column == "age" else (-math.inf, math.inf)
            if not (low <= number <= high) or math.isnan(number):
                raise InputError(f"{column} {raw} is out of range: enter a value from "
                                 f"{low:g} to {high:g}, or leave it empty")  # fmt: skip
            values[column] = number
    unknown = sorted(set(fields) - set(page.metadata_columns))
    if unknown:
        raise InputError(f"the model does not read {', '.join(unknown)}; it reads "
                         f"{', '.join(page.metadata_columns) or 'no metadata'}")  # fmt: skip
    return values


def _overlay(image: np.ndarray, heat: np.ndarray, alpha=0.45) -> np.ndarray:
    """The Grad-CAM map over the image, at the image's size (``uint8``)."""
    from matplotlib import colormaps
    from PIL import Image

    heat = np.asarray(heat, dtype=np.float32)
    heat = np.asarray(Image.fromarray(heat, mode="F").resize(
        (image.shape[1], image.shape[0]), Image.Resampling.BILINEAR))  # fmt: skip
    span = float(heat.max() - heat.min())
    heat = (heat - heat.min()) / span if span > 0 else np.zeros_like(heat)
    colour = colormaps["jet"](heat)[..., :3]
    blend = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colour
    return np.clip(blend * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _png(image: np.ndarray) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def analyse(page: ModelPage, data: bytes, fields=None, *, overlay=True) -> dict:
    """The page's result for one upload.

    Parameters
    ----------
    page : ModelPage
        The loaded model and its facts.
    data : bytes
        The uploaded file.
    fields : dict of str to str or None, default=None
        The form's metadata (e.g. ``{"age": "55", "sex": "male"}``); an empty or absent
        field is a missing value, as in training.
    overlay : bool, default=True
        Also compute the Grad-CAM overlay (``overlay``, a PNG data URL at the image's size,
        its longest side at most :data:`MAX_SIDE`).

    Returns
    -------
    result : dict
        ``probabilities`` (a list of ``{"class", "name", "probability"}``, highest first),
        ``top`` (the most probable class's name), ``width``/``height`` of the shown
        image, ``prediction_set`` and ``refer`` (``None`` when the model has no sets),
        ``coverage``, ``overlay`` and ``image`` (PNG data URLs).

    Raises
    ------
    InputError
        If the file is not a readable image, is too large, or a field is out of range or
        not one of the model's categories; the message says which and what to do.
    """
    import pandas as pd
    from PIL import Image

    from .._columns import IMAGE_COLUMN

    values = _metadata(page, dict(fields or {}))
    image = decode_image(data)
    if max(image.shape[:2]) > MAX_SIDE:
        scale = MAX_SIDE / max(image.shape[:2])
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    X = pd.DataFrame({IMAGE_COLUMN: [image], **{c: [v] for c, v in values.items()}})
    for column in page.categories:
        X[column] = X[column].astype(object)
    proba = np.asarray(page.model.predict_proba(X))[0]
    order = np.argsort(-proba, kind="stable")
    result = {
        "probabilities": [
            {"class": c, "name": page.class_names[c], "probability": float(proba[k])}
            for k, c in ((k, page.classes[k]) for k in order)
        ],
        "top": page.class_names[page.classes[order[0]]],
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "coverage": page.coverage,
        "prediction_set": None,
        "refer": None,
        "image": _png(image),
        "overlay": None,
    }
    if page.coverage is not None:
        from ..metrics import referral

        sets = page.model.sets_from_proba(proba[None, :])
        members = [page.classes[k] for k in np.flatnonzero(sets[0])]
        result["prediction_set"] = [page.class_names[c] for c in members]
        result["refer"] = bool(referral(sets, classes=np.asarray(page.classes))[0])
    if overlay:
        from ..explain import grad_cam

        heat = grad_cam(page.model, X)
        result["overlay"] = _png(_overlay(image, np.asarray(heat)[0]))
    return result
