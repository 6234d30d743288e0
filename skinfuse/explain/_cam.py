"""Where in the image did the model look: Grad-CAM (pytorch-grad-cam), Score-CAM, occlusion."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .._utils._sklearn import HasMethods, Interval, StrOptions, validate_params
from ._methods import GRADIENT_METHODS, METHODS


@validate_params(
    {
        "model": "no_validation",  # what it can explain is checked by _make_source
        "X": ["array-like"],
        "target": "no_validation",  # labels, checked against the model's classes
        "layer": [str, HasMethods(["named_modules", "forward"]), None],  # a torch module
        "method": [StrOptions(set(METHODS))],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "occlusion_size": [Interval(Integral, 1, None, closed="left"), None],
        "return_images": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def grad_cam(
    model,
    X,
    *,
    target=None,
    layer=None,
    method="auto",
    batch_size=32,
    occlusion_size=None,
    return_images=False,
):
    """Saliency maps: where in each image the model found evidence for a class.

    Parameters
    ----------
    model : fitted estimator
        One of

        - a fitted fusion or image-only pipeline (:func:`~skinfuse.pipeline.make_fusion_pipeline`)
          whose image encoder has a CNN (``FrozenCNNEncoder``, ``FineTunedCNNEncoder``).
          The explained network is ``image -> CNN -> embedding -> [the case's other
          features, held fixed] -> later steps -> class scores``. When the later steps
          are differentiable (``StandardScaler``, ``MinMaxScaler``, ``MaxAbsScaler``,
          feature selectors such as ``SelectKBest``, ``PCA``, samplers, which do nothing
          at predict time, and a ``LogisticRegression``, other linear classifier or
          ``MLPClassifier`` head) they are rebuilt in torch, checked to reproduce the
          pipeline's scores, and gradients flow through them. Otherwise (a random
          forest head...) the later steps run as they are, without gradients;
        - an estimator with its own network implementing ``__skinfuse_gradcam__(X)``
          (``FineTunedCNNEncoder``, ``FusionNetClassifier``; see :mod:`skinfuse.explain`).
    X : DataFrame or column of images
        The cases to explain: what ``model.predict`` takes (for pipelines, a DataFrame
        with the image column and the metadata).
    target : label, array-like of labels or None, default=None
        Class explained: ``None`` is each case's predicted class; one label explains
        that class for every case; an array gives one label per case (e.g. ``y_true``).
    layer : str, torch.nn.Module or None, default=None
        The convolutional block whose feature map is weighted. ``None`` is the
        encoder's ``cam_layer_`` (the last block). A string is a dotted name inside
        the encoder's ``embedder_`` (pipelines) or inside the protocol's module.
    method : str, default="auto"
        ``"gradcam"``, ``"gradcam++"``, ``"hirescam"``, ``"xgradcam"``, ``"layercam"``
        (gradient methods of pytorch-grad-cam), ``"scorecam"`` (pytorch-grad-cam's
        Score-CAM: each channel of the layer masks the image, weighted by the class
        score of the masked image) or ``"occlusion"`` (a patch of the image's mean
        colour slides over it; the map is the drop in class probability). ``"auto"``
        uses ``"gradcam"`` where gradients flow and ``"scorecam"`` otherwise (or
        ``"occlusion"`` when the model has no convolutional layer).
    batch_size : int, default=32
        Images per forward pass (cases for gradient methods, masked copies of one
        case for the gradient-free ones).
    occlusion_size : int or None, default=None
        Side of the occluding patch in pixels (``None``: ``image_size // 8``, at least
        2); the stride is half of it.
    return_images : bool, default=False
        Also return the images the maps belong to.

    Returns
    -------
    heatmaps : ndarray of shape (n_cases, image_size, image_size), dtype float32
        One map per case in ``[0, 1]`` (each scaled to its own maximum; all zeros
        where nothing supports the class). Maps are at the model's input
        resolution: pixel ``(i, j)`` belongs to the image as the model saw it,
        ``load_images(column, size=image_size)``; resize a map to overlay it on the
        original image (:func:`plot_grad_cam` does).
    images : ndarray of shape (n_cases, image_size, image_size, 3), dtype uint8
        Only when ``return_images=True``.

    Raises
    ------
    ValueError
        The model has no CNN, ``target`` is not a class of the model, ``layer``
        does not exist, or a gradient method was asked for a model whose later
        steps are not differentiable. A parameter of the wrong type or value raises
        scikit-learn's ``InvalidParameterError`` (a ``ValueError`` and ``TypeError``)
        that names it.

    Notes
    -----
    The model is left as it was: every module's train/eval mode and its
    parameters' ``.grad`` are restored and the hooks are removed, also on error.

    Examples
    --------
    >>> from skinfuse.explain import grad_cam                        # doctest: +SKIP
    >>> heat, images = grad_cam(model, X_test[:8], return_images=True)  # doctest: +SKIP
    >>> plot_grad_cam(images, heat, y_true=y_test[:8], y_pred=model.predict(X_test[:8]))
    ... # doctest: +SKIP
    """
    from ._sources import image_batch
    from ._torch_cam import library_cam, occlusion, preserved_state, resolve_layer

    source = _make_source(model, X)

    n = source.n
    targets = target_indices(target, source.classes, n)
    method = _resolve_method(method, source, layer)
    size = source.image_size
    occlusion_size = _check_occlusion_size(occlusion_size, size)
    heat = np.zeros((n, size, size), dtype=np.float32)
    chunk = batch_size if method in GRADIENT_METHODS else 1
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        module, cam_layer, _, _ = source.module(rows)
        x = image_batch(source.images[rows])
        tgt = None if targets is None else targets[rows]
        with preserved_state(module):
            if method == "occlusion":
                heat[rows] = occlusion(module, x, tgt, occlusion_size, batch_size)
            else:
                target_layer = resolve_layer(layer, source.layer_root(module), cam_layer)
                heat[rows] = library_cam(method, module, target_layer, x, tgt, batch_size)
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    if return_images:
        return heat, source.images
    return heat


# -- what to explain ----------------------------------------------------------------------


def _make_source(model, X):
    from sklearn.utils.validation import check_is_fitted

    from ..calibration import TemperatureCalibratedClassifier
    from ..conformal import PredictionSets
    from ._sources import PipelineSource, ProtocolSource

    # a calibrated model or its prediction sets: the fitted network inside is explained (a
    # temperature keeps the order of the classes, and the maps' class is the predicted one)
    while isinstance(model, (TemperatureCalibratedClassifier, PredictionSets)):
        check_is_fitted(model, "estimator_")
        model = model.estimator_
    if hasattr(model, "__skinfuse_gradcam__"):
        check_is_fitted(model)
        return ProtocolSource(model, X)
    if hasattr(model, "steps"):
        check_is_fitted(model)
        if not hasattr(model, "classes_"):
            raise ValueError(
                f"grad_cam explains classifiers; the last step of the pipeline "
                f"({type(model.steps[-1][1]).__name__}) has no classes_"
            )
        return PipelineSource(model, X)
    attrs = ("cnn_", "embedder_", "module_", "net_")
    if any(hasattr(type(model), a) or a in getattr(model, "__dict__", {}) for a in attrs):
        raise ValueError(
            f"grad_cam cannot explain a {type(model).__name__} on its own: it does not "
            "implement __skinfuse_gradcam__ (see the protocol in skinfuse.explain's docstring); "
            "inside a fitted pipeline its CNN is explained through the pipeline"
        )
    raise ValueError(
        f"grad_cam cannot explain a {type(model).__name__}: it has no CNN. Pass a fitted "
        "pipeline with a CNN image encoder (make_fusion_pipeline(FrozenCNNEncoder(...))) or "
        "an estimator with its own network that implements __skinfuse_gradcam__ (see "
        "skinfuse.explain)"
    )


def target_indices(target, classes, n):
    """Class index per case for ``target`` (None, one label, or one label per case)."""
    if target is None:
        return None
    classes = np.asarray(classes)
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    labels = [target] * n if np.ndim(target) == 0 else list(np.asarray(target).tolist())
    if len(labels) != n:
        raise ValueError(f"target has {len(labels)} labels for {n} cases; pass one per case")
    out = np.empty(n, dtype=np.intp)
    for i, label in enumerate(labels):
        label = label.item() if isinstance(label, np.generic) else label
        try:
            out[i] = lookup[label]
        except (KeyError, TypeError):
            raise ValueError(
                f"target {label!r} is not a class of the model; its classes are {classes.tolist()}"
            ) from None
    return out


def _resolve_method(method, source, layer):
    if method == "auto":
        if layer is None and source.cam_layer is None:
            return "occlusion"  # no convolutional layer known
        return "gradcam" if source.differentiable else "scorecam"
    if method in GRADIENT_METHODS and not source.differentiable:
        raise ValueError(
            f"method={method!r} needs gradients through the whole model, but {source.why_not}; "
            "use method='scorecam' or 'occlusion' (or 'auto', which picks one)"
        )
    return method


def _check_occlusion_size(size, image_size):
    if size is None:
        return max(2, image_size // 8)
    if size > image_size:
        raise ValueError(
            f"occlusion_size must be an int in [1, {image_size}] (the side of the images the "
            f"model sees); got {size!r}"
        )
    return int(size)
