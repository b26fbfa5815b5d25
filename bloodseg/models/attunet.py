"""Attention U-Net (Oktay et al. 2018, "Attention U-Net: Learning where to look for the pancreas").

Written by hand because smp has no attention gates (its ``decoder_attention_type="scse"`` is
channel/spatial squeeze-excitation, not a gated skip). The backbone is :class:`~.unet.UNet`'s
(4 levels, ``base_channels * (1..16)``, BN after every conv, transposed-conv upsampling); each
skip connection passes through an additive attention gate before concatenation:

    q   = ReLU(W_x * x + W_g * g)           W_x: 2x2 stride-2 conv, W_g: 1x1 conv
    a   = sigmoid(psi * q)                  psi: 1x1 conv to one channel
    out = BN(W * (upsample(a) . x))         W: 1x1 conv

where ``x`` is the encoder skip and ``g`` (the gating signal) is the decoder feature of the next
coarser level, i.e. the level being upsampled -- as in the paper and its reference code
(``GridAttentionBlock2D``, mode "concatenation"), with intermediate width ``C_x // 2``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bloodseg.models.common import DoubleConv, SegmentationNet, encode, init_weights
from bloodseg.models.unet import DEPTH, build_encoder


class AttentionGate(nn.Module):
    """Additive attention gate: weights skip ``x`` by a coefficient map computed from ``x, g``."""

    def __init__(self, skip_channels: int, gate_channels: int, inter_channels: int) -> None:
        super().__init__()
        # W_x downsamples x to g's grid so the sum is computed at the coarse (cheap) resolution
        self.theta_x = nn.Conv2d(skip_channels, inter_channels, 2, stride=2, bias=False)
        self.phi_g = nn.Conv2d(gate_channels, inter_channels, 1)
        self.psi = nn.Conv2d(inter_channels, 1, 1)
        self.out = nn.Sequential(
            nn.Conv2d(skip_channels, skip_channels, 1), nn.BatchNorm2d(skip_channels)
        )

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return self.out(x * self._alpha(x, g))

    def _alpha(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        theta = self.theta_x(x)
        phi = F.interpolate(self.phi_g(g), size=theta.shape[-2:], mode="bilinear")
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        return F.interpolate(alpha, size=x.shape[-2:], mode="bilinear")

    @torch.no_grad()
    def coefficients(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The attention map ``alpha`` (B, 1, H_x, W_x) in [0, 1], for visualisation."""
        return self._alpha(x, g)


class AttentionUNet(SegmentationNet):
    """Attention U-Net; ``AttentionUNet(in_channels=3, classes=1, base_channels=64)``."""

    def __init__(self, in_channels: int = 3, classes: int = 1, base_channels: int = 64) -> None:
        super().__init__(in_channels, classes, size_divisor=2**DEPTH)
        widths = build_encoder(self, in_channels, base_channels)
        levels = list(reversed(range(DEPTH)))  # decoder runs coarse -> fine
        self.gates = nn.ModuleList(
            AttentionGate(widths[i], widths[i + 1], max(widths[i] // 2, 1)) for i in levels
        )
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2) for i in levels
        )
        self.fuse = nn.ModuleList(DoubleConv(2 * widths[i], widths[i]) for i in levels)
        self.head = nn.Conv2d(widths[0], classes, kernel_size=1)
        init_weights(self)

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        x, skips = encode(x, self.stem, self.down, self.pool)
        stages = zip(self.gates, self.up, self.fuse, reversed(skips), strict=True)
        for gate, up, fuse, skip in stages:
            x = fuse(torch.cat([gate(skip, x), up(x)], dim=1))  # x is the gating signal
        return self.head(x)
