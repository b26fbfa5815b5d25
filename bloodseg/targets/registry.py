"""Targets by name: ``target=<name>`` is the :class:`~bloodseg.targets.base.Target` subclass
of ``bloodseg/targets/<name>.py``; only this package's own modules are ever imported."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bloodseg.targets.base import Target

_NOT_TARGETS = {"base", "registry"}


def names() -> list[str]:
    """The target modules of this package (each is one target)."""
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
                  if m.name not in _NOT_TARGETS and not m.name.startswith("_"))


def target_class(name: str) -> type[Target]:
    """The class of target ``name``: the ``Target`` subclass of ``bloodseg/targets/<name>.py``.

    Only this package's own modules are ever imported (``name`` must be one of
    :func:`names`); a model file's name is checked against ``conf/target`` first
    (:func:`bloodseg.spec.target_from_dict`).
    """
    valid = names()
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"unknown target {name!r}; valid: {', '.join(valid)}")
    importlib.import_module(f"bloodseg.targets.{name}")  # its class registers itself
    if name not in Target.registry:
        raise TypeError(f"bloodseg/targets/{name}.py defines no Target subclass named {name!r}")
    return Target.registry[name]


def channel_mismatch(cls: type[Target], channels: Any) -> str | None:
    """Why ``channels`` (what a config or a model file says) is not target ``cls``'s channel
    count, or None: the one channel check of configs and model files."""
    if channels == cls.channels:
        return None
    return f"target {cls.name} has {cls.channels} channels, not {channels!r}"


def from_config(config: Mapping[str, Any] | None) -> Target:
    """The target of a plain ``conf/target`` config, ``{"name": ..., <field>: value, ...}``
    (``None``: the binary target). A ``channels`` key, as model files write, must be the
    target's."""
    config = dict(config or {})
    cls = target_class(config.pop("name", "binary"))
    why = channel_mismatch(cls, config.pop("channels", cls.channels))
    if why:
        raise ValueError(why)
    try:
        return cls(**config)
    except TypeError as err:  # an unknown field
        raise ValueError(f"target {cls.name}: {err}") from None
