"""The torch core of skinfuse (private): every torch-backed estimator is built on it.

- :mod:`.device` (no torch at import): device choice, scoped seeding, and
  :class:`~.device.TorchEstimatorMixin` (device copies of fitted modules, pickling).
- :mod:`.names` (no torch at import): the names of the built-in backbones.
- :mod:`.backbones`: pretrained CNNs by name, their stages, the image embedder.
- :mod:`.modules`: the networks (classifier with optional metadata branch, autoencoder).
- :mod:`.data`: the dataset over a column of images, loaders, augmentation.
- :mod:`.training`: one training function, configured by :class:`~.training.TrainingConfig`.
- :mod:`.inference`: one batch-inference loop.

Every module but :mod:`.device` and :mod:`.names` imports torch at its top. The scikit-learn-facing
modules (``skinfuse.encoders``, ``skinfuse.fusion``) import them inside their methods,
so ``import skinfuse`` does not import torch. Imports run one way: estimators ->
``_nn`` -> ``skinfuse.images``; nothing in ``_nn`` imports an estimator.
"""
