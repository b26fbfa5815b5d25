"""Reading checkpoints safely: weights and plain data only, never code.

``torch.load(weights_only=True)`` unpickles tensors and plain containers/numbers/strings
only, so a booby-trapped ``.ckpt`` cannot run anything; bloodseg's own checkpoints hold
nothing else (configs are saved as plain dicts). Every failure names the file.

    >>> ckpt = load_checkpoint("run/checkpoints/best.ckpt")   # dict

What the dict may hold is checked by :mod:`bloodseg.spec`; nothing ever rewrites a checkpoint
(tuned post-processing goes beside it, ``postprocess.json``).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

HINT = ("pass ckpt_path=<run>/checkpoints/best.ckpt (written by bloodseg-train) or "
        "weights=<name> (python -m bloodseg.weights lists them)")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what to pass instead."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; {HINT}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" in str(err) or "Unsupported global" in str(err):  # a class/function
            raise CheckpointError(
                f"{path}: refused: this file holds Python objects other than weights and plain "
                "data, and loading them could run code. bloodseg checkpoints never do; "
                f"{HINT}") from None
        raise CheckpointError(
            f"{path}: not a PyTorch/bloodseg checkpoint or truncated ({err}); {HINT}") from None
    except Exception as err:  # torch's legacy reader fails with EOF/Key/Runtime/zip errors alike
        raise CheckpointError(
            f"{path}: not a PyTorch/bloodseg checkpoint or truncated "
            f"({type(err).__name__}: {err}); {HINT}") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a bloodseg checkpoint (a {type(ckpt).__name__}, "
                              f"not a dict); {HINT}")
    return ckpt
