"""Training losses. Each is a Hydra config in ``conf/loss/`` (``loss=bce|dice|bce_dice``);
the library ones come from ``segmentation_models_pytorch.losses``.

    >>> criterion = build_loss("bce_dice")                 # by name: conf/loss/bce_dice.yaml
    >>> criterion = build_loss({"_target_": "segmentation_models_pytorch.losses.DiceLoss",
    ...                         "mode": "binary"})         # or any config
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
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


class ContourLoss(nn.Module):
    """``target=contour``: cross-entropy over background / interior / border (border weighted
    up: it is thin and it is what separates cells) + multiclass soft Dice (smp)."""

    def __init__(self, border_weight: float = 3.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("class_weight", torch.tensor([1.0, 1.0, float(border_weight)]))
        self.dice = DiceLoss(mode="multiclass", from_logits=True)
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target, weight=self.class_weight)
        return ce + self.dice_weight * self.dice(logits, target)


class DistanceLoss(nn.Module):
    """``target=distance``: BCE on the foreground logit + L1 between the sigmoid of the
    distance logit and the normalised per-cell distance, inside cells only."""

    def __init__(self, distance_weight: float = 1.0) -> None:
        super().__init__()
        self.distance_weight = distance_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        fg, dist = target[:, :1], target[:, 1:]
        bce = F.binary_cross_entropy_with_logits(logits[:, :1].float(), fg)
        inside = fg.sum().clamp(min=1.0)
        l1 = ((torch.sigmoid(logits[:, 1:].float()) - dist).abs() * fg).sum() / inside
        return bce + self.distance_weight * l1


class DistanceContourLoss(DistanceLoss):
    """``target=distance_contour``: :class:`DistanceLoss` on (foreground, distance) +
    ``border_weight`` x (BCE + soft Dice) on the border channel (Dice because borders are a
    few per cent of the pixels, as for ``loss=contour``)."""

    def __init__(self, distance_weight: float = 1.0, border_weight: float = 1.0) -> None:
        super().__init__(distance_weight)
        self.border_weight = border_weight
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        border_logit, border = logits[:, 2:].float(), target[:, 2:]
        border_loss = (F.binary_cross_entropy_with_logits(border_logit, border)
                       + self.dice(border_logit, border))
        return super().forward(logits[:, :2], target[:, :2]) + self.border_weight * border_loss


class WeightedBCELoss(nn.Module):
    """BCE with a per-pixel weight map (``target.weight_map=unet``: the U-Net paper's)."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor,
                weight: torch.Tensor | None = None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), target, weight=weight)
