"""pytorch-grad-cam's Score-CAM, batched and without a progress bar.

Imported lazily by :mod:`._cam`: this module imports torch and pytorch-grad-cam.
"""

from __future__ import annotations

import torch
from pytorch_grad_cam import ScoreCAM


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
