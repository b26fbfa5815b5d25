"""Model files: checkpoints, weights bundles and ``postprocess.json``: read, checked, written.

Everything bloodseg reads from or writes to a model file goes through here:

- a checkpoint or bundle is read with ``torch.load(weights_only=True)`` (tensors and plain
  data only: a booby-trapped file cannot run code), its spec validated (:mod:`bloodseg.spec`)
  before anything is built, and its network weights loaded (:func:`load_model`);
- a bundle (:func:`save_bundle`) is the weights (float16) and the spec in one file, what
  ``weights=<name>`` ships;
- ``postprocess.json`` (:func:`write_tuned`, :func:`read_tuned`) is the post-processing chosen
  by tuning, kept beside the weights and tied to them by their sha256, never written into
  a checkpoint (StarDist's ``thresholds.json``).

    >>> spec, net = load_model("run/checkpoints/best.ckpt")    # or a bundle
    >>> pp = read_tuned("run/checkpoints/best.ckpt")           # Postprocess or None
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bloodseg import rundir
from bloodseg.io import CheckpointError, write_bytes_atomic, write_text_atomic
from bloodseg.spec import SPEC_KEY, ModelSpec, Postprocess, SpecError, spec_of_checkpoint

if TYPE_CHECKING:  # torch loads only to read or write a model file's weights (start-up)
    import torch

log = logging.getLogger(__name__)

__all__ = ["BUNDLE_FORMAT", "CheckpointError", "HINT", "TUNED_FILE", "check_ensemble",
           "check_model_file", "file_sha256", "load_checkpoint", "load_model", "model_file",
           "model_files", "network_state", "read_tuned", "save_bundle", "tuned_path",
           "write_tuned"]

HINT = ("pass ckpt_path=<run>/checkpoints/best.ckpt (written by bloodseg-train) or "
        "weights=<name> (bloodseg-weights lists them)")
BUNDLE_FORMAT = "bloodseg-model"
TUNED_FORMAT = "bloodseg-postprocess"
TUNED_FILE = rundir.TUNED


# -- reading a file safely -------------------------------------------------------------------

def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {HINT}")
    import torch

    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "Unsupported global" in str(err):  # a class/function
            raise CheckpointError(
                f"{path}: refused: this file holds Python objects other than weights and plain "
                "data, and loading them could run code. bloodseg checkpoints never do; "
                f"{HINT}") from None
        raise CheckpointError(
            f"{path}: not a bloodseg model file (not a PyTorch file, or truncated); {HINT}"
        ) from None
    except Exception:  # torch's legacy reader fails with EOF/Key/Runtime/zip errors alike;
        # its message is a paragraph of advice (weights_only=False) that must not be followed
        raise CheckpointError(
            f"{path}: not a bloodseg model file (not a PyTorch file, or truncated); {HINT}"
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a bloodseg model file (a {type(ckpt).__name__}, "
                              f"not a dict); {HINT}")
    return ckpt


# -- model files -----------------------------------------------------------------------------


def network_state(ckpt: Mapping, source: str) -> dict[str, torch.Tensor]:
    """The network's weights of a Lightning checkpoint (``net.*``) or a bundle."""
    if ckpt.get("format") == BUNDLE_FORMAT:
        state = ckpt.get("weights")
    else:
        state = {k[len("net."):]: v for k, v in (ckpt.get("state_dict") or {}).items()
                 if k.startswith("net.")}
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError(f"{source}: holds no network weights; {HINT}")
    # torch.compile wraps the network: its keys carry an _orig_mod. prefix
    return {k.replace("_orig_mod.", "", 1): v for k, v in state.items()}


def load_model(path: str | Path, map_location: str | torch.device = "cpu"
               ) -> tuple[ModelSpec, torch.nn.Module]:
    """The validated spec and the network with its weights (eval mode, float32)."""
    path = Path(path)
    ckpt = load_checkpoint(path, map_location)
    spec = spec_of_checkpoint(ckpt, str(path))
    net = spec.network.build(pretrained=False)  # the weights come from the file
    state = network_state(ckpt, str(path))
    try:
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its weights do not fit its network "
                              f"{spec.network.name} {spec.network.kwargs}: {err}") from None
    return spec, net.eval()


def check_model_file(path: str | Path) -> ModelSpec:
    """Refuse a checkpoint whose stored content is not a valid bloodseg model (e.g. before a
    resume hands it to Lightning); returns its spec."""
    path = Path(path)
    return spec_of_checkpoint(load_checkpoint(path), str(path))


def save_bundle(path: str | Path, spec: ModelSpec, state: Mapping[str, torch.Tensor],
                half: bool = True) -> Path:
    """A weights-only model file: the spec (with its post-processing) and the network's
    weights (float16 by default: half the size, the same counts)."""
    import io

    import torch

    weights = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
               for k, v in state.items()}
    buf = io.BytesIO()
    torch.save({"format": BUNDLE_FORMAT, SPEC_KEY: spec.to_dict(), "weights": weights}, buf)
    return write_bytes_atomic(path, buf.getvalue())


def write_calibrated(path: str | Path, calibration: Any, out: str | Path | None = None) -> Path:
    """The model file ``path`` with its spec's ``trust`` set to ``calibration`` (a
    :class:`bloodseg.trust.Trust`), written atomically to ``out`` (default: in place); the
    weights and everything else in the file are kept as they are."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    spec = spec_of_checkpoint(ckpt, str(path)).replace(trust=calibration)
    import io

    import torch

    buf = io.BytesIO()
    torch.save({**ckpt, SPEC_KEY: spec.to_dict()}, buf)
    return write_bytes_atomic(out or path, buf.getvalue())


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_file(ckpt_path: str | Path | None = None, weights: str | None = None) -> Path:
    """The model file of ``ckpt_path=<file>`` or ``weights=<shipped name>`` (exactly one)."""
    if bool(ckpt_path) == bool(weights):
        raise CheckpointError("pass exactly one of ckpt_path=<checkpoint or bundle file> and "
                              "weights=<name> (bloodseg-weights lists the shipped models)"
                              "")
    if weights:
        from bloodseg.weights import weights_path

        return weights_path(str(weights))
    return Path(str(ckpt_path))


def model_files(ckpt_path: Any = None, weights: Any = None) -> list[Path]:
    """The model file(s) of ``ckpt_path=`` / ``weights=``: one, or a list for an ensemble
    (``ckpt_path=[a.ckpt,b.ckpt]``, ``weights=[x,y]``)."""
    def many(v: Any) -> bool:
        return isinstance(v, Sequence) and not isinstance(v, str | bytes)

    if many(ckpt_path) or many(weights):
        if ckpt_path and weights:
            model_file(ckpt_path, weights)  # raises: exactly one of the two
        items = list(ckpt_path if many(ckpt_path) else weights)
        if not items:
            raise CheckpointError("an empty list of model files; pass ckpt_path=<file> or "
                                  "ckpt_path=[a.ckpt,b.ckpt]")
        return [model_file(None, v) if many(weights) else model_file(v, None) for v in items]
    return [model_file(ckpt_path, weights)]






# -- postprocess.json: the tuned post-processing beside the weights ------------------------


def tuned_path(weights: str | Path) -> Path:
    """Where the tuned post-processing of ``weights`` lives: the run folder of
    ``<run>/checkpoints/x.ckpt``, else the weights' own folder."""
    folder = Path(weights).resolve().parent
    return (folder.parent if folder.name == "checkpoints" else folder) / TUNED_FILE


def write_tuned(weights: str | Path, postprocess: Postprocess, tuning: dict,
                out: str | Path | None = None) -> Path:
    """``postprocess.json``: the chosen post-processing, tied to ``weights`` by its sha256."""
    weights = Path(weights)
    out = Path(out) if out is not None else tuned_path(weights)
    record = {"format": TUNED_FORMAT, "version": 1,
              "weights": {"name": weights.name, "sha256": file_sha256(weights)},
              "postprocess": {"name": postprocess.name, "fields": postprocess.fields},
              "tuning": tuning}
    return write_text_atomic(out, json.dumps(record, indent=2, default=float))


def read_tuned(weights: str | Path, path: str | Path | None = None) -> Postprocess | None:
    """The tuned post-processing of ``weights`` (validated like a spec), or None when there is
    none or it was tuned for other weights (logged: a stale file must not apply silently)."""
    explicit = path is not None
    path = Path(path) if explicit else tuned_path(weights)
    if not path.is_file():
        if explicit:
            raise SpecError(f"{path}: no such file; pass postprocess_file=<run>/{TUNED_FILE}")
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SpecError(f"{path}: not a bloodseg {TUNED_FILE} ({err}); delete it and re-run "
                        "bloodseg-tune") from None
    if not isinstance(record, dict) or record.get("format") != TUNED_FORMAT:
        raise SpecError(f"{path}: not a bloodseg {TUNED_FILE}; delete it and re-run "
                        "bloodseg-tune")
    want = (record.get("weights") or {}).get("sha256")
    if want != file_sha256(weights):
        msg = (f"{path} was tuned for other weights than {weights} (sha256 differs); "
               "not used. Re-run bloodseg-tune for these weights")
        if explicit:
            raise SpecError(msg)
        log.warning(msg)
        return None
    return Postprocess.from_dict(record.get("postprocess"), str(path))

def check_ensemble(first: ModelSpec, other: ModelSpec, first_path: Path, path: Path) -> None:
    """Refuse ensemble members that would see or mean different things: averaging maps is
    only sound for one target, one preprocessing (the post-processing comes from the first)."""
    for what in ("target", "preprocess"):
        a, b = getattr(first, what).to_dict(), getattr(other, what).to_dict()
        if a != b:
            raise SpecError(f"{path}: its {what} {b} differs from {first_path}'s {a}; an "
                            "ensemble averages networks trained for the same target on the "
                            "same preprocessing (train the members with one recipe)")
