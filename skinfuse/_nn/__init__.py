"""The torch core of skinfuse (private): every torch-backed estimator is built on it.

- :mod:`.device` (no torch at import): device choice, scoped seeding, and
  :class:`~.device.TorchEstimatorMixin` (device copies of fitted modules, pickling).
- :mod:`.names` (no torch at import): the names of the built-in backbones.
- :mod:`.backbones`: pretrained CNNs by name, their stages, the image embedder.
- :mod:`.modules`: the networks (classifier with optional metadata branch, autoencoder).
- :mod:`.data`: the dataset over a column of images, loaders, augmentation.
- :mod:`.spec` (no torch at import): the typed settings of a fit, built once from the
  estimator (:class:`~.spec.TrainingConfig`, :class:`~.spec.NetworkSpec`).
- :mod:`.estimator` (no torch at import): :class:`~.estimator.FineTuningMixin`, the base
  of the fine-tuned encoder and the fusion network, and their shared parameter docs.
- :mod:`.training`: the training loop, one function configured by a ``TrainingConfig``.
- :mod:`.splits` (no torch): validation splits and cross-fitting folds, grouped by lesion.
- :mod:`.fitting`: training a classifier network; the ONE choice of its data path.
- :mod:`.inference`: one batch-inference loop.

Every module but :mod:`.device`, :mod:`.names`, :mod:`.params`, :mod:`.spec`,
:mod:`.estimator` and :mod:`.splits` imports torch at its top. The scikit-learn-facing
modules (``skinfuse.encoders``, ``skinfuse.fusion``) import them inside their methods,
so ``import skinfuse`` does not import torch. Imports run one way: estimators ->
``_nn`` -> ``skinfuse.images``; nothing in ``_nn`` imports an estimator.
"""
