"""Image encoders: scikit-learn transformers from a column of images to an embedding matrix."""

from .._cache import cache_info, clear_cache
from .._nn.names import BACKBONES
from ._autoencoder import ConvAutoencoderEncoder
from ._bulk import embed_images
from ._finetuned import FineTunedCNNEncoder
from ._frozen import FrozenCNNEncoder

__all__ = [
    "BACKBONES",
    "ConvAutoencoderEncoder",
    "FineTunedCNNEncoder",
    "FrozenCNNEncoder",
    "cache_info",
    "clear_cache",
    "embed_images",
]
