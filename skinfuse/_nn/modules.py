"""The networks skinfuse trains: an image classifier with an optional metadata branch, and a
convolutional autoencoder.

Their constructors build everything (backbone included) from plain arguments, so skorch
can build them inside the seeded block of ``fit``.
"""

from __future__ import annotations

import torch
from torch import nn

from .backbones import build_embedder, embedding_width, frozen_names


class ClassifierNetwork(nn.Module):
    """Images -> ``embedder`` (normalise, backbone, pool) -> ``head`` -> class logits.

    With ``n_metadata > 0`` (the fusion network), a ``metadata`` branch (a small MLP
    over the preprocessed metadata) is concatenated with the image embedding before
    the head: late fusion. A named backbone with ``weights=None`` gets a fresh random
    initialisation from the caller's (seeded) random stream.

    Parameters
    ----------
    backbone : str or nn.Module
    weights : "DEFAULT", None or str
    pooling : {"avg", "max", "avgmax"}
    n_classes : int
    image_size : int
        Used to measure the embedding width of a custom backbone.
    freeze : None, "backbone" or int
        Backbone stages left untrained (see :func:`.backbones.frozen_names`); they also
        keep their batch-norm statistics.
    n_metadata : int
        Width of the metadata input; 0: no metadata branch.
    metadata_hidden : int
        Width of the metadata branch.
    dropout : float
    metadata_dropout : dict or None
        Training only (:class:`MetadataDropout`): ``{"p": p, "columns": [[feature indices of
        input column 0], ...], "missing": [the encoding of a missing value, per feature]}``;
        plain lists, so model files record it. Nothing changes in evaluation mode.
        Dropout on the vector the head sees.
    """

    def __init__(
        self,
        backbone="efficientnet_lite0",
        weights="DEFAULT",
        pooling="avg",
        n_classes=2,
        image_size=224,
        freeze=None,
        n_metadata=0,
        metadata_hidden=64,
        dropout=0.0,
        metadata_dropout=None,
    ):
        super().__init__()
        shared = not (isinstance(backbone, str) and weights is None)
        embedder, bb, _ = build_embedder(backbone, weights, pooling, shared=shared)
        n_features = embedding_width(embedder, bb, pooling, image_size)
        self.embedder = embedder
        self.metadata = None
        n_head = n_features
        if n_metadata:
            self.metadata = nn.Sequential(
                nn.Linear(int(n_metadata), int(metadata_hidden)),
                nn.ReLU(),
                nn.Linear(int(metadata_hidden), int(metadata_hidden)),
                nn.ReLU(),
            )
            n_head += int(metadata_hidden)
        self.metadata_dropout = None
        if n_metadata and metadata_dropout:
            self.metadata_dropout = MetadataDropout(**metadata_dropout)
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(n_head, int(n_classes))
        self.n_features = n_features
        self.cam_layer = f"embedder.features.{bb.cam_layer}" if bb.cam_layer else None
        self.freeze(freeze)

    def freeze(self, freeze):
        """Leave the backbone stages ``freeze`` names untrained (see :func:`frozen_names`)."""
        self.frozen = frozen_names(self.embedder.features, freeze, "embedder.features.")
        for name in self.frozen:
            for param in self.get_submodule(name).parameters():
                param.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        for name in self.frozen:  # frozen stages keep their batch-norm statistics
            self.get_submodule(name).eval()
        return self

    def forward(self, x, metadata=None):
        return self.classify(self.embedder(x), metadata)

    def classify(self, features, metadata=None):
        """Image features (and metadata rows) -> class logits: the fusion and the head."""
        if self.metadata is not None:
            if metadata is None:
                raise ValueError("this network fuses metadata: call it with metadata=")
            metadata = metadata.float()
            drop = getattr(self, "metadata_dropout", None)  # None in pickles made before it existed
            if drop is not None:
                metadata = drop(metadata)
            features = torch.cat([features, self.metadata(metadata)], dim=1)
        return self.head(self.dropout(features))


class MetadataDropout(nn.Module):
    """In training, each input column of each metadata row set missing with probability ``p``.

    The rows are preprocessed metadata; input column ``j`` is encoded in the features
    ``columns[j]``, and a missing value of it as ``missing`` there (what the fitted
    preprocessor gives for a missing value: the imputed, scaled value and its indicator, the
    "missing" category). A network trained so has seen every pattern of missing columns,
    as it will meet them where a clinic records no age or no site; with ``p_all``, all the
    columns of a row set missing at once with that probability besides (the image alone,
    as where a clinic records no metadata). The identity in
    evaluation mode. Its tensors are not part of the state dict (model files rebuild it
    from its arguments).
    """

    def __init__(self, p, columns, missing, p_all=0.0):
        super().__init__()
        self.p, self.p_all = float(p), float(p_all)
        missing = torch.as_tensor(missing, dtype=torch.float32)
        member = torch.zeros(len(columns), len(missing))
        for j, features in enumerate(columns):
            member[j, list(features)] = 1.0
        self.register_buffer("member", member, persistent=False)
        self.register_buffer("missing", missing, persistent=False)

    def forward(self, rows):
        p_all = getattr(self, "p_all", 0.0)  # absent from pickles made before it existed
        if not self.training or not (self.p or p_all) or not len(self.member):
            return rows
        drop = torch.rand(len(rows), len(self.member), device=rows.device) < self.p
        if p_all:  # the whole row: the image alone (modality dropout)
            drop |= torch.rand(len(rows), 1, device=rows.device) < p_all
        hit = drop.to(rows.dtype) @ self.member.to(rows.dtype) > 0
        return torch.where(hit, self.missing.to(rows.dtype), rows)

    def extra_repr(self):
        return f"p={self.p}, p_all={getattr(self, 'p_all', 0.0)}, columns={len(self.member)}"


class FixedMetadata(nn.Module):
    """A :class:`ClassifierNetwork` on images alone, each case's metadata held fixed.

    Row ``b`` of an image batch gets metadata row ``b``; a single row serves a batch of
    any size (masked copies of one image, for Score-CAM and occlusion).
    """

    def __init__(self, net, metadata):
        super().__init__()
        self.net = net
        self.register_buffer("rows", torch.as_tensor(metadata))

    def forward(self, x):
        rows = self.rows
        if self.net.metadata is None:
            return self.net(x)
        if len(rows) == 1 and len(x) != 1:
            rows = rows.expand(len(x), -1)
        return self.net(x, metadata=rows.to(x.device))


# -- the convolutional autoencoder ------------------------------------------------------------
def as_unit_float(x):
    """uint8 images -> float in [0, 1]; float images are taken to be in [0, 1] already."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


class ConvEncoder(nn.Module):
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


class AutoencoderEmbedder(nn.Module):
    """An encoder's embedding: its bottleneck, then (``multi``) avg and max of each block."""

    def __init__(self, encoder, multi=False):
        super().__init__()
        self.encoder = encoder
        self.multi = multi
        self.training = encoder.training  # a wrapper in train mode would leak it on .train()

    def forward(self, x):
        return self.encoder(x, pooled=self.multi)


class ConvDecoder(nn.Module):
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


class ConvAutoencoder(nn.Module):
    """Encoder + decoder; ``forward`` returns the reconstruction in [0, 1]."""

    def __init__(self, image_size=64, channels=(32, 64, 128), latent_dim=128):
        super().__init__()
        self.encoder = ConvEncoder(image_size, channels, latent_dim)
        self.decoder = ConvDecoder(image_size, channels, latent_dim)

    def forward(self, x):
        return self.decoder(self.encoder(x))
