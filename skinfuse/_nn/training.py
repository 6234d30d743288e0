"""The training loop: one function for every network skinfuse trains, configured explicitly.

:func:`train_network` trains a module with skorch: seeded (scoped) initialisation and
shuffling, an optimizer from :func:`optimizer_class`, an optional cosine learning-rate
schedule, early stopping on a validation set (restoring the best epoch), bf16 autocast
and channels-last on CUDA. The fine-tuned encoder, the fusion network (task
``"classification"``) and the autoencoder (task ``"reconstruction"``) all use it, with a
:class:`.spec.TrainingConfig`. Which data a classifier trains on (images, a decoded store,
cached activations) is chosen in :mod:`.fitting`; the validation splits are in :mod:`.splits`.
The epoch table (:class:`EpochTable`) and skorch's per-batch bar (``verbose > 1``) follow
:mod:`skinfuse._utils._progress`: no colour codes and no bar where output is not a terminal.
"""

from __future__ import annotations

import contextlib
import math
import sys

import numpy as np
import torch
from skorch import NeuralNet, NeuralNetClassifier
from skorch.callbacks import Callback, EarlyStopping, LRScheduler, PrintLog, ProgressBar
from skorch.helper import predefined_split
from skorch.utils import to_device, to_tensor

from .._utils._progress import redraws, strip_ansi
from .data import default_num_workers, plain_worker_errors
from .device import torch_seed
from .inference import autocast
from .modules import as_unit_float
from .spec import TrainingConfig

__all__ = [
    "ClassifierNet", "EpochTable", "ReconstructionNet", "ResumeState", "TrainingConfig",
    "WarmupCosine",
    "finish_training", "net_to_cpu", "optimizer_class", "train_network",
]  # fmt: skip


def optimizer_class(optimizer):
    """The optimizer class for ``"adam"``, ``"adamw"``, ``"sgd"`` (momentum 0.9) or a class,
    and its extra keyword arguments."""
    if optimizer == "adam":
        return torch.optim.Adam, {}
    if optimizer == "adamw":
        return torch.optim.AdamW, {}
    if optimizer == "sgd":
        return torch.optim.SGD, {"momentum": 0.9}
    return optimizer, {}


class WarmupCosine:
    """Learning-rate factor at optimizer step ``t``: linear warm-up over ``warmup`` steps
    (``(t + 1) / warmup``, 1 at step ``warmup - 1``), then a cosine decay that would reach 0
    one step after the last (``total - 1``) (for ``LambdaLR``)."""

    def __init__(self, warmup: int, total: int):
        self.warmup = int(warmup)
        self.total = int(total)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        done = (step + 1 - self.warmup) / max(1, self.total + 1 - self.warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


class ResumeState(Callback):
    """Write a run's whole state after every epoch to ``path``; restore it at the start.

    skorch's ``Checkpoint`` / ``LoadInitState`` keep the weights, optimizer and history,
    not the learning-rate scheduler, early stopping's count and best weights, nor the
    random streams (shuffling, augmentation, dropout): a fit resumed from them would
    differ from an uninterrupted one. This callback keeps all of it, so a resumed fit is
    the same fit. It runs after the other callbacks (the schedule has stepped, early
    stopping has counted); an epoch that early stopping ends is not written, and a
    resumed fit replays it (the same epoch, the same stop).

    ``key`` describes the run (seed, sizes); a state written by another run is refused.
    ``state`` is the loaded state (or None), set by :func:`train_network` before
    training, which has also put its history on the net.
    """

    def __init__(self, path, key, generator, state=None):
        self.path = path
        self.key = key
        self.generator = generator
        self.state = state

    def on_train_begin(self, net, **kwargs):
        state = self.state
        if state is None:
            return
        # after the scheduler's construction (which steps the optimizer's learning rate)
        net.module_.load_state_dict(state["module"])
        net.optimizer_.load_state_dict(state["optimizer"])
        for name, cb in net.callbacks_:
            if name in state["callbacks"]:
                _set_callback_state(cb, state["callbacks"][name])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"])
        self.generator.set_state(state["generator"])

    def on_epoch_end(self, net, **kwargs):
        import os

        state = {
            "key": self.key,
            "module": net.module_.state_dict(),
            "optimizer": net.optimizer_.state_dict(),
            "callbacks": {
                name: _callback_state(cb)
                for name, cb in net.callbacks_
                if isinstance(cb, (LRScheduler, EarlyStopping))
            },
            "history": list(net.history),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if str(net.device).startswith("cuda") else None,
            "generator": self.generator.get_state(),
        }
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = f"{self.path}.tmp{os.getpid()}"
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # a fit killed while writing keeps the last whole state


def _callback_state(cb):
    if isinstance(cb, LRScheduler):
        return {"scheduler": cb.lr_scheduler_.state_dict(), "batch_idx_": cb.batch_idx_}
    return {k: v for k, v in vars(cb).items() if k.endswith("_") and not k.startswith("_")}


def _set_callback_state(cb, state):
    if isinstance(cb, LRScheduler):
        cb.lr_scheduler_.load_state_dict(state["scheduler"])
        cb.batch_idx_ = state["batch_idx_"]
    else:
        for key, value in state.items():
            setattr(cb, key, value)


def load_resume_state(path, key):
    """The state :class:`ResumeState` wrote at ``path`` (None if there is none); a state of
    another run is a clear error."""
    import os

    if not os.path.exists(path):
        return None
    # the user's own directory, written by this code (numpy scalars in the history)
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("key") != key:
        raise ValueError(
            f"checkpoint_dir holds the state of another fit at {path} ({state.get('key')}), "
            f"not of this one ({key}): other data or settings. Pass a new checkpoint_dir, "
            "or delete that directory to start over."
        )
    return state


class EpochTable(PrintLog):
    """skorch's epoch table (:class:`skorch.callbacks.PrintLog`), without its colour codes
    where standard output is not a terminal or a notebook (a log file, CI, ``nohup``).

    skorch colours each column's best value with ANSI codes and has no switch for it; the
    codes are stripped from the formatted table (tabulate aligns on the visible text, so the
    columns stay aligned). Whether standard output is a terminal is asked at each epoch.
    """

    def table(self, row):
        text = super().table(row)
        return text if redraws(sys.stdout) else strip_ansi(text)


class _PlainLogs:
    """skorch's default callbacks, with :class:`EpochTable` as ``print_log``."""

    def get_default_callbacks(self):
        return [
            (name, EpochTable() if name == "print_log" and type(cb) is PrintLog else cb)
            for name, cb in super().get_default_callbacks()
        ]


class _DeviceInference:
    """skorch ``infer`` over uint8 image batches: channels-last on CUDA, bf16 autocast by ``precision``.

    ``batch_transform`` (a callable, e.g. :class:`.augment.BatchAugment`; not a module,
    which skorch would refuse as an attribute) augments the images
    of each training batch on the device, before the forward pass (not in evaluation).
    """

    def __init__(self, *args, batch_transform=None, precision="auto", **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_transform = batch_transform
        self.precision = precision

    def infer(self, x, **fit_params):
        transform = self.batch_transform
        if transform is not None and self.module_.training:
            x = to_tensor(x, device=self.device)
            if isinstance(x, dict):
                x = {**x, "x": transform(x["x"])}
            else:
                x = transform(x)
        if str(self.device).startswith("cuda"):
            x = to_tensor(x, device=self.device)
            if isinstance(x, dict):  # the fusion network: images under "x", plus metadata
                x = {**x, "x": x["x"].contiguous(memory_format=torch.channels_last)}
            else:
                x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, getattr(self, "precision", "auto")):
            return super().infer(x, **fit_params).float()


class ClassifierNet(_PlainLogs, _DeviceInference, NeuralNetClassifier):
    """skorch classifier over image batches (class indices as targets)."""


class ReconstructionNet(_PlainLogs, _DeviceInference, NeuralNet):
    """skorch net whose loss compares the output with the input images (in [0, 1])."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        target = as_unit_float(to_device(X, y_pred.device))
        return super().get_loss(y_pred, target, X=X, training=training)


def _loader_settings(config, train_data, valid_data) -> dict:
    settings = {}
    pin = str(config.device).startswith("cuda")
    for prefix, data in (("iterator_train", train_data), ("iterator_valid", valid_data)):
        n = len(data) if data is not None else 0
        workers = default_num_workers(n, int(config.batch_size), config.num_workers)
        settings[f"{prefix}__num_workers"] = workers
        settings[f"{prefix}__pin_memory"] = pin
        settings[f"{prefix}__persistent_workers"] = workers > 0
    return settings


def train_network(module, module_kwargs, train_data, *, config, seed, task="classification",
                  valid_data=None, n_classes=None, class_weight=None, on_initialized=None,
                  iterator=None, batch_transform=None):  # fmt: skip
    """Train ``module(**module_kwargs)`` on a dataset; return the skorch net (on ``config.device``).

    Parameters
    ----------
    module : nn.Module class
        Built inside the seeded block, so its random initialisation is seeded.
    module_kwargs : dict
    train_data : :class:`.data.ImageDataset`
        With targets ``y`` (class indices) for classification; for reconstruction the
        targets are ignored (the loss compares the output with the input images).
    config : TrainingConfig
    seed : int
        Seeds initialisation, shuffling and augmentation, in a scoped block.
    task : {"classification", "reconstruction"}
    valid_data : :class:`.data.ImageDataset` or None
        Scored after every epoch (``valid_loss``, and ``valid_acc`` for classification);
        with ``config.patience``, early stopping on it restores the best epoch.
    n_classes : int
        Classification only.
    class_weight : ndarray of shape (n_classes,) or None
        Weights of the cross-entropy loss.
    on_initialized : callable or None
        Called with the initialised net before training (e.g. to set an output bias).
    iterator : class or None
        skorch's ``iterator_train`` and ``iterator_valid`` (default: PyTorch's DataLoader);
        :class:`.store.StoreLoader` for a :class:`.store.StoreDataset`.
    batch_transform : callable or None
        Applied to the images of each training batch, on the device.
    """
    batch_size = int(config.batch_size)
    n_train = len(train_data)
    # a last batch of 1 image breaks batch norm on a 1x1 feature map
    drop_last = n_train > batch_size and n_train % batch_size == 1
    callbacks = []
    if config.lr_schedule == "cosine" and config.warmup_epochs:
        per_epoch = n_train // batch_size if drop_last else math.ceil(n_train / batch_size)
        schedule = WarmupCosine(
            round(config.warmup_epochs * per_epoch), int(config.max_epochs) * per_epoch
        )
        callbacks.append((
            "lr_scheduler",
            LRScheduler(policy=torch.optim.lr_scheduler.LambdaLR, lr_lambda=schedule,
                        step_every="batch"),
        ))  # fmt: skip
    elif config.lr_schedule == "cosine":
        callbacks.append(
            ("lr_scheduler", LRScheduler(policy="CosineAnnealingLR", T_max=config.max_epochs))
        )
    if valid_data is not None and config.patience is not None:
        callbacks.append(
            (
                "early_stopping",
                EarlyStopping(monitor="valid_loss", patience=config.patience, load_best=True),
            )
        )
    if config.verbose > 1 and redraws(sys.stderr):  # elsewhere: the epoch table alone
        callbacks.append(("progress_bar", ProgressBar()))
    # a new list: skorch's trim_for_prediction clears the list it was given
    callbacks.extend(config.callbacks or [])
    generator = torch.Generator().manual_seed(seed)
    resume = None
    if config.checkpoint_dir is not None:
        import os

        path = os.path.join(os.fspath(config.checkpoint_dir), "state.pt")
        key = {
            "seed": int(seed), "n_train": n_train, "max_epochs": int(config.max_epochs),
            "batch_size": batch_size, "task": task,
            "n_valid": None if valid_data is None else len(valid_data),
        }  # fmt: skip
        resume = ResumeState(path, key, generator, load_resume_state(path, key))
        callbacks.append(("resume_state", resume))
    if task == "classification":
        net_class, criterion = ClassifierNet, torch.nn.CrossEntropyLoss
        task_kwargs = {
            "classes": np.arange(n_classes),
            "criterion__weight": None if class_weight is None else torch.from_numpy(class_weight),
        }
        if config.label_smoothing:
            task_kwargs["criterion__label_smoothing"] = float(config.label_smoothing)
    else:
        net_class, criterion, task_kwargs = ReconstructionNet, torch.nn.MSELoss, {}
    optimizer, optimizer_kwargs = optimizer_class(config.optimizer)
    if iterator is not None:
        task_kwargs = {**task_kwargs, "iterator_train": iterator, "iterator_valid": iterator}
    if batch_transform is not None:
        task_kwargs = {**task_kwargs, "batch_transform": batch_transform}
    if config.precision != "auto":  # the nets' default
        task_kwargs = {**task_kwargs, "precision": config.precision}
    with torch_seed(seed, config.device):
        net = net_class(
            module=module,
            **{f"module__{k}": v for k, v in module_kwargs.items()},
            criterion=criterion,
            **task_kwargs,
            optimizer=optimizer,
            lr=float(config.lr),
            optimizer__weight_decay=float(config.weight_decay),
            **{f"optimizer__{k}": v for k, v in optimizer_kwargs.items()},
            max_epochs=int(config.max_epochs),
            batch_size=batch_size,
            train_split=None if valid_data is None else predefined_split(valid_data),
            callbacks=callbacks,
            iterator_train__shuffle=True,
            iterator_train__generator=generator,
            iterator_train__drop_last=drop_last,
            **_loader_settings(config, train_data, valid_data),
            device=config.device,
            verbose=int(config.verbose),
            compile=bool(config.compile),
        )
        net.initialize()
        if on_initialized is not None:
            on_initialized(net)
        if str(config.device).startswith("cuda"):
            net.module_.to(memory_format=torch.channels_last)
        epochs = int(config.max_epochs)
        if resume is not None and resume.state is not None:  # go on after the last epoch
            from skorch.history import History

            net.history = History(resume.state["history"])
            # the schedulers, built with last_epoch = len(history) - 1, need its initial_lr
            net.optimizer_.load_state_dict(resume.state["optimizer"])
            epochs = max(0, epochs - len(net.history))
        with plain_worker_errors(), cudnn_autotune(config.device):
            # unreadable image: its message
            net.partial_fit(train_data, train_data.y, epochs=epochs)
    if config.compile:  # the compiled wrappers share the modules' parameters: unwrap them
        net.module_ = getattr(net.module_, "_orig_mod", net.module_)
        net.criterion_ = getattr(net.criterion_, "_orig_mod", net.criterion_)
        net.compile = False
    return net


@contextlib.contextmanager
def cudnn_autotune(device):
    """cuDNN picks the fastest convolution algorithms inside the block on CUDA (training
    batches have fixed sizes); the global setting comes back after."""
    was = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = was or str(device).startswith("cuda")
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = was


def net_to_cpu(net):
    """Move a trained skorch net (module, criterion, optimizer state if any) to the CPU."""
    if str(net.device) == "cpu":
        return
    net.module_.to("cpu", memory_format=torch.contiguous_format)
    if getattr(net, "criterion_", None) is not None:
        net.criterion_.to("cpu")
    optimizer = getattr(net, "optimizer_", None)
    if optimizer is not None:
        for state in optimizer.state.values():
            for key, value in state.items():
                if torch.is_tensor(value):
                    state[key] = value.cpu()
    net.device = "cpu"


def finish_training(net):
    """Trim a trained skorch net for prediction, in place, on the CPU; return its history.

    Drops the optimizer, callbacks, training-loader settings (the shuffling generator,
    workers), a decoded-image store's loaders and the batch augmentation; keeps the history
    and the loss (with its class weights).
    """
    from torch.utils.data import DataLoader

    history, criterion = net.history, net.criterion_
    net.history = type(history)()  # trim_for_prediction clears the history in place
    net.trim_for_prediction()
    net.history, net.criterion, net.criterion_ = history, type(criterion), criterion
    for key in [k for k in vars(net) if k.startswith("iterator_train__")]:
        delattr(net, key)
    net.iterator_valid = DataLoader  # trim_for_prediction dropped iterator_train
    net.batch_transform = None
    net_to_cpu(net)
    net.module_.eval()
    return history
