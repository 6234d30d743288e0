"""ConvAutoencoderEncoder: a convolutional autoencoder trained without labels, used as an encoder."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted

from .._nn import params
from .._nn.device import TrainedNetworkMixin, resolve_device, seed_from_random_state
from .._nn.estimator import fill_doc
from .._utils._sklearn import Interval, StrOptions, _fit_context
from .._utils._validation import store_params
from ._base import BaseImageEncoder


@fill_doc
class ConvAutoencoderEncoder(TrainedNetworkMixin, BaseImageEncoder):
    """Learn an image embedding without labels: the bottleneck of a convolutional autoencoder.

    ``fit`` trains an autoencoder to reconstruct its input images (``y`` is
    ignored) with mean squared error; ``transform`` returns the bottleneck
    vectors as ``float32``. The images are decoded once per fit into one
    ``uint8`` array (``n x 3 x image_size x image_size`` bytes) and training
    runs from memory. Embeddings are cached by image and trained weights, so
    clones, cross-validation folds and permutation repeats never encode an image
    twice.

    The encoder is ``len(channels)`` blocks of stride-2 3x3 convolution,
    batch norm and ReLU, then a linear layer to ``latent_dim``; the decoder
    mirrors it with transposed convolutions and ends in a sigmoid, so
    reconstructions lie in ``[0, 1]``. Training uses skorch (``net_``).

    Parameters
    ----------
    latent_dim : int, default=128
        Width of the bottleneck: the number of output features.
    image_size : int, default=64
        Images are resized to ``image_size x image_size``. Must be a multiple
        of ``2 ** len(channels)`` (each block halves the image).
    channels : tuple of int, default=(32, 64, 128)
        Output channels of the encoder's convolutional blocks; the decoder
        uses them in reverse order.
    features : {"latent", "multi"}, default="latent"
        What ``transform`` returns. ``"latent"``: the bottleneck vector
        (``latent_dim`` features). ``"multi"``: the bottleneck followed by
        the average and the maximum over space of every encoder block's
        feature map (``latent_dim + 2 * sum(channels)`` features, e.g. 576
        with the defaults): the colour and texture statistics that the
        bottleneck, trained only to reconstruct, compresses away. Training is
        the same either way. Measured on HAM10000 in ``docs/results.md``.
    max_epochs : int, default=20
        Passes over the training images. ``0`` keeps the random initial
        network (a baseline).
    lr : float, default=1e-3
        Learning rate.
    batch_size : int, default=64
        Images per training step and per forward pass when encoding.
    optimizer : {"adam", "adamw", "sgd"} or torch optimizer class, default="adam"
        ``"sgd"`` uses momentum 0.9. A class is called as
        ``optimizer(params, lr=lr, weight_decay=weight_decay)``.
    weight_decay : float, default=0.0
        L2 penalty (decoupled for ``"adamw"``).
    augment : bool, default=False
        Train on random flips and 90-degree rotations of the images (lesions
        have no canonical orientation). The reconstruction target is the
        augmented image itself.
    tta : int, default=1
        Test-time augmentation: the mean embedding of the first ``tta`` fixed
        views of each image (1: the image; 2: and its mirror image; 4: the flips
        and the half turn; 8: the eight symmetries of the square), each view
        encoded once and cached.
    num_workers : int or None, default=None
        DataLoader workers decoding images; ``None`` picks 0 for a single batch,
        else up to 4 leaving one core to the network.
    device : str, default="auto"
        ``"auto"`` uses CUDA, then MPS, then the CPU. Resolved in ``fit``
        (``device_``). A fitted encoder is stored on the CPU and moved to
        ``device_`` for inference when that device exists, else it runs on
        the CPU (so a GPU-fitted encoder unpickles and runs anywhere).
    precision : {"auto", "fp32", "bf16"}, default="auto"
        The numeric precision of the network: ``"auto"`` runs bf16 autocast on CUDA and on
        CPUs with native bf16 matrix units (Intel AMX or AVX512-BF16, Arm BF16; detected from
        the CPU's flags), fp32 elsewhere (so results on other CPUs do not change);
        ``"fp32"`` and ``"bf16"`` force it. Embeddings are cached per precision.
    cache : bool, default=True
        Keep embeddings in memory, keyed by image and trained weights.
    cache_dir : str or None, default=None
        Also keep them on disk there, for later processes.
    random_state : int, RandomState instance or None, default=None
        Seeds weight initialisation, shuffling and augmentation (in a scoped
        block: the global torch random state is left alone). The same int
        gives the same embeddings on the same machine.
    verbose : int, default=0
        When > 0, print skorch's table of epochs and show progress bars.
    {callback_parameters}

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained skorch net, moved to the CPU after training.
    module_ : torch.nn.Module
        The trained autoencoder (``net_.module_``, on the CPU), with
        ``.encoder`` (images -> ``(n, latent_dim)``) and ``.decoder``
        (``(n, latent_dim)`` -> images in ``[0, 1]``).
    cnn_ : torch.nn.Module
        The encoder's convolutional stack (``module_.encoder.cnn``).
    cam_layer_ : str
        Dotted name, inside ``module_``, of the encoder's last convolutional
        block (conv + batch norm + ReLU), for Grad-CAM.
    history_ : list of float
        Mean training loss (pixel MSE, images in ``[0, 1]``) of each epoch.
    n_features_out_ : int
        Embedding width (``latent_dim``).
    device_ : str
        The resolved training device.
    config_key_ : str
        Hash of the trained weights and of every setting that changes the
        embeddings. The embedding cache keys on it plus the numeric precision
        of the device that encodes (bf16 on CUDA, fp32 elsewhere).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame.

    See Also
    --------
    FrozenCNNEncoder : Embeddings from a pretrained CNN, nothing learned.

    Examples
    --------
    >>> import numpy as np
    >>> from skinfuse.encoders import ConvAutoencoderEncoder
    >>> images = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
    >>> cae = ConvAutoencoderEncoder(4, image_size=16, channels=(8, 16), max_epochs=2,
    ...                              random_state=0)
    >>> cae.fit(images).transform(images).shape
    (8, 4)
    >>> cae.reconstruct(images).shape
    (8, 16, 16, 3)
    """

    _parameter_constraints: dict = {
        "latent_dim": [Interval(Integral, 1, None, closed="left")],
        "image_size": [Interval(Integral, 2, None, closed="left")],
        "channels": ["array-like"],
        "features": [StrOptions({"latent", "multi"})],
        **params.TRAINING,
        "augment": ["boolean"],
        **params.TTA,
        **params.RUNTIME,
        **params.TRAINING_HOOKS,
        **params.CACHE,
    }

    def __init__(
        self,
        latent_dim=128,
        *,
        image_size=64,
        channels=(32, 64, 128),
        features="latent",
        max_epochs=20,
        lr=1e-3,
        batch_size=64,
        optimizer="adam",
        weight_decay=0.0,
        augment=False,
        tta=1,
        num_workers=None,
        device="auto",
        precision="auto",
        cache=True,
        cache_dir=None,
        random_state=None,
        verbose=0,
        callbacks=None,
        checkpoint_dir=None,
    ):
        store_params(self, locals())

    # -- fitting -------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the autoencoder to reconstruct the images.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays; at
            least 2 images.
        y : ignored
            Not used: training is unsupervised.

        Returns
        -------
        self : ConvAutoencoderEncoder
            The fitted encoder.
        """
        self._fit(X)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None):
        """Fit, then embed the training images without decoding them a second time.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.
        y : ignored
            Not used: training is unsupervised.

        Returns
        -------
        embeddings : ndarray of shape (n_images, latent_dim), dtype float32
        """
        items, pixels = self._fit(X)
        return self._embed(items, pixels=pixels)

    def _fit(self, X):
        from .._nn.data import ImageDataset, RandomFlipRot90, mean_colour
        from .._nn.hashing import hash_config
        from .._nn.modules import ConvAutoencoder
        from .._nn.spec import TrainingConfig
        from .._nn.training import finish_training, train_network

        channels = _check_architecture(self.channels, self.image_size)
        items = self._validate_images(X, reset=True)
        if len(items) < 2:
            raise ValueError(
                f"ConvAutoencoderEncoder needs at least 2 images to fit (batch norm), got "
                f"n_samples={len(items)}; pass more images."
            )
        self.device_ = resolve_device(self.device)
        self._forget_device_copies()
        pixels = self._decode(items)
        # start from the images' mean colour rather than grey: far fewer steps wasted
        mean_rgb = mean_colour(pixels)
        train_data = ImageDataset(
            pixels, int(self.image_size), y=np.zeros(len(items), dtype=np.int64),
            transform=RandomFlipRot90() if self.augment else None,
        )  # fmt: skip
        net = train_network(
            ConvAutoencoder,
            dict(
                image_size=int(self.image_size), channels=channels, latent_dim=int(self.latent_dim)
            ),
            train_data,
            task="reconstruction",
            # decoded already, in memory: no loader workers; a constant learning rate
            config=TrainingConfig.from_estimator(
                self, device=self.device_, num_workers=0, lr_schedule=None
            ),
            seed=seed_from_random_state(self.random_state),
            on_initialized=lambda net: net.module_.decoder.init_output_bias(mean_rgb),
        )
        history = finish_training(net)
        self.net_ = net
        self.history_ = [float(row["train_loss"]) for row in history if "train_loss" in row]
        self.n_features_out_ = int(self.latent_dim)
        if self.features == "multi":
            self.n_features_out_ += 2 * sum(channels)
        self.cam_layer_ = f"encoder.cnn.{len(channels) - 1}"
        self.config_key_ = hash_config(
            "ConvAutoencoderEncoder",
            int(self.image_size),
            channels,
            int(self.latent_dim),
            self.features,
            state_dict=net.module_.state_dict(),
        )
        return items, pixels

    # -- fitted parts --------------------------------------------------------------------
    @property
    def cnn_(self):
        """The encoder's convolutional stack (``module_.encoder.cnn``)."""
        return self.module_.encoder.cnn

    @property
    def embedder_(self):
        """Images -> what ``transform`` returns: ``module_.encoder`` (shared, not copied),
        with the pooled block outputs appended when ``features="multi"``. Grad-CAM on a
        pipeline with this encoder differentiates through it (``cam_layer_`` lies inside)."""
        return self._embedding_module()

    def _embedding_module(self):
        from .._nn.modules import AutoencoderEmbedder

        return AutoencoderEmbedder(self.module_.encoder, multi=self.features == "multi")

    # -- inference -----------------------------------------------------------------------
    def inverse_transform(self, X):
        """Decode embeddings into images.

        Parameters
        ----------
        X : array-like of shape (n_samples, latent_dim) or (n_samples, n_features_out)
            Embeddings, e.g. the output of :meth:`transform`; with
            ``features="multi"`` only the leading ``latent_dim`` columns (the
            bottleneck) are decoded.

        Returns
        -------
        images : ndarray of shape (n_samples, image_size, image_size, 3), dtype float32
            RGB images with values in ``[0, 1]``.
        """
        from .._nn.inference import run_batches

        check_is_fitted(self, "net_")
        Z = check_array(X, dtype=np.float32, input_name="X")
        latent = int(self.latent_dim)
        if Z.shape[1] not in (latent, self.n_features_out_):
            raise ValueError(
                f"X has {Z.shape[1]} features but this encoder's bottleneck has "
                f"latent_dim={latent} (transform returns {self.n_features_out_}); pass "
                "embeddings from its transform."
            )
        Z = np.array(Z[:, :latent], order="C")  # a writable copy, for torch
        device = self._inference_device()
        decoder = self._module_on(self.module_.decoder, device, "decoder")
        step = int(self.batch_size)
        batches = [Z[start : start + step] for start in range(0, len(Z), step)]
        images = run_batches(decoder, batches, device, chunk=step, channels_last=False)
        return np.clip(images, 0, 1).transpose(0, 2, 3, 1)

    def reconstruct(self, X):
        """Encode then decode images: ``inverse_transform(transform(X))``.

        Parameters
        ----------
        X : column of images
            As :meth:`transform` takes.

        Returns
        -------
        images : ndarray of shape (n_images, image_size, image_size, 3), dtype float32
            Reconstructions with values in ``[0, 1]``.
        """
        return self.inverse_transform(self.transform(X))

    def score(self, X, y=None):
        """Negative mean squared reconstruction error (higher is better).

        Pixels are in ``[0, 1]``, images resized to ``image_size``; the mean
        runs over images, pixels and channels. Used by ``GridSearchCV`` when no
        ``scoring`` is given.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.
        y : ignored
            Not used.

        Returns
        -------
        score : float
            ``-mean((reconstruct(X) - X) ** 2)``, at most 0.
        """
        check_is_fitted(self, "net_")
        items = self._validate_images(X, reset=False)
        pixels = self._decode(items)
        embeddings = self._embed(items, pixels=pixels)
        sse = 0.0
        step = int(self.batch_size)
        for start in range(0, len(items), step):
            recon = self.inverse_transform(embeddings[start : start + step])
            target = pixels[start : start + step].permute(0, 2, 3, 1).numpy()
            sse += float(np.sum((recon - target.astype(np.float32) / 255.0) ** 2, dtype=np.float64))
        return -sse / (pixels.numel())

    # -- helpers -------------------------------------------------------------------------
    def _decode(self, items):
        """All images as one ``uint8`` tensor ``(n, 3, image_size, image_size)``."""
        from .._nn.data import decode_images

        return decode_images(
            items, int(self.image_size), batch_size=int(self.batch_size),
            num_workers=self.num_workers, verbose=self.verbose,
        )  # fmt: skip


# -- validation ----------------------------------------------------------------------------
def _check_architecture(channels, image_size):
    """Return ``channels`` as a tuple of ints; check ``image_size`` fits the strides."""
    try:
        values = tuple(channels)
    except TypeError:
        values = ()
    if not values or not all(
        isinstance(c, Integral) and not isinstance(c, bool) and c >= 1 for c in values
    ):
        raise ValueError(
            "channels must be a non-empty sequence of positive ints, one per convolutional "
            f"block, e.g. (32, 64, 128); got channels={channels!r}."
        )
    values = tuple(int(c) for c in values)
    factor = 2 ** len(values)
    if image_size % factor:
        lower, upper = (image_size // factor) * factor, (image_size // factor + 1) * factor
        sizes = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(
            f"image_size={image_size} is not a multiple of 2**len(channels)={factor}: each of "
            f"the {len(values)} blocks of channels={values} halves the image. Pass "
            f"image_size={sizes}, or fewer channels."
        )
    return values
