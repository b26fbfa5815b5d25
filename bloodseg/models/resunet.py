"""Deep Residual U-Net (Zhang, Liu & Wang 2018, "Road extraction by deep residual U-Net").

Written by hand because smp has no pre-activation residual units. As in the paper:

* every stage is a pre-activation residual unit, BN-ReLU-Conv3x3 twice, added to a projection
  shortcut (1x1 conv + BN, needed because the width changes); the very first unit starts with a
  plain conv because its input is the raw image (paper Fig. 2);
* downsampling is the stride-2 first conv of a unit (no pooling);
* the decoder upsamples 2x (parameter-free nearest neighbour), concatenates the encoder skip and
  applies a residual unit; a 1x1 conv gives the logits.

``depth`` counts the stride-2 stages: the paper's 3 gives widths 64-128-256 and a 512 bridge
(``base_channels=64``), ~8.2M parameters. Inputs are padded to a multiple of ``2**depth``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bloodseg.models.common import SegmentationNet, encode, init_weights


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    # no bias: every conv here is followed (possibly after the residual add) by a BatchNorm
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


class ResidualUnit(nn.Module):
    """Pre-activation residual unit: (BN-ReLU-Conv3x3) x2 + (Conv1x1-BN) shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int = 1, preactivate: bool = True
    ) -> None:
        super().__init__()
        pre: list[nn.Module] = (
            [nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True)] if preactivate else []
        )
        self.body = nn.Sequential(
            *pre,
            _conv3x3(in_channels, out_channels, stride),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            _conv3x3(out_channels, out_channels),
        )
        self.shortcut = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class ResUNet(SegmentationNet):
    """Residual U-Net; ``ResUNet(in_channels=3, classes=1, base_channels=64, depth=3)``."""

    def __init__(
        self, in_channels: int = 3, classes: int = 1, base_channels: int = 64, depth: int = 3
    ) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        super().__init__(in_channels, classes, size_divisor=2**depth)
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.base_channels = base_channels
        self.depth = depth

        self.stem = ResidualUnit(in_channels, widths[0], preactivate=False)
        # the last of these is the paper's "bridge"
        self.down = nn.ModuleList(
            ResidualUnit(widths[i], widths[i + 1], stride=2) for i in range(depth)
        )
        self.fuse = nn.ModuleList(
            ResidualUnit(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], classes, kernel_size=1)
        init_weights(self)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(x, self.stem, self.down)
        for fuse, skip in zip(self.fuse, reversed(skips), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = fuse(torch.cat([x, skip], dim=1))
        return self.head(x)
