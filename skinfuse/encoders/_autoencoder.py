"""ConvAutoencoderEncoder: a convolutional autoencoder trained without labels, used as an encoder."""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from sklearn.utils.validation import check_array, check_is_fitted

from .._utils._sklearn import Interval, StrOptions, _fit_context
from .._utils._torch import (
    autocast,
    net_to_cpu,
    optimizer_class,
    resolve_device,
    seed_from_random_state,
    torch_seed,
)
from ._base import BaseImageEncoder
from ._cache import encode_cached, hash_config

_OPTIMIZERS = ("adam", "adamw", "sgd")


class ConvAutoencoderEncoder(BaseImageEncoder):
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
        the same either way. On HAM10000 (5 lesion-grouped folds, 64 px, 10
        epochs, + metadata + MLP) it raised balanced accuracy from 0.451 to
        0.537 and weighted F1 from 0.745 to 0.771 (``docs/results.md``).
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
    num_workers : int or None, default=None
        DataLoader workers decoding images; ``None`` picks 0 for a single batch,
        else up to 4 leaving one core to the network.
    device : str, default="auto"
        ``"auto"`` uses CUDA, then MPS, then the CPU. Resolved in ``fit``
        (``device_``). A fitted encoder is stored on the CPU and moved to
        ``device_`` for inference when that device exists, else it runs on
        the CPU (so a GPU-fitted encoder unpickles and runs anywhere).
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
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(_OPTIMIZERS)), callable],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "augment": ["boolean"],
        "num_workers": [Interval(Integral, 0, None, closed="left"), None],
        "device": [str],
        "cache": ["boolean"],
        "cache_dir": [str, os.PathLike, None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
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
        num_workers=None,
        device="auto",
        cache=True,
        cache_dir=None,
        random_state=None,
        verbose=0,
    ):
        self.latent_dim = latent_dim
        self.image_size = image_size
        self.channels = channels
        self.features = features
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.weight_decay = weight_decay
        self.augment = augment
        self.num_workers = num_workers
        self.device = device
        self.cache = cache
        self.cache_dir = cache_dir
        self.random_state = random_state
        self.verbose = verbose

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
        return self._encode(items, pixels)

    def _fit(self, X):
        import torch

        channels = _check_architecture(self.channels, self.image_size)
        items = self._validate_images(X, reset=True)
        if len(items) < 2:
            raise ValueError(
                f"ConvAutoencoderEncoder needs at least 2 images to fit (batch norm), got "
                f"n_samples={len(items)}; pass more images."
            )
        self.device_ = resolve_device(self.device)
        self._forget_device_copy()
        pixels = self._decode(items)
        optimizer, optimizer_kwargs = optimizer_class(self.optimizer)
        classes = _torch_classes()
        n = len(items)
        seed = seed_from_random_state(self.random_state)
        with torch_seed(seed, self.device_):
            net = classes["_AutoencoderNet"](
                module=classes["_ConvAutoencoder"],
                module__image_size=int(self.image_size),
                module__channels=channels,
                module__latent_dim=int(self.latent_dim),
                criterion=torch.nn.MSELoss,
                optimizer=optimizer,
                lr=float(self.lr),
                optimizer__weight_decay=float(self.weight_decay),
                **{f"optimizer__{k}": v for k, v in optimizer_kwargs.items()},
                max_epochs=int(self.max_epochs),
                batch_size=int(self.batch_size),
                train_split=None,
                iterator_train__shuffle=True,
                iterator_train__generator=torch.Generator().manual_seed(seed),
                iterator_train__pin_memory=self.device_.startswith("cuda"),
                # a last batch of 1 image breaks batch norm on a 1x1 feature map
                iterator_train__drop_last=n > self.batch_size and n % self.batch_size == 1,
                device=self.device_,
                verbose=int(self.verbose),
            )
            net.initialize()
            # start from the images' mean colour rather than grey: far fewer steps wasted
            total = sum(part.sum(dim=(0, 2, 3), dtype=torch.float64) for part in pixels.split(512))
            mean_rgb = total / (pixels.numel() / 3 * 255.0)
            net.module_.decoder.init_output_bias(mean_rgb)
            if self.device_.startswith("cuda"):
                net.module_.to(memory_format=torch.channels_last)
            net.partial_fit(classes["_PixelDataset"](pixels, augment=bool(self.augment)), None)
        net_to_cpu(net)
        net.module_.eval()

        self.net_ = net
        self.history_ = [float(row["train_loss"]) for row in net.history if "train_loss" in row]
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
    def module_(self):
        """The trained autoencoder on the CPU (``net_.module_``)."""
        check_is_fitted(self, "net_")
        return self.net_.module_

    @property
    def cnn_(self):
        """The encoder's convolutional stack (``module_.encoder.cnn``)."""
        return self.module_.encoder.cnn

    @property
    def embedder_(self):
        """Images -> what ``transform`` returns: ``module_.encoder`` (shared, not copied),
        with the pooled block outputs appended when ``features="multi"``. Grad-CAM on a
        pipeline with this encoder differentiates through it (``cam_layer_`` lies inside)."""
        return self._embedder(self.module_)

    def _embedder(self, module):
        return _torch_classes()["_CAEEmbedder"](module.encoder, multi=self.features == "multi")

    # -- inference -----------------------------------------------------------------------
    def transform(self, X):
        """Embed images: the autoencoder's bottleneck vectors (and pooled maps, see ``features``).

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.

        Returns
        -------
        embeddings : ndarray of shape (n_images, n_features_out_), dtype float32
        """
        check_is_fitted(self, "net_")
        items = self._validate_images(X, reset=False)
        return self._encode(items)

    def inverse_transform(self, X):
        """Decode embeddings into images.

        Parameters
        ----------
        X : array-like of shape (n_samples, latent_dim) or (n_samples, n_features_out_)
            Embeddings, e.g. the output of :meth:`transform`; with
            ``features="multi"`` only the leading ``latent_dim`` columns (the
            bottleneck) are decoded.

        Returns
        -------
        images : ndarray of shape (n_samples, image_size, image_size, 3), dtype float32
            RGB images with values in ``[0, 1]``.
        """
        import torch

        check_is_fitted(self, "net_")
        Z = check_array(X, dtype=np.float32, input_name="X")
        latent = int(self.latent_dim)
        if Z.shape[1] not in (latent, self.n_features_out_):
            raise ValueError(
                f"X has {Z.shape[1]} features but this encoder's bottleneck has "
                f"latent_dim={latent} (transform returns {self.n_features_out_}); pass "
                "embeddings from its transform."
            )
        Z = np.ascontiguousarray(Z[:, :latent])
        device = self._inference_device()
        decoder = self._module_on(self.module_, device).decoder
        size = int(self.image_size)
        out = np.empty((Z.shape[0], size, size, 3), dtype=np.float32)
        was_training = decoder.training
        decoder.eval()
        try:
            with torch.inference_mode():
                for start in range(0, Z.shape[0], int(self.batch_size)):
                    z = torch.tensor(Z[start : start + self.batch_size], device=device)
                    with autocast(device):
                        images = decoder(z)
                    images = images.float().clamp_(0, 1).permute(0, 2, 3, 1)
                    out[start : start + len(z)] = images.cpu().numpy()
        finally:
            decoder.train(was_training)
        return out

    def reconstruct(self, X):
        """Encode then decode images: ``inverse_transform(transform(X))``.

        Parameters
        ----------
        X : column of images
            Paths (1-D, Series, one-column DataFrame) or image arrays.

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
        embeddings = self._encode(items, pixels)
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
        import torch

        from ..images import load_images
        from ._data import default_num_workers, make_loader

        size = int(self.image_size)
        workers = default_num_workers(len(items), self.batch_size, self.num_workers)
        if workers == 0:
            pixels, _ = load_images(items, size=size, verbose=self.verbose)
            return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
        loader = make_loader(
            items, size, batch_size=self.batch_size, num_workers=workers, device="cpu"
        )
        if self.verbose:
            from tqdm.auto import tqdm

            loader = tqdm(loader, desc="decoding images", unit="batch")
        try:
            return torch.cat(list(loader))
        except Exception:
            # a worker's error arrives wrapped in its traceback: redo it here for a clean
            # message naming the unreadable files (raises ValueError)
            load_images(items, size=size)
            raise

    def _encode(self, items, pixels=None):
        """Embeddings of ``items`` through the cache; ``pixels`` spares decoding them again."""
        from ._data import embed

        device = self._inference_device()
        to_encode = None
        if pixels is not None:
            index = {id(item): i for i, item in enumerate(items)}
            hwc = pixels.permute(0, 2, 3, 1)

            def to_encode(todo):
                return [hwc[index[id(item)]].numpy() for item in todo]

        def encode(todo):
            return embed(
                self._embedder(self._module_on(self.module_, device)),
                todo if to_encode is None else to_encode(todo),
                self.image_size,
                batch_size=self.batch_size,
                device=device,
                num_workers=self.num_workers if to_encode is None else 0,
                verbose=self.verbose,
                desc=f"encoding ({type(self).__name__})",
            )

        key = hash_config(self.config_key_, "bf16" if device.startswith("cuda") else "fp32")
        return encode_cached(
            items, encode, config_key=key, cache=self.cache, cache_dir=self.cache_dir
        )


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


# -- torch parts: built on first use, so that importing skinfuse.encoders does not import torch
_TORCH_CLASSES = (
    "_ConvEncoder",
    "_CAEEmbedder",
    "_ConvDecoder",
    "_ConvAutoencoder",
    "_PixelDataset",
    "_AutoencoderNet",
)


def __getattr__(name):  # unpickling finds the classes here
    if name in _TORCH_CLASSES:
        return _torch_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _torch_classes() -> dict:
    """Define the torch/skorch classes once and publish them as module attributes."""
    if "_AutoencoderNet" in globals():
        return {name: globals()[name] for name in _TORCH_CLASSES}

    import torch
    from skorch import NeuralNet
    from skorch.utils import to_device
    from torch import nn
    from torch.utils.data import Dataset

    def as_unit_float(x):
        """uint8 images -> float in [0, 1]; float images are taken to be in [0, 1] already."""
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    class _ConvEncoder(nn.Module):
        """``(B, 3, S, S)`` uint8 or [0, 1] images -> ``(B, latent_dim)``."""

        def __init__(self, image_size, channels, latent_dim):
            super().__init__()
            blocks, c_in = [], 3
            for c_out in channels:
                blocks.append(
                    nn.Sequential(
                        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                        nn.BatchNorm2d(c_out),
                        nn.ReLU(),
                    )
                )
                c_in = c_out
            self.cnn = nn.Sequential(*blocks)
            side = image_size // 2 ** len(channels)
            self.fc = nn.Linear(c_in * side * side, latent_dim)

        def forward(self, x, pooled=False):
            """The bottleneck; with ``pooled``, followed by avg and max of each block."""
            h = as_unit_float(x) * 2.0 - 1.0
            stats = []
            for block in self.cnn:
                h = block(h)
                if pooled:
                    stats += [h.mean(dim=(2, 3)), h.amax(dim=(2, 3))]
            z = self.fc(torch.flatten(h, 1))
            return torch.cat([z, *(t.to(z.dtype) for t in stats)], dim=1) if pooled else z

    class _CAEEmbedder(nn.Module):
        """An encoder's embedding: its bottleneck, then (``multi``) avg and max of each block."""

        def __init__(self, encoder, multi=False):
            super().__init__()
            self.encoder = encoder
            self.multi = multi
            self.training = encoder.training  # a wrapper in train mode would leak it on .train()

        def forward(self, x):
            return self.encoder(x, pooled=self.multi)

    class _ConvDecoder(nn.Module):
        """``(B, latent_dim)`` -> ``(B, 3, S, S)`` images in [0, 1] (mirror of the encoder)."""

        def __init__(self, image_size, channels, latent_dim):
            super().__init__()
            side = image_size // 2 ** len(channels)
            self.shape = (channels[-1], side, side)
            self.fc = nn.Linear(latent_dim, channels[-1] * side * side)
            blocks = []
            for c_in, c_out in zip(channels[::-1], channels[-2::-1]):
                blocks.append(
                    nn.Sequential(
                        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
                        nn.BatchNorm2d(c_out),
                        nn.ReLU(),
                    )
                )
            blocks.append(nn.ConvTranspose2d(channels[0], 3, 4, stride=2, padding=1))
            blocks.append(nn.Sigmoid())
            self.deconv = nn.Sequential(*blocks)

        def forward(self, z):
            h = torch.relu(self.fc(z)).view(-1, *self.shape)
            return self.deconv(h)

        @torch.no_grad()
        def init_output_bias(self, mean_rgb):
            """Start from the mean colour: set the last layer's bias to its logit."""
            p = torch.as_tensor(mean_rgb, dtype=torch.float32).clamp(0.01, 0.99)
            self.deconv[-2].bias.copy_(torch.log(p / (1 - p)))

    class _ConvAutoencoder(nn.Module):
        """Encoder + decoder; ``forward`` returns the reconstruction in [0, 1]."""

        def __init__(self, image_size=64, channels=(32, 64, 128), latent_dim=128):
            super().__init__()
            self.encoder = _ConvEncoder(image_size, channels, latent_dim)
            self.decoder = _ConvDecoder(image_size, channels, latent_dim)

        def forward(self, x):
            return self.decoder(self.encoder(x))

    class _PixelDataset(Dataset):
        """Decoded ``uint8`` images held in memory; random flips/rotations when augmenting.

        Items are ``(image, 0)``: the target is the image itself (see ``_AutoencoderNet``).
        """

        def __init__(self, pixels, augment=False):
            self.pixels = pixels
            self.augment = augment

        def __len__(self):
            return len(self.pixels)

        def __getitem__(self, i):
            img = self.pixels[i]
            if self.augment:
                flip, k = torch.randint(0, 2, ()).item(), torch.randint(0, 4, ()).item()
                if flip:
                    img = img.flip(-1)
                img = torch.rot90(img, k, dims=(-2, -1))
            return img, 0

    class _AutoencoderNet(NeuralNet):
        """A skorch net whose loss compares the reconstruction with the input batch."""

        def infer(self, x, **fit_params):
            with autocast(self.device):
                return super().infer(x, **fit_params).float()

        def get_loss(self, y_pred, y_true, X=None, training=False):
            target = as_unit_float(to_device(X, y_pred.device))
            return super().get_loss(y_pred, target, X=X, training=training)

    classes = {
        "_ConvEncoder": _ConvEncoder,
        "_CAEEmbedder": _CAEEmbedder,
        "_ConvDecoder": _ConvDecoder,
        "_ConvAutoencoder": _ConvAutoencoder,
        "_PixelDataset": _PixelDataset,
        "_AutoencoderNet": _AutoencoderNet,
    }
    for name, cls in classes.items():
        cls.__module__, cls.__qualname__ = __name__, name
    globals().update(classes)
    return classes
