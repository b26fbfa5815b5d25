"""The original U-Net (Ronneberger et al., MICCAI 2015), trained from scratch.

Written by hand because smp has no encoder-less, from-scratch U-Net. Follows the paper --
4 max-pool downsamplings, widths ``base_channels * (1, 2, 4, 8, 16)`` (64..1024 by default),
2x2 transposed-conv upsampling that halves the width, skip concatenation, 1x1 output conv --
with two deliberate, common deviations:

* 3x3 convs use 'same' padding (the paper used unpadded convs and cropped the skips), so the
  output has the input's size without the overlap-tile strategy;
* each conv is followed by BatchNorm before the ReLU (the paper predates BatchNorm), which makes
  training from scratch on a few hundred images far less sensitive to the learning rate.

Inputs are padded to a multiple of 16 and cropped back (see :class:`SegmentationNet`).
"""

from __future__ import annotations

import torch
from torch import nn

from bloodseg.models.common import DoubleConv, SegmentationNet, encode, init_weights

DEPTH = 4  # number of 2x downsamplings, as in the paper


def build_encoder(net: nn.Module, in_channels: int, base_channels: int) -> list[int]:
    """The U-Net encoder (stem, pool, down blocks) as attributes of ``net``; returns the widths.
    Shared with the Attention U-Net, whose backbone this is."""
    widths = [base_channels * 2**i for i in range(DEPTH + 1)]
    net.base_channels = base_channels
    net.stem = DoubleConv(in_channels, widths[0])
    net.pool = nn.MaxPool2d(2)
    net.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(DEPTH))
    return widths


class UNet(SegmentationNet):
    """U-Net; ``UNet(in_channels=3, classes=1, base_channels=64)`` has ~31.0M parameters."""

    def __init__(self, in_channels: int = 3, classes: int = 1, base_channels: int = 64) -> None:
        super().__init__(in_channels, classes, size_divisor=2**DEPTH)
        widths = build_encoder(self, in_channels, base_channels)
        # decoder runs coarse -> fine: up[i] maps widths[i+1] -> widths[i], then fuses the skip
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2)
            for i in reversed(range(DEPTH))
        )
        self.fuse = nn.ModuleList(
            DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(DEPTH))
        )
        self.head = nn.Conv2d(widths[0], classes, kernel_size=1)
        init_weights(self)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(x, self.stem, self.down, self.pool)
        for up, fuse, skip in zip(self.up, self.fuse, reversed(skips), strict=True):
            x = fuse(torch.cat([skip, up(x)], dim=1))
        return self.head(x)
