"""What an exported-graph backend runs: a network and its target's decoding as one ONNX graph
(:class:`ProbabilityNet`), exported, checked against PyTorch and cached by the model file's
sha256 (:func:`cached_onnx`, in :func:`bloodseg.runtimes.graph_path`), and the session that
runs it (:func:`runner`). ``bloodseg-export format=onnx`` writes the same module.

This half needs torch (it traces the network); :mod:`bloodseg.runtimes` runs a cached graph
without it.

    >>> run = runner("onnxruntime", net, target, channels=1, key=file_sha256("count.pt"))
    >>> probs = run(x)                      # (B, C, H, W) float32 probabilities, as decode()
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bloodseg.io import write_bytes_atomic
from bloodseg.models.common import SegmentationNet
from bloodseg.runtimes import INPUT, OUTPUT, TOLERANCE, RuntimeFailure, graph_path, session
from bloodseg.targets import Target

log = logging.getLogger(__name__)


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



# -- the cache -------------------------------------------------------------------------------


def cached_onnx(net: SegmentationNet, target: Target, channels: int, key: str) -> Path:
    """The ONNX file of ``net`` + ``target``'s decoding for the model file whose sha256 is
    ``key``: read from the cache, or exported, checked and written there atomically."""
    path = graph_path(key)
    if path.is_file():
        return path
    log.info("exporting the network to ONNX once (cached as %s)", path)
    module = ProbabilityNet(net, target).eval()
    data = onnx_model(module, channels, {"bloodseg_weights_sha256": key},
                      doc="bloodseg predict.backend cache")
    write_bytes_atomic(path, data)
    return path


def runner(backend: str, net: SegmentationNet, target: Target, channels: int,
           key: str) -> Callable[[np.ndarray], np.ndarray]:
    """A callable giving ``net``'s decoded probability maps on ``backend`` (not ``torch``:
    the caller runs the module itself); a cache file that cannot be read is exported again."""
    path = cached_onnx(net, target, channels, key)
    try:
        return session(backend, path)
    except Exception as err:  # a cache file another version or a crash left unreadable
        log.warning("%s: unreadable (%s); exporting again", path, err)
        path.unlink(missing_ok=True)
        return session(backend, cached_onnx(net, target, channels, key))
