"""Walking a model for its torch parts; stashing them out of the skops payload and
rebuilding them on load."""

from __future__ import annotations

import json

import numpy as np

from .._utils._estimators import TORCH_PACKAGES, package_of
from .._utils._estimators import walk_estimators as estimators_in
from ._format import _TorchPart, _type_name


# -- walking a model -------------------------------------------------------------------------
def torch_estimators_in(model) -> list:
    from .._nn.device import TorchEstimatorMixin

    return [est for est in estimators_in(model) if isinstance(est, TorchEstimatorMixin)]


def _named_backbones() -> tuple:
    from .._nn.names import BACKBONES

    return BACKBONES


def _check_rebuildable(est) -> None:
    """Refuse what cannot be rebuilt without running the user's code: a custom backbone."""
    from ..encoders import ConvAutoencoderEncoder, FineTunedCNNEncoder, FrozenCNNEncoder
    from ..fusion import FusionNetClassifier

    known = (FrozenCNNEncoder, FineTunedCNNEncoder, ConvAutoencoderEncoder, FusionNetClassifier)
    if type(est) not in known:
        raise TypeError(
            f"skinfuse.save cannot store {type(est).__name__}: only skinfuse's own torch "
            f"estimators ({', '.join(cls.__name__ for cls in known)}) can be rebuilt safely. "
            "Use one of them, or joblib.dump at your own risk (opening a pickle runs code)."
        )
    backbone = getattr(est, "backbone", None)
    if isinstance(backbone, (tuple, list)) and all(isinstance(b, str) for b in backbone):
        return  # several named backbones: each is rebuilt by its own encoder in encoders_
    if backbone is not None and not isinstance(backbone, str):
        raise TypeError(
            f"skinfuse.save cannot store {type(est).__name__} with a custom backbone "
            f"({type(backbone).__name__}): rebuilding it would mean running your code when the "
            f"file is opened, which a safe model file must not do. Use a named backbone "
            f"({', '.join(_named_backbones())}) or a timm name ('timm:<model>', saved with its "
            "weights), or joblib.dump at your own risk (opening a "
            "pickle runs whatever code it holds: only open pickles you trust)."
        )


def _check_no_torch_left(model) -> None:
    """After the placeholders: no torch object may reach skops (it would pickle it)."""
    for est in estimators_in(model):
        for attr, value in vars(est).items():
            values = value if isinstance(value, (list, tuple)) else [value]
            if isinstance(value, dict):
                values = list(value.values())
            for item in values:
                if package_of(item) in TORCH_PACKAGES:
                    raise TypeError(
                        f"skinfuse.save cannot store {type(est).__name__}.{attr}: it holds a "
                        f"torch object ({_type_name(item if isinstance(item, type) else type(item))}) "
                        "that could only be saved as a pickle. Use skinfuse's named options "
                        "(e.g. optimizer='adamw', a named backbone), or joblib.dump at your own "
                        "risk."
                    )


# -- the torch parts ---------------------------------------------------------------------------
def _tensors_of(module, prefix) -> dict:
    return {
        f"{prefix}{name}": tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in module.state_dict().items()
    }


def _json_safe(value, what):
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON-serialisable ({exc}); got {value!r}") from exc


def _json_default(value):
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)  # e.g. a BootstrapInterval
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _stash(est, key, tensors, histories, restore) -> dict:
    """Replace ``est``'s torch parts by placeholders; return their record.

    ``restore`` gets ``(est, attr, value)`` for each part as soon as it is replaced, so
    that the caller puts everything back even when this fails half-way."""
    import torch
    from skorch import NeuralNet
    from skorch.history import History

    from .._nn.backbones import ImageEmbedder
    from .._nn.modules import ClassifierNetwork, ConvAutoencoder
    from .._nn.training import ClassifierNet, ReconstructionNet

    record = {"key": key, "owner": _type_name(type(est)), "parts": {}}
    net = vars(est).get("net_")  # before it is replaced: its history may be est.history_
    for attr, value in list(vars(est).items()):
        if attr == "_device_copies":
            continue
        if isinstance(value, NeuralNet):
            if type(value) not in (ClassifierNet, ReconstructionNet) or type(
                getattr(value, "module_", None)
            ) not in (ClassifierNetwork, ConvAutoencoder):
                raise TypeError(
                    f"skinfuse.save cannot store {type(est).__name__}.{attr}: a "
                    f"{type(value).__name__} that skinfuse did not build"
                )
            kind = "classifier_net" if type(value) is ClassifierNet else "reconstruction_net"
            module_kwargs = {
                k[len("module__") :]: v for k, v in vars(value).items() if k.startswith("module__")
            }
            part = {
                "kind": kind,
                "module_kwargs": _json_safe(module_kwargs, "the network's arguments"),
                "net_params": {
                    k: getattr(value, k)
                    for k in ("batch_size", "lr", "max_epochs")
                    if isinstance(getattr(value, k, None), (int, float))
                },
            }
            tensors.update(_tensors_of(value.module_, f"{key}/{attr}/module/"))
            criterion = getattr(value, "criterion_", None)
            if isinstance(criterion, torch.nn.Module):
                tensors.update(_tensors_of(criterion, f"{key}/{attr}/criterion/"))
            histories[f"{key}/{attr}"] = _json_safe(list(value.history), "the training history")
        elif isinstance(value, ImageEmbedder):
            if attr != "embedder_":
                raise TypeError(f"unexpected network {type(est).__name__}.{attr}")
            part = {
                "kind": "embedder",
                "backbone": est.backbone,
                "pooling": est._pooling() if hasattr(est, "_pooling") else est.pooling,
            }
            tensors.update(_tensors_of(value, f"{key}/{attr}/"))
        elif isinstance(value, History):
            if isinstance(net, NeuralNet) and net.history is value:
                part = {"kind": "history", "same_as": "net_"}  # net_.history, stored with it
            else:
                part = {"kind": "history"}
                histories[f"{key}/{attr}"] = _json_safe(list(value), "the training history")
        else:
            continue
        record["parts"][attr] = part
        restore.append((est, attr, value))
        setattr(est, attr, _TorchPart(key, part["kind"]))
    return record


def _rebuild(est, record, attr, part, tensors, histories):
    """The torch part ``attr`` of ``est``, rebuilt from its record and its weights."""
    import torch
    from skorch.history import History

    from .._nn.device import torch_seed

    key = record["key"]
    prefix = f"{key}/{attr}/"
    kind = part.get("kind")
    if kind == "history":
        if part.get("same_as") == "net_":
            return est.net_.history
        return History(histories[f"{key}/{attr}"])
    if kind == "embedder":
        from .._nn.backbones import build_embedder

        backbone = _checked_backbone(part.get("backbone"))
        embedder, _, _ = build_embedder(backbone, None, str(part.get("pooling")))
        _load_state(embedder, _select(tensors, prefix), f"{record['owner']}.{attr}")
        return embedder.eval()
    if kind not in ("classifier_net", "reconstruction_net"):
        raise ValueError(f"unknown kind of torch part {kind!r} in the manifest")

    from .._nn.modules import ClassifierNetwork, ConvAutoencoder
    from .._nn.training import ClassifierNet, ReconstructionNet, finish_training

    kwargs = dict(part["module_kwargs"])
    params = {
        k: v
        for k, v in part.get("net_params", {}).items()
        if k in ("batch_size", "lr", "max_epochs") and isinstance(v, (int, float))
    }
    if kind == "classifier_net":
        _checked_backbone(kwargs.get("backbone"))
        saved_weights = kwargs.get("weights")
        kwargs["weights"] = None  # the weights come from the file, not from a download/path
        weight = tensors.get(f"{prefix}criterion/weight")
        net = ClassifierNet(
            module=ClassifierNetwork, **{f"module__{k}": v for k, v in kwargs.items()},
            criterion=torch.nn.CrossEntropyLoss, criterion__weight=weight,
            classes=np.arange(int(kwargs["n_classes"])), train_split=None, device="cpu",
            **params,
        )  # fmt: skip
    else:
        saved_weights = None
        kwargs["channels"] = tuple(int(c) for c in kwargs["channels"])
        net = ReconstructionNet(
            module=ConvAutoencoder, **{f"module__{k}": v for k, v in kwargs.items()},
            criterion=torch.nn.MSELoss, train_split=None, device="cpu", **params,
        )  # fmt: skip
    with torch_seed(0):  # random initial weights, replaced below; the global stream is kept
        net.initialize()
    _load_state(net.module_, _select(tensors, f"{prefix}module/"), f"{record['owner']}.{attr}")
    net.history = History(histories.get(f"{key}/{attr}", []))
    finish_training(net)
    if kind == "classifier_net":
        net.module__weights = saved_weights  # as fitted (get_params shows what the user chose)
    return net


def _checked_backbone(name):
    from .._nn.names import is_backbone_name

    if not is_backbone_name(name):
        raise ValueError(
            f"the model file names backbone {name!r}, which is not one of skinfuse's named "
            f"backbones ({', '.join(_named_backbones())}) nor a 'timm:'/'hf-hub:' name; it "
            "cannot be rebuilt"
        )
    return name


def _select(tensors, prefix):
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _load_state(module, state, what):
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"the weights stored for {what} do not fit the rebuilt network ({exc}); the file "
            "is damaged or was not written by skinfuse.save"
        ) from exc
