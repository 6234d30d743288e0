"""
==================================
Where did the model look? Grad-CAM
==================================

``skinfuse.explain.grad_cam`` returns one heatmap per image for any skinfuse model: here a
frozen-CNN fusion pipeline, whose differentiable steps after the encoder (scaler, MLP) are
rebuilt in torch so the gradient flows from the class score back to the CNN's last block.
"""

# %%
import warnings

import numpy as np

from skinfuse.datasets import make_synthetic_lesions
from skinfuse.encoders import FrozenCNNEncoder
from skinfuse.explain import grad_cam, plot_grad_cam
from skinfuse.pipeline import make_fusion_pipeline

# Small folds can miss a rare body site that the test fold has; skinfuse then warns and
# encodes it as an unknown category. Expected with 160 lesions, so silenced here.
warnings.filterwarnings("ignore", message="column 'localization' has", category=UserWarning)

lesions = make_synthetic_lesions(160, image_size=64, random_state=0)
X, y = lesions.data, lesions.target
model = make_fusion_pipeline(
    FrozenCNNEncoder("efficientnet_lite0", image_size=64, verbose=0), random_state=0
).fit(X, y)

# %%
# Heatmaps for eight lesions
# --------------------------
# ``return_images=True`` also returns the images as the encoder read them, to draw the
# overlays. The heatmaps are scaled to ``[0, 1]`` per image; the target class is the
# predicted one unless ``target=`` says otherwise.
cases = X.iloc[:8]
heatmaps, images = grad_cam(model, cases, return_images=True)
print(heatmaps.shape, heatmaps.min(), heatmaps.max())

fig = plot_grad_cam(images, heatmaps, y_true=y.iloc[:8], y_pred=model.predict(cases))

# %%
# Does the heatmap fall on the lesion?
# ------------------------------------
# The synthetic set knows where each lesion is (``lesions.masks``), so the share of the
# heatmap's mass inside the lesion can be measured rather than eyeballed.
masks = np.asarray(lesions.masks[:8], dtype=bool)
inside = (heatmaps * masks).sum(axis=(1, 2)) / heatmaps.sum(axis=(1, 2))
print("heatmap mass inside the lesion:", np.round(inside, 2))
print("lesion area share of the image:", np.round(masks.mean(axis=(1, 2)), 2))
