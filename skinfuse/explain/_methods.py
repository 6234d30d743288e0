"""The CAM methods grad_cam offers, by name (a leaf: imported by :mod:`._cam` and by its
torch side, :mod:`._torch_cam`)."""

#: Gradient methods, by name: pytorch-grad-cam classes.
GRADIENT_METHODS = {
    "gradcam": "GradCAM",
    "gradcam++": "GradCAMPlusPlus",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "layercam": "LayerCAM",
}
#: Methods that only run the model forward.
GRADIENT_FREE_METHODS = ("scorecam", "occlusion")
METHODS = ("auto", *GRADIENT_METHODS, *GRADIENT_FREE_METHODS)
