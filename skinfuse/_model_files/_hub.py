"""The Hugging Face Hub: the YAML front matter of a model card (licence, tags, datasets,
metrics as the Hub's ``model-index``) and ``hf://`` model files (``huggingface_hub``)."""

from __future__ import annotations

#: Tags every skinfuse card carries; ``card={"tags": [...]}`` adds to them.
_TAGS = ("skinfuse", "scikit-learn", "pytorch", "image-classification", "dermatology",
         "skin-lesion", "dermoscopy", "research-only", "not-a-medical-device")  # fmt: skip

#: What ``card=`` may set, as a dict: key -> what it is.
CARD_OPTIONS = {
    "license": "the model's licence as the Hub names it, e.g. 'cc-by-nc-4.0' (default 'other': "
    "a model inherits the terms of its training data; HAM10000 is CC BY-NC 4.0)",
    "datasets": "Hub ids of the training data sets, e.g. ['org/ham10000']",
    "tags": "further tags",
    "dataset_name": "the name of the evaluation data in the metrics (default: the cv "
    "description in the metrics, or 'training data, lesion-grouped cross-validation')",
}

_INTERVAL = ("estimate", "low", "high")


def card_options(card) -> dict:
    """``card`` (bool or dict) checked: the options of the front matter, ``{}`` for ``True``."""
    if card is True or card is False:
        return {}
    unknown = sorted(set(card) - set(CARD_OPTIONS))
    if unknown:
        raise ValueError(
            f"card={card!r}: unknown option(s) {unknown}; card takes True or a dict with any "
            f"of {sorted(CARD_OPTIONS)}"
        )
    for key in ("datasets", "tags"):
        if key in card and (
            isinstance(card[key], str) or not all(isinstance(v, str) for v in card[key])
        ):
            raise TypeError(f"card[{key!r}] must be a list of strings; got {card[key]!r}")
    return dict(card)


def hub_metrics(metrics) -> list:
    """The numbers among ``metrics`` as the Hub's metric entries, in their order.

    A number ``m`` becomes ``{type: m, value: m}`` (with ``m_std``, its spread over the
    folds, in the name and in ``args``); a lesion-grouped bootstrap interval (a dict with
    ``estimate``, ``low``, ``high``, as :func:`skinfuse.metrics.bootstrap_interval` gives
    it) becomes its estimate, with the interval in the name and in ``args``.
    """
    out = []
    metrics = metrics or {}
    for key, value in metrics.items():
        if isinstance(value, dict) and all(k in value for k in _INTERVAL):
            confidence = value.get("confidence", 0.95)
            args = {k: value[k] for k in ("low", "high", "confidence", "n_resamples") if k in value}
            name = (f"{key} ({100 * confidence:.3g} % lesion-grouped bootstrap interval "
                    f"{value['low']:.4g} to {value['high']:.4g})")  # fmt: skip
            out.append({"type": key, "value": value["estimate"], "name": name,
                        "args": {**args, "resampled": "lesions"}})  # fmt: skip
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.endswith("_std") and key[: -len("_std")] in metrics:
            continue  # shown with its metric
        entry = {"type": key, "value": value, "name": key}
        std = metrics.get(f"{key}_std")
        if isinstance(std, (int, float)) and not isinstance(std, bool):
            entry["name"] = f"{key} (± {std:.3g} std over the folds)"
            entry["args"] = {"std": std}
        out.append(entry)
    return out


def front_matter(manifest, options) -> str:
    """The card's YAML front matter (between ``---`` lines), for the Hub."""
    import yaml

    metrics = manifest.get("metrics") or {}
    name = manifest["model_class"].rsplit(".", 1)[-1]
    meta = {
        "license": options.get("license", "other"),
        "library_name": "skinfuse",
        "pipeline_tag": "image-classification",
        "tags": list(dict.fromkeys([*_TAGS, *options.get("tags", [])])),
    }
    if meta["license"] == "other":
        meta["license_name"] = "see-training-data"
    if options.get("datasets"):
        meta["datasets"] = list(options["datasets"])
    entries = hub_metrics(metrics)
    if entries:
        dataset = options.get("dataset_name") or (
            metrics["cv"] if isinstance(metrics.get("cv"), str)
            else "training data, lesion-grouped cross-validation"
        )  # fmt: skip
        meta["metrics"] = list(dict.fromkeys(e["type"] for e in entries))
        meta["model-index"] = [{
            "name": name,
            "results": [{
                "task": {"type": "image-classification", "name": "Skin lesion classification"},
                "dataset": {"name": dataset, "type": (options.get("datasets") or ["custom"])[0]},
                "metrics": [{**e, "verified": False} for e in entries],
            }],
        }]  # fmt: skip
    meta["intended_use"] = (
        "Research on the classification of dermoscopic images of skin lesions with clinical "
        "metadata. Not a medical device: not for the diagnosis, exclusion or triage of "
        "skin cancer."
    )
    text = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    return f"---\n{text}---\n\n"


# -- hf:// files -------------------------------------------------------------------------------
def is_hub_path(path) -> bool:
    return isinstance(path, str) and path.startswith("hf://")


def download(path: str):
    """``hf://org/repo/file.skinfuse`` (``@revision`` after the repo, optional) -> a local
    copy, through :func:`huggingface_hub.hf_hub_download` (its cache, its token)."""
    parts = path[len("hf://") :].split("/")
    if len(parts) < 3 or not all(parts):
        raise ValueError(
            f"{path!r} is not a Hub model file: write hf://org/repo/file.skinfuse (or "
            "hf://org/repo@revision/folder/file.skinfuse)"
        )
    repo, _, revision = "/".join(parts[:2]).partition("@")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ImportError(
            f"loading {path} needs huggingface_hub: pip install 'skinfuse[hub]'"
        ) from None
    return hf_hub_download(repo_id=repo, filename="/".join(parts[2:]), revision=revision or None)
