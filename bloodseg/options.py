"""The ``predict.*`` options (how a model's network is run), checked before anything loads.

Every command that runs a network (``bloodseg-predict``, ``-evaluate``, ``-tune``, the test and
tune stages of ``train.py``) reads the one block ``conf/predict/default.yaml``; a value outside
its allowed set is one line naming the option, the value and the valid ones, before torch is
imported (:func:`check_predict`).

    >>> check_predict({"mode": "tiles"})
    Traceback (most recent call last):
    OptionError: predict.mode=tiles: not one of auto, whole, tile, resize
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from bloodseg.io import OptionError  # noqa: F401  (raised here; callers catch it from here)

#: predict.mode: as trained | the whole image | overlapping tiles | squashed to the training size
MODES = ("auto", "whole", "tile", "resize")
#: predict.tta: none, the four flips, the eight rotations and flips (D4)
TTA_MODES = ("none", "flips", "d4")
TTA_VALUES = ("false", "true", *TTA_MODES)
#: where the network runs (bloodseg.runtimes): auto = the fastest installed that keeps the counts
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:\d+)?"
#: where instances are found: on the outputs at the image's own size | on the network's maps,
#: labels resized (faster; kept the counts only on smears the network was trained on)
POSTPROCESS_AT = ("native", "network")


def tta_mode(value: Any) -> str:
    """``predict.tta`` as one of :data:`TTA_MODES` (``true`` = ``flips``, ``false`` = ``none``)."""
    if value is None or value is False:
        return "none"
    if value is True:
        return "flips"
    if isinstance(value, str) and value.lower() in TTA_VALUES:
        v = value.lower()
        return {"true": "flips", "false": "none"}.get(v, v)
    raise OptionError(f"predict.tta={value}: not one of {', '.join(TTA_VALUES)}")


def _check(p: Mapping, key: str, ok: Any, expected: str) -> None:
    if key in p and not ok(p[key]):
        raise OptionError(f"predict.{key}={p[key]}: must be {expected}")


def _real(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def check_predict(p: Mapping[str, Any] | None) -> None:
    """Refuse a ``predict`` block with a value outside its allowed set (:class:`OptionError`)."""
    p = p or {}
    mode = p.get("mode", "auto")
    if mode not in MODES:
        raise OptionError(f"predict.mode={mode}: not one of {', '.join(MODES)}")
    tta_mode(p.get("tta", False))
    backend = p.get("backend", "auto")
    if backend not in BACKENDS:
        raise OptionError(f"predict.backend={backend}: not one of {', '.join(BACKENDS)}")
    at = p.get("postprocess_at", "native")
    if at not in POSTPROCESS_AT:
        raise OptionError(f"predict.postprocess_at={at}: not one of {', '.join(POSTPROCESS_AT)}")
    device = str(p.get("device", "auto"))
    if not re.fullmatch(DEVICE_PATTERN, device):
        raise OptionError(f"predict.device={device}: not one of auto, cpu, cuda, cuda:<N>, mps")
    _check(p, "scale", lambda v: v is None or (_real(v) and v > 0), "a number > 0 (or null)")
    _check(p, "overlap", lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")
    _check(p, "prefetch", lambda v: _real(v) and v >= 0 and float(v).is_integer(),
           "an integer >= 0")
    _check(p, "batch_size", lambda v: _real(v) and v >= 1 and float(v).is_integer(),
           "an integer > 0")
