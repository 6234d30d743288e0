"""Model files that are safe to open: ``skinfuse.save(model, path)`` and ``skinfuse.load(path)``.

A pickle (``joblib.dump``) runs whatever code it holds when it is opened, so a model
shared between a research group and a clinic should not travel as one. A skinfuse model
file is a zip archive of

- ``manifest.json``: format version, versions of skinfuse, scikit-learn, torch..., the
  model's class, ``classes_``, input columns, image size, the metrics given to ``save``,
  the training data's summary (``training_data``, :func:`skinfuse.metrics.dataset_summary`),
  how to rebuild each torch network, and checksums of the two payloads;
- ``model.skops``: the scikit-learn parts, written by :func:`skops.io.dumps` and read
  back with an explicit list of trusted types (:data:`TRUSTED_TYPES`): a type off the list
  is refused before anything is built;
- ``weights.safetensors``: the weights of every torch network (no code, no pickle).

The torch networks are not in the skops payload: before it is written, each one is
replaced by a placeholder (and put back afterwards); on loading, the network is rebuilt
from its constructor arguments (recorded in the manifest, named backbones only) and
its weights are loaded into it. A network built around a user's own ``nn.Module`` cannot
be rebuilt without running the user's code, so ``save`` refuses it.

Neither skops nor torch is imported by ``import skinfuse``, only by ``save``/``load``
(skops itself imports every scikit-learn module on first use, torch included).

Modules: ``_format`` (the members of the archive, the format version, the trusted types),
``_save`` (:func:`save`), ``_load`` (:func:`load`: checks, then rebuilds), ``_networks``
(walking a model for its torch parts, stashing and rebuilding them: a new fitted torch
attribute or network class needs a line there), ``_manifest`` (the manifest and the model
card), ``_inspect`` (:func:`inspect_file`: what a file holds, read without building
anything). :func:`estimators_in` (every estimator inside a model), :func:`read_manifest`
(the manifest alone, e.g. the training data's summary), :func:`inspect_file` and
:func:`training_data_markdown` serve the command line.
"""

from ._format import (
    FORMAT_VERSION,
    TRUSTED_TYPES,
    _TorchPart,  # noqa: F401 (named in model files by this path)
)
from ._inspect import inspect_file
from ._load import load, read_manifest
from ._manifest import _calibration_line as calibration_line
from ._manifest import _sets_line as sets_line
from ._manifest import _training_data_markdown as training_data_markdown
from ._networks import estimators_in, torch_estimators_in
from ._save import save

__all__ = [
    "FORMAT_VERSION",
    "TRUSTED_TYPES",
    "calibration_line",
    "estimators_in",
    "inspect_file",
    "load",
    "read_manifest",
    "save",
    "sets_line",
    "torch_estimators_in",
    "training_data_markdown",
]
