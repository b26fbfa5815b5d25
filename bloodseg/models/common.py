"""Pieces shared by all segmentation networks in :mod:`bloodseg.models`.

* :class:`SegmentationNet` -- base class every network derives from. Its ``forward`` pads the
  input so H and W are multiples of the network's ``size_divisor`` (reflect padding, split evenly
  between both sides), runs :meth:`SegmentationNet.forward_padded`, and crops the logits back to
  the input size. Any image size is therefore accepted, never rejected.
* :func:`pad_to_multiple` / :func:`crop_padding` -- the same padding as free functions, for
  callers (e.g. tiled inference) that need it outside a network.
* :class:`ConvBNReLU` / :class:`DoubleConv` -- the 3x3 conv blocks shared by the hand-written
  U-Net and Attention U-Net.
* :func:`init_weights` -- He initialisation for the hand-written networks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Padding = tuple[int, int, int, int]  # (left, right, top, bottom), the order F.pad expects


def pad_to_multiple(
    x: torch.Tensor, multiple: int, mode: str = "reflect"
) -> tuple[torch.Tensor, Padding]:
    """Pad the last two dims of ``x`` up to multiples of ``multiple``.

    The padding is split evenly between both sides (the extra pixel goes right/bottom) so the
    image content stays centred. ``mode`` is an ``F.pad`` mode; ``"reflect"`` falls back to
    ``"replicate"`` when the input is too small to reflect (reflect needs pad < size).
    Returns the padded tensor and the padding to hand to :func:`crop_padding`.
    """
    h, w = x.shape[-2:]
    pad_h = (-h) % multiple
    pad_w = (-w) % multiple
    padding: Padding = (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2)
    if pad_h == 0 and pad_w == 0:
        return x, padding
    if mode == "reflect" and (max(padding[:2]) >= w or max(padding[2:]) >= h):
        mode = "replicate"
    return F.pad(x, padding, mode=mode), padding


def crop_padding(x: torch.Tensor, padding: Padding) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on a tensor with the padded spatial size."""
    left, right, top, bottom = padding
    if not any(padding):
        return x
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


class SegmentationNet(nn.Module):
    """Base class: logits ``(B, classes, H, W)`` for inputs ``(B, in_channels, H, W)``, any H, W.

    Subclasses implement :meth:`forward_padded`, which only ever sees H, W divisible by
    ``size_divisor`` (2**number of 2x downsamplings), so skip connections always line up.
    """

    pad_mode: str = "reflect"  # reflect rather than zeros: no artificial dark border for BN/convs

    def __init__(self, in_channels: int, classes: int, size_divisor: int) -> None:
        super().__init__()
        if in_channels < 1 or classes < 1:
            raise ValueError(f"in_channels and classes must be >= 1, got {in_channels}, {classes}")
        self.in_channels = in_channels
        self.classes = classes
        self.size_divisor = size_divisor

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, padding = pad_to_multiple(x, self.size_divisor, self.pad_mode)
        return crop_padding(self.forward_padded(x), padding)

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class ConvBNReLU(nn.Sequential):
    """3x3 conv (no bias: BatchNorm follows) -> BatchNorm -> ReLU, 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """The U-Net stage: two :class:`ConvBNReLU`."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBNReLU(in_channels, out_channels), ConvBNReLU(out_channels, out_channels)
        )


def init_weights(module: nn.Module) -> None:
    """He-normal convs (Ronneberger et al. recommend it for ReLU nets), BN to identity."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def encode(x: torch.Tensor, stem: nn.Module, down: nn.ModuleList,
           pool: nn.Module | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Run a U-shaped encoder: ``stem``, then each ``down`` block (after ``pool`` if given).

    Returns the deepest features and the skips, finest first.
    """
    x = stem(x)
    skips = []
    for block in down:
        skips.append(x)
        x = block(pool(x) if pool is not None else x)
    return x, skips
