"""Partial fine-tuning from cached activations: train the last blocks of a backbone only.

Most of a CNN's cost is in the early stages, which barely change in fine-tuning. With
``trainable_blocks=k`` the first stages (all but the last ``k``, see
:func:`.backbones.backbone_stages`) are frozen; their output (the *activations* at the
cut) is computed once per image and per fixed view (:mod:`.views`), cached like an
embedding, and only the last ``k`` stages, the metadata branch and the head are trained,
on those activations. An epoch then costs the top of the network only: minutes, not hours,
on a CPU.

The trained network is an ordinary :class:`.modules.ClassifierNetwork` whose first stages
are frozen (``freeze=n_stages - k``): it predicts new images end to end, explains them with
Grad-CAM and saves like any other. :class:`TopNetwork` shares its parameters (the same
tensors), so training the top trains the network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .backbones import backbone_stages, pool_map
from .inference import eval_mode
from .views import ViewOf


class _Stop(Exception):
    """Raised by the hook at the cut: the rest of the backbone is not run."""


class Trunk(nn.Module):
    """Normalised images -> the backbone's output at module ``cut``, flattened ``(B, C*h*w)``."""

    def __init__(self, embedder, cut, names=()):
        super().__init__()
        self.embedder = embedder
        self.cut = cut
        self.names = tuple(names)

    def frozen_state(self) -> dict:
        """The tensors the activations depend on: the trunk's stages and the normalisation."""
        features = self.embedder.features
        state = {"mean": self.embedder.mean, "std": self.embedder.std}
        for name in self.names:
            for key, value in features.get_submodule(name).state_dict().items():
                state[f"{name}.{key}"] = value
        return state

    def feature_map(self, x):
        """The activations at the cut, ``(B, C, h, w)``."""
        store = []

        def hook(_module, _inputs, output):
            store.append(output)
            raise _Stop

        handle = self.embedder.features.get_submodule(self.cut).register_forward_hook(hook)
        try:
            self.embedder.features(self.embedder.normalize(x))
        except _Stop:
            pass
        finally:
            handle.remove()
        return store[0]

    def forward(self, x):
        fmap = self.feature_map(x)
        return fmap.reshape(len(fmap), -1)

    def staged(self):
        """The same computation as plain code, what ONNX export traces (:mod:`.onnx_engine`):
        normalise, then the stages one after the other (this module stops the backbone
        with a hook instead)."""
        return _StagedTrunk(self)


class _StagedTrunk(nn.Module):
    def __init__(self, trunk):
        super().__init__()
        self.embedder = trunk.embedder
        features = trunk.embedder.features
        self.stages = nn.ModuleList([features.get_submodule(name) for name in trunk.names])

    def forward(self, x):
        x = self.embedder.normalize(x)
        for stage in self.stages:
            x = stage(x)
        return x.flatten(1)  # not reshape(len(x), -1): len() would fix the batch size


class TopNetwork(nn.Module):
    """Activations at the cut ``(B, C, h, w)`` -> the last stages -> pooling -> (metadata) -> head.

    Holds the modules of ``net`` (a :class:`.modules.ClassifierNetwork`) by reference.
    With ``features_only``, returns the pooled features (what ``net.embedder`` returns).
    """

    def __init__(self, net, names, features_only=False):
        super().__init__()
        features = net.embedder.features
        self.stages = nn.ModuleList([features.get_submodule(name) for name in names])
        self.pooling = net.embedder.pooling
        self.metadata = net.metadata
        self.metadata_dropout = getattr(net, "metadata_dropout", None)
        self.dropout = net.dropout
        self.head = net.head
        self.features_only = features_only
        self._classify = net.classify

    def forward(self, x, metadata=None):
        for stage in self.stages:
            x = stage(x)
        features = pool_map(x, self.pooling)
        if self.features_only:
            return features
        return self._classify(features, metadata)


def split_network(net, trainable_blocks, image_size, *, check=True):
    """``(trunk, top, shape)`` of a :class:`.modules.ClassifierNetwork` for ``trainable_blocks``.

    ``shape`` is the shape ``(C, h, w)`` of one image's activations. With ``check``,
    checks on one random image that the trunk then the top compute what the whole backbone computes
    (true for backbones that run their stages in sequence), and says what to do if not.
    """
    features = net.embedder.features
    stages = backbone_stages(features)
    k = int(trainable_blocks)
    if not 1 <= k < len(stages):
        shown = ", ".join("+".join(group) for group in stages)
        raise ValueError(
            f"trainable_blocks={k}, but the backbone has {len(stages)} stages ({shown}): pass "
            f"an int from 1 (the last stage) to {len(stages) - 1}, or trainable_blocks=None "
            "to train the whole network from the images."
        )
    cut = stages[-k - 1][-1]
    names = [name for group in stages[-k:] for name in group]
    trunk = Trunk(net.embedder, cut, [name for group in stages[:-k] for name in group])
    top = TopNetwork(net, names, features_only=True)
    device = next(net.parameters()).device
    with eval_mode(net), torch.no_grad():
        if not check:
            zeros = torch.zeros(1, 3, image_size, image_size, device=device)
            return trunk, top, tuple(trunk.feature_map(zeros).shape[1:])
        x = torch.randint(0, 256, (1, 3, image_size, image_size), dtype=torch.uint8)
        x = x.to(device)
        whole = net.embedder(x)
        acts = trunk.feature_map(x)
        staged = top(acts)
    if whole.shape != staged.shape or not torch.allclose(whole, staged, rtol=1e-3, atol=1e-4):
        raise ValueError(
            f"trainable_blocks={k} needs a backbone that runs its stages one after the other; "
            f"this one does more between {cut!r} and its output than its stages {names} (the "
            "two ways of computing its features differ). Use freeze= instead (it trains from "
            "the images), or a named backbone."
        )
    return trunk, top, tuple(acts.shape[1:])


def view_activations(items, trunk, views, *, cached, image_size, batch_size, device,
                     num_workers=None, verbose=0, precision="auto", engine="torch",
                     key=None):  # fmt: skip
    """Trunk activations of ``items`` for each view: float32 ``(n_views, n, C*h*w)``.

    ``cached(items, encode, view)`` returns ``encode(todo)``'s rows for the items not cached
    yet under the view's key, with the rest from the cache (the estimator's embedding cache).
    ``engine="onnxruntime"`` (:func:`.onnx_engine.resolve_engine`) runs the trunk with
    onnxruntime (:class:`.onnx_engine.OnnxModule`; ``key``, the trunk's
    :func:`trunk_key`, names its exported graph).
    """
    from .inference import embed

    if engine == "onnxruntime":
        from .onnx_engine import OnnxModule

        trunk = OnnxModule(trunk, key)
    out = []
    for view in views:

        def encode(todo, view=view):
            return embed(
                ViewOf(trunk, view), todo, image_size, batch_size=batch_size, device=device,
                num_workers=num_workers, verbose=verbose, desc=f"activations ({view})",
                precision=precision,
            )  # fmt: skip

        out.append(cached(items, encode, view))
    return np.stack(out)


class ActivationDataset(Dataset):
    """Cached activations ``(n_views, n, D)`` as ``(C, h, w)`` tensors, one view per access.

    With ``random_view`` each access draws a view (torch's random stream: seed it);
    otherwise view 0. Items follow :class:`.data.ImageDataset`: the input, or a dict with
    the input under ``"x"`` and ``"metadata"``; then the target if ``y`` is given.
    """

    def __init__(self, acts, shape, *, y=None, metadata=None, random_view=False):
        self.acts = acts
        self.shape = tuple(shape)
        self.y = y
        self.metadata = metadata
        self.random_view = random_view

    def __len__(self):
        return self.acts.shape[1]

    def __getitem__(self, i):
        v = int(torch.randint(0, len(self.acts), ()).item()) if self.random_view else 0
        x = torch.from_numpy(self.acts[v, i]).view(self.shape)
        if self.metadata is not None:
            x = {"x": x, "metadata": torch.from_numpy(self.metadata[i])}
        if self.y is None:
            return x
        return x, self.y[i]


def run_top(top, acts, shape, *, device, batch_size=256, metadata=None, precision="auto"):
    """``top`` over the activations of each view; float32 ``(n_views, n, d)``."""
    from .inference import run_batches

    out = []
    for v in range(len(acts)):
        data = ActivationDataset(acts[v : v + 1], shape, metadata=metadata)
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        out.append(run_batches(
            top, loader, device, chunk=batch_size, channels_last=False, precision=precision
        ))  # fmt: skip
    return np.stack(out)


def trunk_key(trunk, backbone) -> str:
    """The cache key of a trunk's activations: its weights and input normalisation, the cut,
    and the code of a user's ``backbone`` module. It depends on the frozen part only, so it is
    the same before and after training, and for every network with the same frozen part."""
    from .hashing import hash_config, hash_module, with_disk_flag

    code = "" if isinstance(backbone, str) else hash_module(backbone)
    return with_disk_flag(code, hash_config(
        "trunk-v1", code, trunk.cut, trunk.names, state_dict=trunk.frozen_state(),
    ))  # fmt: skip


def trunk_engine(trunk, backbone, device, precision, n_images=None):
    """``(engine, key, cache_key)`` of a trunk's activations on ``device`` at ``precision``
    (``"auto"``, ``"fp32"``, ``"bf16"``) for ``n_images`` image views: what computes them
    (:func:`.onnx_engine.resolve_engine`),
    the trunk's :func:`trunk_key`, and the key of their cache (the engine's name appended
    for onnxruntime: its results differ from PyTorch's in their last bits)."""
    from .device import resolve_precision
    from .onnx_engine import resolve_engine

    engine = resolve_engine(device, resolve_precision(precision, device), n_images)
    key = trunk_key(trunk, backbone)
    return engine, key, (key if engine == "torch" else f"{key}-{engine}")
