"""ONNX export of skinfuse's networks: :func:`export_onnx`.

A fitted :class:`~skinfuse.fusion.FusionNetClassifier` is exported as its network after
the metadata preprocessing (inputs ``image``: uint8 ``(B, 3, S, S)`` RGB, ``metadata``:
float32 ``(B, n_features)``; output ``probabilities``); a
:class:`~skinfuse.encoders.FrozenCNNEncoder` (alone or the encoder of a fusion pipeline) as
its image embedder (input ``image``, output ``embedding``). Next to the ``.onnx`` file, a
JSON file describes how to build the inputs without Python: image size and resize, the
normalisation baked into the graph, the metadata encoding (categories, imputed values,
scaling, missing-value encoding) and the class names.
"""

from ._onnx import export_onnx

__all__ = ["export_onnx"]
