"""Networks by name: the registry is ``conf/model/`` (one YAML per network: its ``_target_``
and defaults), read by Hydra runs and by :func:`build_model` alike."""

from __future__ import annotations

from typing import Any

from hydra.utils import get_class, instantiate
from torch import nn

from bloodseg.config import group_config, group_names
from bloodseg.models.common import SegmentationNet


def model_names() -> list[str]:
    """The registered networks: one per ``conf/model/<name>.yaml`` (the only registry)."""
    return group_names("model")


def model_class(name: str) -> type[SegmentationNet]:
    return get_class(group_config("model", name)["_target_"])


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the network of ``conf/model/<name>.yaml``; ``kwargs`` override its values."""
    return instantiate(group_config("model", name, **kwargs))
