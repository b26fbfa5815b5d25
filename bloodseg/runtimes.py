"""Where a network runs: eager PyTorch, or its exported graph in ONNX Runtime or OpenVINO.

``predict.backend`` picks one: ``torch`` (eager), ``onnxruntime`` (the network and its
target's decoding exported to ONNX once, graph optimisations on), ``openvino`` (the same ONNX
graph compiled by OpenVINO, the ``openvino`` extra), or ``auto``: the fastest installed runtime
that keeps the counts on the CPU (ONNX Runtime; ``benchmarks/predict_speed.py`` measures each
and the parity rule, ``docs/inference.md`` has the numbers), PyTorch on a GPU.

An exported graph (:mod:`bloodseg.graph`) is built from the weights the first time, checked
against PyTorch, and cached under the user's cache folder (``$XDG_CACHE_HOME/bloodseg/onnx``,
``~/.cache/...``), keyed by the model file's sha256 and the exporter's versions, never beside
the user's own files; beside it, the model's spec as read from the file (:func:`cached_spec`).

This module never imports torch: with both cached, ``bloodseg-predict`` counts a smear without
loading it (start-up; :meth:`bloodseg.inference.Predictor.load`).

    >>> run = session("onnxruntime", graph_path(file_sha256("count.pt")))
    >>> probs = run(x)                      # (B, C, H, W) float32 probabilities, as decode()
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bloodseg.io import write_text_atomic
from bloodseg.options import BACKENDS, OptionError

log = logging.getLogger(__name__)

#: the Python module each exported-graph backend needs, and how to install it
PACKAGES = {"onnxruntime": ("onnxruntime", "pip install onnxruntime"),
            "openvino": ("openvino", "pip install 'bloodseg[openvino]'")}
#: ``auto`` on a CPU, fastest first; each kept the counts on the 40 shared smears
AUTO_ORDER = ("onnxruntime",)
INPUT, OUTPUT = "image", "probabilities"
#: largest difference to PyTorch an exported graph may show on its check input
TOLERANCE = 1e-4
#: device files of the GPU drivers torch can use (NVIDIA, ROCm, WSL): none, no GPU
GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd",
                    "/dev/dxg")


class RuntimeFailure(RuntimeError):
    """An exported graph that does not give PyTorch's answer; it is never used or kept."""


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


def gpu_possible() -> bool:
    """False when this machine surely has no GPU torch could use (no driver's device file),
    so that ``predict.device=auto`` need not import torch to ask; True where it cannot tell."""
    if sys.platform == "win32":
        return True
    return any(os.path.exists(p) for p in GPU_DEVICE_FILES)


def resolve(backend: str, device: Any) -> str:
    """The backend that runs on ``device`` (a ``torch.device`` or its type, ``"cpu"``):
    ``auto`` = the first of :data:`AUTO_ORDER` that is installed on a CPU, else ``torch``; an
    exported-graph backend asked for by name must be installed and on the CPU."""
    kind = getattr(device, "type", str(device).split(":")[0])
    if backend not in BACKENDS:
        raise OptionError(f"predict.backend={backend}: not one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if kind != "cpu":
            return "torch"
        return next((b for b in AUTO_ORDER if installed(b)), "torch")
    if backend != "torch":
        if kind != "cpu":
            raise OptionError(f"predict.backend={backend} runs on the CPU; with "
                              f"predict.device={device} use predict.backend=torch or auto")
        if not installed(backend):
            module, how = PACKAGES[backend]
            raise OptionError(f"predict.backend={backend} needs {module} (not installed): "
                              f"{how}, or use predict.backend=torch")
    return backend


# -- the cache -------------------------------------------------------------------------------


def cache_dir() -> Path:
    """``$BLOODSEG_CACHE`` or ``$XDG_CACHE_HOME/bloodseg`` (``~/.cache/bloodseg``): the
    user's cache, never a folder of their results or models."""
    base = os.environ.get("BLOODSEG_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bloodseg"


def export_key() -> str:
    """What an exported graph depends on besides the weights: bloodseg's and the exporter's
    versions (read from the installed metadata: importing torch or onnx costs seconds)."""
    from importlib.metadata import version

    import bloodseg
    text = f"{bloodseg.__version__} torch {version('torch')} onnx {version('onnx')}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _stem(key: str) -> Path:
    if not (len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
        raise ValueError(f"cache key {key!r}: expected a model file's sha256")
    return cache_dir() / "onnx" / f"{key}-{export_key()}"


def graph_path(key: str) -> Path:
    """Where the exported graph of the model file whose sha256 is ``key`` is cached."""
    return _stem(key).with_suffix(".onnx")


def remember_spec(key: str, spec: dict) -> None:
    """Keep the spec read (and validated) from the model file ``key`` beside its graph."""
    write_text_atomic(_stem(key).with_suffix(".json"), json.dumps(spec, sort_keys=True))


def cached_spec(key: str) -> dict | None:
    """The spec :func:`remember_spec` kept for ``key`` when its graph is cached too, else
    None (then the model file is read, with torch). The caller validates it as a spec."""
    path = _stem(key).with_suffix(".json")
    if not (path.is_file() and graph_path(key).is_file()):
        return None
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        log.warning("%s: unreadable (%s); reading the model file instead", path, err)
        return None
    return spec if isinstance(spec, dict) else None


# -- sessions --------------------------------------------------------------------------------


def threads() -> int:
    """Threads for a session: torch's where torch is loaded (a caller may have set them),
    else ``OMP_NUM_THREADS`` or the CPUs this process may use, as torch would choose."""
    if "torch" in sys.modules:
        return max(1, sys.modules["torch"].get_num_threads())
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


class OnnxRuntimeNet:
    """Normalised (B, C, H, W) float32 arrays -> probability maps, by ONNX Runtime on the
    CPU."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads()  # as many as torch would use
        options.inter_op_num_threads = 1
        # idle threads sleep instead of spinning: the writer thread post-processes and writes
        # the previous smear on the same cores (bloodseg-predict 12% faster per smear)
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return self.session.run([OUTPUT], {INPUT: x})[0]


class OpenVinoNet:
    """The same ONNX graph compiled by OpenVINO for the CPU (latency hint, torch's threads,
    ``precision``: ``f32``; the benchmark also measures ``bf16``)."""

    def __init__(self, path: Path, precision: str = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        # f32: OpenVINO's CPU default is bf16 where the CPU has it, whose counts would then
        # depend on the machine
        self.model = core.compile_model(str(path), "CPU", {
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads(),
            "INFERENCE_PRECISION_HINT": precision})

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.asarray(self.model(x)[0])


def session(backend: str, path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """``backend``'s session on the graph at ``path`` (raises when it cannot be read)."""
    return OnnxRuntimeNet(path) if backend == "onnxruntime" else OpenVinoNet(path)
