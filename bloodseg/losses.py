"""Training losses. Each is a Hydra config in ``conf/loss/`` (``loss=bce|dice|bce_dice``);
the library ones come from ``segmentation_models_pytorch.losses``.

    >>> criterion = build_loss("bce_dice")                 # by name: conf/loss/bce_dice.yaml
    >>> criterion = build_loss({"_target_": "segmentation_models_pytorch.losses.DiceLoss",
    ...                         "mode": "binary"})         # or any config
"""

from __future__ import annotations

from typing import Any

import torch
from hydra.utils import instantiate
from segmentation_models_pytorch.losses import DiceLoss, SoftBCEWithLogitsLoss
from torch import nn

from bloodseg.config import group_config


class BCEDiceLoss(nn.Module):
    """BCE + soft Dice: BCE for per-pixel calibration, Dice against the class imbalance."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = SoftBCEWithLogitsLoss()
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, target) + self.dice(logits, target)


def build_loss(spec: str | dict[str, Any]) -> nn.Module:
    """A loss from its ``conf/loss`` name or from a Hydra config (``_target_`` + kwargs)."""
    config = group_config("loss", spec) if isinstance(spec, str) else dict(spec)
    return instantiate(config)
