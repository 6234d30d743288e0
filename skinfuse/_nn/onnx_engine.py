"""onnxruntime for frozen layers on a CPU: ``skinfuse.set_config(engine=...)``.

Partial fine-tuning computes its frozen trunk once per image and view before training
(:mod:`.partial`), and encoders compute embeddings with fitted networks; on a CPU that is
most of a fit or a transform. onnxruntime runs those layers about twice
as fast as PyTorch's eager mode (fused convolutions and batch norms, its own kernels;
docs/results.md), so :class:`OnnxModule` exports the network to ONNX in memory, with a
dynamic batch axis, once per process and input type, and runs it with onnxruntime. Its
outputs agree with PyTorch's to about 1e-5, not to the bit, so cache keys carry the engine.
Training, prediction and Grad-CAM always run in PyTorch.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

#: exported sessions kept in this process: (weights key, dtype, shape, threads) -> session
_SESSIONS: OrderedDict = OrderedDict()
_MAX_SESSIONS = 4


def onnxruntime_available() -> bool:
    """Whether onnxruntime and torch's ONNX exporter (onnxscript) import here."""
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


#: ``engine="auto"`` exports to onnxruntime for this many image views or more: the export
#: (about 11 s for EfficientNet-Lite0's trunk) pays for itself past ~1,000 (it saves ~11 ms
#: each on 2 cores); fewer (a prediction of a few images, the tests) run in PyTorch.
AUTO_MIN_IMAGES = 1024


def resolve_engine(device, precision, n_images=None) -> str:
    """``"onnxruntime"`` or ``"torch"``: what computes cached frozen layers on ``device`` at
    ``precision`` (resolved: ``"fp32"``/``"bf16"``) for ``n_images`` image views (None: many),
    from ``skinfuse.get_config()["engine"]``.

    onnxruntime is used on a CPU in fp32 only: ``"auto"`` where it is installed and for at
    least :data:`AUTO_MIN_IMAGES` image views, else PyTorch; ``"onnxruntime"`` raises a
    clear error where it is not installed; on a GPU and in bf16 PyTorch runs either way.
    """
    from .._config import get_config

    engine = get_config()["engine"]
    if engine == "torch":
        return "torch"
    available = onnxruntime_available()
    if engine == "onnxruntime" and not available:
        raise ImportError(
            "skinfuse.set_config(engine='onnxruntime') needs onnxruntime and onnxscript: "
            'pip install "skinfuse[onnx]", or use engine="auto" or "torch"'
        )
    if not available or str(device) != "cpu" or precision != "fp32":
        return "torch"
    if engine == "auto" and n_images is not None and n_images < AUTO_MIN_IMAGES:
        return "torch"
    return "onnxruntime"


class OnnxModule(nn.Module):
    """``module`` run by onnxruntime; same input (one image batch) and output.

    ``module``: an image embedder, or a :class:`.partial.Trunk` (a module with a
    ``staged()`` method: what is exported is the module it returns). The graph is exported
    at the first call for each input dtype and image shape, and checked there against
    PyTorch on that batch (``rtol=1e-3, atol=1e-4``, the check of
    :func:`.partial.split_network`): a module that does not
    export, or whose export computes something else (a trunk whose stages do not run one
    after the other), runs in PyTorch instead, with a warning. ``key`` names the module's
    weights (a cache key): sessions are shared by the views and the folds of a fit, and by
    later calls with the same weights in this process.
    """

    def __init__(self, module, key):
        super().__init__()
        self.module = module
        self.key = key

    def forward(self, x):
        session = self._session(x)
        if session is None:
            return self.module(x)
        arr = x.detach().cpu().contiguous(memory_format=torch.contiguous_format).numpy()
        (out,) = session.run(None, {session.get_inputs()[0].name: arr})
        return torch.from_numpy(out)

    def _session(self, x):
        threads = torch.get_num_threads()
        cache_key = (self.key, str(x.dtype), tuple(x.shape[1:]), threads)
        if cache_key in _SESSIONS:
            _SESSIONS.move_to_end(cache_key)
            return _SESSIONS[cache_key]
        session = self._export(x, threads)
        _SESSIONS[cache_key] = session
        while len(_SESSIONS) > _MAX_SESSIONS:
            _SESSIONS.popitem(last=False)
        return session

    def _export(self, x, threads):
        import onnxruntime as ort

        staged = self.module.staged() if hasattr(self.module, "staged") else self.module
        example = x[:2].contiguous(memory_format=torch.contiguous_format)
        try:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                example = example.clone()  # an ordinary tensor (not an inference one)
                batch = torch.export.Dim("batch", min=1, max=1 << 16)
                program = torch.onnx.export(
                    staged, (example,), dynamic_shapes=({0: batch},), dynamo=True,
                    verbose=False, optimize=True,
                )  # fmt: skip
                graph = program.model_proto.SerializeToString()
        except Exception as exc:  # any export failure: PyTorch computes it
            warnings.warn(
                f"the frozen layers could not be exported to ONNX ({type(exc).__name__}: "
                f"{str(exc)[:200]}); PyTorch computes them. skinfuse.set_config(engine="
                "'torch') silences this.",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        # no busy-waiting between calls: the decoding and the views run in between
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
        want = self.module(example).numpy()
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-3, atol=1e-4):
            warnings.warn(
                "onnxruntime's output of the frozen layers differs from PyTorch's (the "
                "backbone does more than run its stages one after the other); PyTorch "
                "computes them. skinfuse.set_config(engine='torch') silences this.",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        return session
