"""What the three image encoders share: input validation, output names, tags, cached embedding."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .._cache import check_cache_dir, chunk_images, encode_cached
from .._nn.device import TorchEstimatorMixin
from .._utils._images import validate_images


class BaseImageEncoder(
    TorchEstimatorMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Base class of skinfuse's image encoders (not for direct use).

    Input: a column of images: a 1-D array/list/Series of paths, a one-column
    DataFrame, or a 4-D ``(n, H, W, C)`` array of images. A 2-D numeric array (a
    feature matrix) is refused. Output: ``float32`` embeddings of shape
    ``(n, n_features_out)``.

    Subclasses set ``device_``, ``config_key_`` and ``n_features_out_`` in ``fit`` and
    define ``_embedding_module()``: the fitted CPU module mapping uint8 image batches to
    what ``transform`` returns.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    # -- input ---------------------------------------------------------------------------
    def _validate_images(self, X, *, reset: bool) -> list:
        """Check feature names/counts like ``validate_data`` and return the list of images.

        With ``reset`` (in ``fit``), also check that ``cache_dir`` is usable, before any
        training or encoding.
        """
        items = validate_images(self, X, reset=reset)
        if reset:
            check_cache_dir(self.cache_dir, cache=self.cache)
        return items

    # -- output --------------------------------------------------------------------------
    @property
    def _n_features_out(self):
        return self.n_features_out_

    def get_feature_names_out(self, input_features=None):
        """Output names ``<classname><i>``, e.g. ``frozencnnencoder0``.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Ignored except for validation against ``feature_names_in_``.
        """
        check_is_fitted(self, "n_features_out_")
        return super().get_feature_names_out(input_features)

    # -- embedding -----------------------------------------------------------------------
    def transform(self, X):
        """Embed images.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out), dtype float32
        """
        check_is_fitted(self, "config_key_")
        return self._embed(self._validate_images(X, reset=False))

    def _embed(self, items, *, pixels=None):
        """Embeddings of ``items`` through the cache (``cache``, ``cache_dir``).

        With ``tta=n`` (encoders that have it), the mean of the embeddings of the first
        ``n`` views (:data:`skinfuse._nn.views.VIEWS`), each cached under its own key.
        ``pixels`` (the items decoded already, a uint8 tensor in their order) spares
        decoding them again.
        """
        views = self._views()
        out = self._embed_view(items, views[0], pixels)
        for view in views[1:]:
            out += self._embed_view(items, view, pixels)
        if len(views) > 1:
            out /= np.float32(len(views))
        return out

    def _embed_to_shards(self, items, writer):
        """Bulk embedding (:func:`skinfuse.encoders.embed_images`): each view's embeddings of
        ``items`` go to ``writer`` (a :class:`skinfuse._cache.chunks.ShardWriter`), one
        shard per view under its cache key, and nothing is returned or kept in memory."""
        for view in self._views():
            writer.write(items, *self._view_encoding(items, view))

    def _views(self):
        """The views embedded (``tta``, for encoders that have it), in order."""
        from .._nn.views import check_views, views_for

        return views_for(check_views(getattr(self, "tta", 1)))

    def _embed_view(self, items, view, pixels=None):
        """Cached embeddings of one view of ``items``."""
        encode, key = self._view_encoding(items, view, pixels)
        return encode_cached(
            items, encode, config_key=key, cache=self.cache, cache_dir=self.cache_dir,
            chunk_size=chunk_images(self.batch_size),
        )  # fmt: skip

    def _view_encoding(self, items, view, pixels=None):
        """``(encode, key)``: the function embedding one view of some of ``items``, and the
        cache key of that view's embeddings."""
        device = self._inference_device()
        index = None if pixels is None else {id(item): i for i, item in enumerate(items)}

        # onnxruntime on a CPU in fp32 for many images (skinfuse.set_config): its own cache
        engine = self._engine(device, len(items) * len(self._views()))

        def encode(todo):
            images = todo
            if index is not None:
                images = pixels[np.array([index[id(item)] for item in todo])]
            return self._encode(images, view, device, engine=engine)

        key = f"{self.config_key_}-{self._precision(device)}"
        if engine != "torch":
            key = f"{key}-{engine}"
        if self._decoding(device) == "device":  # other pixels than PIL's: other embeddings
            key = f"{key}-devdecode"
        if view != "identity":
            key = f"{key}-{view}"
        return encode, key

    def _size(self) -> int:
        """The side of the square images the network sees."""
        return int(self.image_size)

    def _decoding(self, device) -> str:
        """How image files are decoded on ``device``: ``"pil"`` (in the loader's workers) or
        ``"device"`` (JPEGs in batches on the device, :mod:`skinfuse._nn.decode`)."""
        return "pil"

    def _engine(self, device, n_images) -> str:
        """``"onnxruntime"`` or ``"torch"``: what computes ``n_images`` image views'
        embeddings on ``device`` (:func:`skinfuse._nn.onnx_engine.resolve_engine`)."""
        from .._nn.onnx_engine import resolve_engine

        return resolve_engine(device, self._precision(device), n_images)

    def _encode(self, images, view, device, *, engine="torch"):
        """Embeddings of ``images`` (a list of items or a uint8 tensor) seen in ``view``,
        computed by ``engine``."""
        from .._nn.inference import embed
        from .._nn.views import ViewOf

        module = self._module_on(self._embedding_module(), device, "embedder")
        if engine == "onnxruntime":
            from .._nn.onnx_engine import OnnxModule

            module = OnnxModule(module, self.config_key_)
        return embed(
            ViewOf(module, view),
            images,
            self._size(),
            batch_size=int(self.batch_size),
            device=device,
            num_workers=self.num_workers,
            decode=self._decoding(device),
            verbose=self.verbose,
            desc=f"encoding ({type(self).__name__}, {view})",
            precision=self._precision(device),
        )
