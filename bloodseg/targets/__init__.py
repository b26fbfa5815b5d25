"""What a network learns from instance labels: one module per target, found by name.

``target=<name>`` is ``conf/target/<name>.yaml`` (its fields, as users set them) and the
:class:`~bloodseg.targets.base.Target` subclass of ``bloodseg/targets/<name>.py`` (its
channels, encoding, decoding, foreground, default loss and post-processor):

- ``binary.py``: one foreground channel, the study's (+ the U-Net paper's weight map);
- ``contour.py``: background / interior / border classes;
- ``distance.py``: foreground + each cell's normalised distance to its own boundary;
- ``distance_contour.py``: those two + a border channel (where cells touch), learned jointly.

    >>> target = from_config({"name": "contour", "width": 2})
    >>> arrays = target.encode(instances, mask)   # {"target": int64 HxW} for the loss
    >>> probs = target.decode(logits)              # (B, 3, H, W) softmax

A new target is one module here and one config there, nothing else
(``tests/test_target_contract.py`` holds every pair to the contract). Model files name
targets too: :class:`bloodseg.spec.Target` checks their names against ``conf/target`` and
their fields against the class's annotations before anything is built.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from bloodseg.targets.base import Target
from bloodseg.targets.binary import unet_weight_map
from bloodseg.targets.contour import contour_target
from bloodseg.targets.distance import distance_target

# the encoders are also functions here, for scripts that draw training targets themselves
__all__ = ["Target", "contour_target", "distance_target", "from_config", "names",
           "target_class", "unet_weight_map"]

_NOT_TARGETS = {"base"}


def names() -> list[str]:
    """The target modules of this package (each is one target)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if m.name not in _NOT_TARGETS and not m.name.startswith("_"))


def target_class(name: str) -> type[Target]:
    """The class of target ``name``: the ``Target`` subclass of ``bloodseg/targets/<name>.py``.

    Only this package's own modules are ever imported (``name`` must be one of
    :func:`names`); a model file's name is checked against ``conf/target`` first
    (:class:`bloodseg.spec.Target`).
    """
    valid = names()
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"unknown target {name!r}; valid: {', '.join(valid)}")
    importlib.import_module(f"{__name__}.{name}")  # its class registers itself
    if name not in Target.registry:
        raise TypeError(f"bloodseg/targets/{name}.py defines no Target subclass named {name!r}")
    return Target.registry[name]


def from_config(config: Mapping[str, Any] | None) -> Target:
    """The target of a plain ``conf/target`` config, ``{"name": ..., <field>: value, ...}``
    (``None``: the binary target). A ``channels`` key, as model files write, must be the
    target's."""
    config = dict(config or {})
    cls = target_class(config.pop("name", "binary"))
    channels = config.pop("channels", cls.channels)
    if channels != cls.channels:
        raise ValueError(f"target {cls.name} has {cls.channels} channels, not {channels!r}")
    try:
        return cls(**config)
    except TypeError as err:  # an unknown field
        raise ValueError(f"target {cls.name}: {err}") from None
