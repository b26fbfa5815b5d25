"""Where a network runs: eager PyTorch, or its exported graph in ONNX Runtime or OpenVINO.

``predict.backend`` picks one: ``torch`` (eager), ``onnxruntime`` (the network and its
target's decoding exported to ONNX once, graph optimisations on), ``openvino`` (the same ONNX
graph compiled by OpenVINO, the ``openvino`` extra), or ``auto``: the fastest installed runtime
that keeps the counts on the CPU (ONNX Runtime; ``benchmarks/predict_speed.py`` measures each
and the parity rule, ``docs/inference.md`` has the numbers), PyTorch on a GPU.

An exported graph is built from the weights the first time, checked against PyTorch on an input
whose sides are not multiples of the network's ``size_divisor`` (:data:`TOLERANCE`), and cached
under the user's cache folder (``$XDG_CACHE_HOME/bloodseg/onnx``, ``~/.cache/...``), keyed by
the model file's sha256 and the exporter's versions, never beside the user's own files. The
same :class:`ProbabilityNet` is what ``bloodseg-export format=onnx`` writes.

    >>> run = runner("onnxruntime", net, target, channels=1, key=file_sha256("count.pt"))
    >>> probs = run(torch.from_numpy(x))        # (B, C, H, W) probabilities, as decode() gives
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bloodseg.io import write_bytes_atomic
from bloodseg.models.common import SegmentationNet
from bloodseg.options import BACKENDS, OptionError
from bloodseg.targets import Target

log = logging.getLogger(__name__)

#: the Python module each exported-graph backend needs, and how to install it
PACKAGES = {"onnxruntime": ("onnxruntime", "pip install onnxruntime"),
            "openvino": ("openvino", "pip install 'bloodseg[openvino]'")}
#: ``auto`` on a CPU, fastest first; each kept the counts on the 40 shared smears
AUTO_ORDER = ("onnxruntime",)
INPUT, OUTPUT = "image", "probabilities"
#: largest difference to PyTorch an exported graph may show on its check input
TOLERANCE = 1e-4


class RuntimeFailure(RuntimeError):
    """An exported graph that does not give PyTorch's answer; it is never used or kept."""


# -- the exported module ---------------------------------------------------------------------


@torch.jit.script_if_tracing  # scripted inside a trace, so the sizes stay dynamic
def pad_reflect(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` reflect-padded to multiples of ``multiple``, the extra pixel right/bottom
    (:func:`bloodseg.models.common.pad_to_multiple`, without branches on the size)."""
    h, w = x.size(-2), x.size(-1)
    ph, pw = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
    return F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="reflect")


@torch.jit.script_if_tracing
def crop_like(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The centre of ``y`` at ``x``'s height and width (undoes :func:`pad_reflect`)."""
    h, w = x.size(-2), x.size(-1)
    top, left = (y.size(-2) - h) // 2, (y.size(-1) - w) // 2
    return y[:, :, top:top + h, left:left + w]


class ProbabilityNet(nn.Module):
    """A network and its target's decoding: normalised ``(B, C, H, W)`` float images of any
    size -> ``(B, channels, H, W)`` probability maps, as the predictor computes them."""

    def __init__(self, net: SegmentationNet, target: Target) -> None:
        super().__init__()
        self.net, self.target, self.size_divisor = net, target, int(net.size_divisor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net.forward_padded(pad_reflect(x, self.size_divisor))
        return self.target.decode(crop_like(logits, x))


def example_input(channels: int, size_divisor: int, batch: int = 2, extra: int = 3
                  ) -> torch.Tensor:
    """A seeded normalised input whose sides are not multiples of ``size_divisor`` (so the
    padding is part of every trace)."""
    g = torch.Generator().manual_seed(0)
    h, w = 2 * size_divisor + extra, 3 * size_divisor + 2 * extra
    return torch.randn(batch, channels, h, w, generator=g)


def max_difference(got: np.ndarray, want: torch.Tensor) -> float:
    return float(np.abs(np.asarray(got) - want.numpy()).max())


@contextlib.contextmanager
def quiet(*loggers: str) -> Iterator[None]:
    """Only warnings and errors from ``loggers`` while in the block."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def onnx_model(module: ProbabilityNet, channels: int, props: dict[str, str],
               doc: str = "", opset: int | None = None) -> bytes:
    """``module`` as a checked ONNX model with dynamic batch, height and width and ``props``
    in its ``metadata_props``; refused (:class:`RuntimeFailure`) unless ONNX Runtime gives
    PyTorch's maps within :data:`TOLERANCE` at a size other than the traced one."""
    import onnx
    import onnxruntime as ort
    from torch.export import Dim

    d = module.size_divisor
    dims = {0: Dim("batch", min=1), 2: Dim("height", min=d), 3: Dim("width", min=d)}
    with quiet("onnx_ir", "onnxscript"), torch.no_grad():  # a log line per graph pass
        program = torch.onnx.export(module, (example_input(channels, d),), dynamo=True,
                                    input_names=[INPUT], output_names=[OUTPUT],
                                    dynamic_shapes=(dims,), opset_version=opset,
                                    verbose=False)
    proto = program.model_proto
    for dim, name in zip(proto.graph.output[0].type.tensor_type.shape.dim,
                         ("batch", None, "height", "width")):
        if name:  # the exporter names the output sizes by their formulas
            dim.dim_param = name
    onnx.helper.set_model_props(proto, props)
    proto.doc_string = doc
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    x = example_input(channels, d, batch=1, extra=5)
    with torch.inference_mode():
        want = module(x)
    diff = max_difference(session.run(None, {INPUT: x.numpy()})[0], want)
    if not diff <= TOLERANCE:
        raise RuntimeFailure(f"the exported graph differs from PyTorch by {diff:.3g} (> "
                             f"{TOLERANCE}) on a check input")
    log.info("ONNX graph checked: onnxruntime vs PyTorch on a %s input: max abs difference "
             "%.2g", tuple(x.shape), diff)
    return data


# -- choosing a backend ----------------------------------------------------------------------


def installed(backend: str) -> bool:
    """Whether ``backend``'s runtime can be imported (torch always can)."""
    if backend == "torch":
        return True
    try:
        return all(importlib.util.find_spec(name) is not None  # onnxscript: the exporter
                   for name in (PACKAGES[backend][0], "onnxscript"))
    except (ImportError, ValueError):  # a module blocked or half-installed
        return False


def resolve(backend: str, device: torch.device) -> str:
    """The backend that runs: ``auto`` = the first of :data:`AUTO_ORDER` that is installed on
    a CPU, else ``torch``; an exported-graph backend asked for by name must be installed and
    on the CPU."""
    if backend not in BACKENDS:
        raise OptionError(f"predict.backend={backend}: not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type != "cpu":
            return "torch"
        return next((b for b in AUTO_ORDER if installed(b)), "torch")
    if backend != "torch":
        if device.type != "cpu":
            raise OptionError(f"predict.backend={backend} runs on the CPU; with "
                              f"predict.device={device} use predict.backend=torch or auto")
        if not installed(backend):
            module, how = PACKAGES[backend]
            raise OptionError(f"predict.backend={backend} needs {module} (not installed): "
                              f"{how}, or use predict.backend=torch")
    return backend


# -- the exported graph, cached --------------------------------------------------------------


def cache_dir() -> Path:
    """``$BLOODSEG_CACHE`` or ``$XDG_CACHE_HOME/bloodseg`` (``~/.cache/bloodseg``): the
    user's cache, never a folder of their results or models."""
    base = os.environ.get("BLOODSEG_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bloodseg"


def export_key() -> str:
    """What an exported graph depends on besides the weights: the exporter's versions (read
    from the installed metadata: importing onnx alone costs half a second)."""
    from importlib.metadata import version

    import bloodseg
    text = f"{bloodseg.__version__} torch {torch.__version__} onnx {version('onnx')}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_onnx(net: SegmentationNet, target: Target, channels: int, key: str) -> Path:
    """The ONNX file of ``net`` + ``target``'s decoding for the model file whose sha256 is
    ``key``: read from the cache, or exported, checked and written there atomically."""
    if not (len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
        raise ValueError(f"cache key {key!r}: expected a model file's sha256")
    path = cache_dir() / "onnx" / f"{key}-{export_key()}.onnx"
    if path.is_file():
        return path
    log.info("exporting the network to ONNX once (cached as %s)", path)
    module = ProbabilityNet(net, target).eval()
    data = onnx_model(module, channels, {"bloodseg_weights_sha256": key},
                      doc="bloodseg predict.backend cache")
    write_bytes_atomic(path, data)
    return path


def _threads() -> int:
    return max(1, torch.get_num_threads())


class OnnxRuntimeNet:
    """Normalised (B, C, H, W) tensors -> probability maps, by ONNX Runtime on the CPU."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = _threads()  # as many as torch would use
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run([OUTPUT], {INPUT: x})[0])


class OpenVinoNet:
    """The same ONNX graph compiled by OpenVINO for the CPU (latency hint, torch's threads,
    ``precision``: ``f32``; the benchmark also measures ``bf16``)."""

    def __init__(self, path: Path, precision: str = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        # f32: OpenVINO's CPU default is bf16 where the CPU has it, whose counts would then
        # depend on the machine
        self.model = core.compile_model(str(path), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": _threads(),
            "INFERENCE_PRECISION_HINT": precision})

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(np.asarray(self.model(x)[0]))


def runner(backend: str, net: SegmentationNet, target: Target, channels: int,
           key: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable giving ``net``'s decoded probability maps on ``backend`` (not ``torch``:
    the caller runs the module itself)."""
    path = cached_onnx(net, target, channels, key)
    try:
        return OnnxRuntimeNet(path) if backend == "onnxruntime" else OpenVinoNet(path)
    except Exception as err:  # a cache file another version or a crash left unreadable
        log.warning("%s: unreadable (%s); exporting again", path, err)
        path.unlink(missing_ok=True)
        path = cached_onnx(net, target, channels, key)
        return OnnxRuntimeNet(path) if backend == "onnxruntime" else OpenVinoNet(path)
