"""The torch side of :func:`~skinfuse.explain.grad_cam`: resolving the layer, running
pytorch-grad-cam's methods (Score-CAM batched, without a progress bar) and occlusion.

Imported lazily by :mod:`._cam`: this module imports torch and pytorch-grad-cam.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam import ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ._methods import GRADIENT_METHODS


class BatchedScoreCAM(ScoreCAM):
    """pytorch-grad-cam's ``ScoreCAM`` scoring ``batch_size`` masked images per forward pass.

    The weights are those of ``ScoreCAM.get_cam_weights`` (each channel of the layer,
    upsampled and min-max scaled, masks the image; the weights are the softmax over
    channels of the class score of the masked images), without its per-image tqdm bar.

    Parameters
    ----------
    model : torch.nn.Module
    target_layers : list of torch.nn.Module
    reshape_transform : callable or None, default=None
        As in ``ScoreCAM``.
    batch_size : int, default=32
        Masked images per forward pass.
    """

    def __init__(self, model, target_layers, reshape_transform=None, *, batch_size=32):
        super().__init__(model, target_layers, reshape_transform=reshape_transform)
        self.batch_size = batch_size

    def get_cam_weights(self, input_tensor, target_layer, targets, activations, grads):
        with torch.no_grad():
            act = torch.from_numpy(activations).to(self.device)
            up = torch.nn.functional.interpolate(
                act, size=input_tensor.shape[-2:], mode="bilinear", align_corners=True
            )
            flat = up.flatten(2)
            lo, hi = flat.min(-1)[0][..., None, None], flat.max(-1)[0][..., None, None]
            up = (up - lo) / (hi - lo + 1e-8)
            scores = []
            for target, image, masks in zip(targets, input_tensor, up):
                for i in range(0, masks.shape[0], self.batch_size):
                    batch = image[None] * masks[i : i + self.batch_size, None]
                    scores.extend(float(target(o)) for o in self.model(batch))
            scores = torch.tensor(scores).view(activations.shape[0], activations.shape[1])
            return torch.softmax(scores, dim=-1).numpy()


def resolve_layer(layer, root, default):
    if layer is None:
        layer = default
        if layer is None:
            raise ValueError(
                "the model's CNN has no known convolutional layer to explain; pass layer= "
                "(a dotted module name) or method='occlusion'"
            )
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in root.modules()):
            raise ValueError(f"layer {type(layer).__name__} is not part of the model's CNN")
        return layer
    if not isinstance(layer, str):
        raise TypeError(
            f"layer must be a dotted module name, a torch module or None; got {layer!r}"
        )
    try:
        return root.get_submodule(layer)
    except AttributeError:
        convs = [name for name, m in root.named_modules() if isinstance(m, nn.Conv2d)]
        raise ValueError(
            f"layer {layer!r} not found in the model's CNN; convolutional layers: "
            f"{convs[-5:]} (last 5)"
        ) from None


# -- running --------------------------------------------------------------------------------
@contextlib.contextmanager
def preserved_state(module):
    """Restore every submodule's train/eval mode and every parameter's ``.grad`` on exit."""
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.grad) for p in module.parameters()]
    try:
        yield module
    finally:
        for m, training in modes:
            m.training = training
        for p, grad in grads:
            p.grad = grad


def library_cam(method, module, target_layer, x, tgt, batch_size):
    if method == "scorecam":
        cam = BatchedScoreCAM(module, [target_layer], batch_size=batch_size)
    else:
        cam = getattr(pytorch_grad_cam, GRADIENT_METHODS[method])(module, [target_layer])
    targets = None if tgt is None else [ClassifierOutputTarget(int(t)) for t in tgt]
    # try/finally rather than ``with cam:``: its __exit__ swallows IndexErrors
    try:
        with torch.enable_grad():
            return cam(input_tensor=x, targets=targets)
    finally:
        cam.activations_and_grads.release()


def _windows(size, patch):
    stride = max(1, patch // 2)
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def occlusion(module, x, tgt, patch, batch_size):
    """Drop in class probability when a patch of the image's mean colour hides each region."""
    device = next(module.parameters()).device
    x = x.to(device)
    _, _, h, w = x.shape
    out = np.zeros((x.shape[0], h, w), dtype=np.float32)
    with torch.no_grad():
        module.eval()
        for k in range(x.shape[0]):
            image = x[k : k + 1]
            proba = torch.softmax(module(image).double(), dim=1)[0]
            t = int(proba.argmax()) if tgt is None else int(tgt[k])
            fill = image.mean(dim=(2, 3), keepdim=True)
            boxes = [(i, j) for i in _windows(h, patch) for j in _windows(w, patch)]
            drop = np.zeros((h, w))
            count = np.zeros((h, w))
            for b in range(0, len(boxes), batch_size):
                part = boxes[b : b + batch_size]
                batch = image.repeat(len(part), 1, 1, 1)
                for m, (i, j) in enumerate(part):
                    batch[m, :, i : i + patch, j : j + patch] = fill[0]
                p = torch.softmax(module(batch).double(), dim=1)[:, t].cpu().numpy()
                for m, (i, j) in enumerate(part):
                    drop[i : i + patch, j : j + patch] += float(proba[t]) - p[m]
                    count[i : i + patch, j : j + patch] += 1
            heat = np.maximum(drop / np.maximum(count, 1), 0.0)
            top = heat.max()
            out[k] = heat / top if top > 0 else heat
    return out
