"""Exporting a trained model: ONNX or TorchScript files for other runtimes, or a bloodseg bundle.

:func:`export_model` writes one file per :data:`FORMATS` entry (ONNX and TorchScript with their
``<output>.json`` description: how to prepare an image, what the output channels are, the full
model spec), each checked against PyTorch before it is kept; ``bloodseg-export``
(:mod:`bloodseg.export`, the command) documents the formats for users.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

import bloodseg
from bloodseg.graph import ProbabilityNet, example_input, max_difference, onnx_model
from bloodseg.inference import Predictor
from bloodseg.io import CheckpointError, write_bytes_atomic, write_text_atomic
from bloodseg.modelfile import file_sha256, model_file, save_bundle
from bloodseg.runtimes import INPUT, OUTPUT, TOLERANCE, RuntimeFailure
from bloodseg.spec import ModelSpec
from bloodseg.transforms import MEAN, STD

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript", "bundle")
EXPORT_FORMAT = "bloodseg-export"  # the ``format`` of an ``<output>.json`` description
#: the packages format=onnx needs (dependencies of bloodseg; a trimmed install may lack them)
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class ExportError(ValueError):
    """An export that cannot be done as asked; the message says what to pass or install."""


# -- the description ------------------------------------------------------------------------


def network_input(predictor: Predictor, image: np.ndarray) -> np.ndarray:
    """(C, h, w) float32: ``image`` as the exported network takes it
    (:meth:`Predictor.network_input`)."""
    return predictor.network_input(image)


def describe(spec: ModelSpec, model_format: str, size_divisor: int, source: Path) -> dict:
    """The ``<output>.json`` of an ONNX or TorchScript export: its input, output and spec."""
    pre = spec.preprocess
    size = ({"scale": pre.scale} if pre.scale else
            {"height": pre.image_size[0], "width": pre.image_size[1]})
    return {
        "format": EXPORT_FORMAT, "version": 1, "model_format": model_format,
        "bloodseg_version": bloodseg.__version__,
        "source": {"name": source.name, "sha256": file_sha256(source)},
        "input": {
            "name": INPUT, "shape": ["batch", pre.channels, "height", "width"],
            "dtype": "float32", "color": pre.color, "contrast": pre.contrast, "size": size,
            "mean": list(MEAN[pre.color]), "std": list(STD[pre.color]),
            "min_size": size_divisor,
            "steps": [
                f"read the image as RGB uint8 and convert it to {pre.color}",
                "contrast: none, or percentile = stretch each channel's 1st..99.8th "
                f"percentile to 0..255 on the whole image (here: {pre.contrast})",
                ("scale the image by size.scale, keeping the aspect (cv2.INTER_AREA when "
                 "shrinking)" if pre.scale else "resize the image to size.height x "
                 "size.width (cv2.INTER_AREA when shrinking)"),
                "divide by 255, subtract mean, divide by std (per channel); CHW layout",
            ],
        },
        "output": {
            "name": OUTPUT, "shape": ["batch", spec.target.channels, "height", "width"],
            "dtype": "float32", "channels": list(spec.target.channel_names),
            "then": "resize the maps bilinearly to the image's size, then post-process "
                    "them with spec.postprocess (bloodseg.spec.Postprocess.build())",
        },
        "spec": spec.to_dict(),
    }


# -- the formats -----------------------------------------------------------------------------


def require(packages: tuple[str, ...], fmt: str) -> None:
    """Import ``packages`` or say which are missing and how to install them."""
    missing = []
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"format={fmt} needs {', '.join(missing)} (not installed): "
                          f"pip install {' '.join(missing)}")


def check_same(name: str, got: np.ndarray, want: torch.Tensor) -> float:
    diff = max_difference(got, want)
    if not diff <= TOLERANCE:
        raise ExportError(f"{name}: the exported model differs from PyTorch by {diff:.3g} "
                          f"(> {TOLERANCE}) on a check input; not kept. Please report it with "
                          "the model's network name")
    return diff


def onnx_bytes(module: ProbabilityNet, channels: int, record: dict, opset: int | None,
               out: Path) -> bytes:
    """The ONNX model of ``module`` with dynamic batch, height and width, its description in
    ``metadata_props``, checked with onnxruntime against PyTorch at another size."""
    doc = (f"bloodseg {record['spec']['network']['name']}: {INPUT} (normalised float32 NCHW) "
           f"-> {OUTPUT}; metadata 'bloodseg' says how to prepare images and post-process the "
           "maps")
    try:
        return onnx_model(module, channels, {"bloodseg": json.dumps(record)}, doc, opset)
    except RuntimeFailure as err:
        raise ExportError(f"{out}: {err}; not kept. Please report it with the model's network "
                          "name") from None


def torchscript_bytes(module: ProbabilityNet, channels: int, record: dict, out: Path) -> bytes:
    """The traced module (padding scripted, so any size runs), its description inside as
    ``bloodseg.json``; loaded back and checked against PyTorch at another size."""
    d = module.size_divisor
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # one deprecation warning per torch.jit call; the module docstring says it once
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        traced = torch.jit.trace(module, example_input(channels, d))
        torch.jit.save(traced, buf, _extra_files={"bloodseg.json": json.dumps(record)})
        loaded = torch.jit.load(io.BytesIO(buf.getvalue()))
        x = example_input(channels, d, batch=1, extra=5)
        check_same(str(out), loaded(x).numpy(), module(x))
    return buf.getvalue()


def check_output(out: Path, overwrite: bool, also: tuple[Path, ...] = ()) -> None:
    """Refuse to replace files unless ``overwrite``, and a folder in any case."""
    for path in (out, *also):
        if path.is_dir():
            raise ExportError(f"output={out}: {path} is a folder; pass output=<file>")
        if path.exists() and not overwrite:
            raise ExportError(f"{path} exists; pass overwrite=true to replace it, or another "
                              "output=")


def sidecar(out: Path) -> Path:
    """``<output>.json``: the description of an ONNX or TorchScript export."""
    return out.with_name(out.name + ".json")


def export_model(path: str | Path, fmt: str, output: str | Path, overwrite: bool = False,
                 postprocess_file: str | Path | None = None, opset: int | None = None) -> Path:
    """Export the checkpoint or bundle ``path`` as ``fmt`` (:data:`FORMATS`) to ``output``;
    ONNX and TorchScript also get ``<output>.json``. Returns ``output``."""
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt}: unknown; valid: {', '.join(FORMATS)}")
    path, out = Path(path), Path(output)
    check_output(out, overwrite, () if fmt == "bundle" else (sidecar(out),))
    if fmt == "onnx":
        require(ONNX_PACKAGES, fmt)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file; pass ckpt_path=<checkpoint or "
                              "bundle> or weights=<shipped name>")
    predictor = Predictor.load(path, postprocess_file=postprocess_file, device="cpu")
    spec = predictor.spec
    if fmt == "bundle":
        return save_bundle(out, spec, predictor.net.state_dict())
    module = ProbabilityNet(predictor.net, spec.target).eval()
    record = describe(spec, fmt, module.size_divisor, path)
    channels = spec.preprocess.channels
    data = (onnx_bytes(module, channels, record, opset, out) if fmt == "onnx" else
            torchscript_bytes(module, channels, record, out))
    write_bytes_atomic(out, data)
    write_text_atomic(sidecar(out), json.dumps(record, indent=2) + "\n")
    return out


# -- from a config (bloodseg-export) ---------------------------------------------------------


def export(cfg: DictConfig) -> Path:
    path = model_file(cfg.get("ckpt_path"), cfg.get("weights"))
    out = export_model(path, str(cfg.format), cfg.output, overwrite=bool(cfg.overwrite),
                       postprocess_file=cfg.get("postprocess_file"), opset=cfg.get("opset"))
    size = out.stat().st_size / 1e6
    extra = "" if cfg.format == "bundle" else f" (+ {sidecar(out).name})"
    print(f"wrote {out} ({cfg.format}, {size:.1f} MB){extra} from {path}")
    return out
