"""timm models as backbones: ``forward_features`` as the feature map, and the normalisation
a model's ``pretrained_cfg`` records (:mod:`.backbones` builds them)."""

from __future__ import annotations

from torch import nn


class ForwardFeatures(nn.Module):
    """A timm model's ``forward_features`` as ``forward``: the feature map before pooling.

    A token sequence ``(B, N, C)`` (vision transformers) goes through the model's own
    ``forward_head(..., pre_logits=True)`` (its class token or token pooling and final
    norm), giving ``(B, C)`` features that the encoders' pooling passes through.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model.forward_features(x)
        if out.ndim == 3 and hasattr(self.model, "forward_head"):
            out = self.model.forward_head(out, pre_logits=True)
        return out


def _cfg_preprocessing(cfg):
    """``(mean, std)`` from a timm ``pretrained_cfg`` (a dict or a dataclass), or None."""
    if cfg is None:
        return None
    get = cfg.get if isinstance(cfg, dict) else lambda key, default=None: getattr(cfg, key, default)
    mean, std = get("mean"), get("std")
    if mean is None or std is None:
        return None
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(
            f"the backbone's pretrained_cfg has mean={mean} and std={std}; skinfuse needs "
            "three values each (RGB images)"
        )
    return mean, std
