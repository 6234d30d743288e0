"""Explanations of fitted skinfuse models, with pictures.

- :func:`grad_cam`: where in the image did the model look? Grad-CAM (and friends)
  from pytorch-grad-cam through the whole fusion model, Score-CAM or occlusion where
  gradients do not flow (a random-forest head).
- :func:`explain_metadata`: how much did the image, age, sex and location matter for
  each case? SHAP values of the *original* columns (the image is one feature).
- :func:`modality_importance`: the same over a data set, by permutation importance.
- :func:`plot_grad_cam`, :func:`plot_shap_summary`, :func:`plot_shap_waterfall`,
  :func:`plot_importance`: matplotlib figures. The confusion matrix is drawn by
  :func:`skinfuse.metrics.plot_confusion_matrix`, beside the other pictures of the
  evaluation.

Importing this module is cheap: torch, shap, pytorch-grad-cam and matplotlib are
imported by the functions that need them.

Making your own estimator explainable by :func:`grad_cam`
---------------------------------------------------------
Like scikit-learn's ``__sklearn_tags__`` and ``__sklearn_clone__``, two dunder methods
form a public extension protocol; :func:`grad_cam` looks them up on the estimator.

Pipelines need nothing: an image encoder inside them is found through its
``embedder_`` (a module mapping images to the embedding that ``transform`` returns)
and ``cam_layer_`` (a dotted name inside ``embedder_``) and ``image_size``. An encoder
without those attributes may instead implement::

    def __skinfuse_gradcam_embedder__(self):
        '''Return (embedder, cam_layer, image_size).'''

with the same three meanings (``cam_layer`` a dotted name inside ``embedder`` or None).

An estimator that carries its own classifier network (``FineTunedCNNEncoder``,
``FusionNetClassifier``) implements::

    def __skinfuse_gradcam__(self, X):
        '''Return (module, layer, image_size, classes) explaining the cases X.'''

- ``module`` (``torch.nn.Module``) maps a float32 image batch ``(B, 3, image_size,
  image_size)``, RGB in ``[0, 1]`` (not normalised: the module normalises), to class
  logits ``(B, n_classes)`` whose softmax is ``predict_proba`` (order of ``classes``).
  Row ``b`` of the batch is case ``b`` of ``X``: every other input of that case (the
  metadata of a fusion net) is held fixed inside the module. When ``len(X) == 1``
  the module must accept any ``B`` and use that one case's metadata for every row
  (Score-CAM and occlusion send batches of masked copies of one image).
- ``layer`` (str or None): dotted name, for ``module.get_submodule``, of the
  convolutional block whose feature map is explained (usually the last one).
- ``image_size`` (int): images are read with
  ``skinfuse.images.load_images(column, size=image_size)``. The column is
  ``X[self.image_column]`` when ``X`` is a DataFrame with that column (``"image_path"``
  when the estimator has no ``image_column``), a one-column DataFrame, or ``X`` itself.
- ``classes`` (ndarray): the class labels, ``self.classes_``.

The estimator must be fitted (:func:`grad_cam` calls ``check_is_fitted`` first). The
module may be the estimator's own fitted network (no copy needed): grad_cam puts it
in eval mode and afterwards restores every submodule's mode and every parameter's
``.grad``, and removes its hooks, also when an error is raised. It must not be
changed otherwise. ``__skinfuse_gradcam__`` is called once per batch of cases, so it
should be cheap (no training, no re-encoding).

Examples
--------
>>> from skinfuse.explain import grad_cam, plot_grad_cam           # doctest: +SKIP
>>> heat, images = grad_cam(model, X_test[:8], return_images=True)  # doctest: +SKIP
>>> fig = plot_grad_cam(images, heat, y_true=y_test[:8], y_pred=model.predict(X_test[:8]),
...                     path="gradcam.png")                          # doctest: +SKIP
"""

from .._utils._deprecation import moved_names
from ._cam import grad_cam
from ._importance import modality_importance
from ._methods import GRADIENT_FREE_METHODS, GRADIENT_METHODS, METHODS
from ._plots import plot_grad_cam, plot_importance, plot_shap_summary, plot_shap_waterfall
from ._shap import explain_metadata

__all__ = [
    "GRADIENT_FREE_METHODS",
    "GRADIENT_METHODS",
    "METHODS",
    "explain_metadata",
    "grad_cam",
    "modality_importance",
    "plot_grad_cam",
    "plot_importance",
    "plot_shap_summary",
    "plot_shap_waterfall",
]

__getattr__ = moved_names(
    "skinfuse.explain",
    {
        "plot_confusion_matrix": (
            "skinfuse.metrics",
            "plot_confusion_matrix",
            "a metric plot, beside the others",
        )
    },
)
