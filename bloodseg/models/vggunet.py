"""TernausNet-style U-Nets, VGG encoder (Iglovikov & Shvets 2018): ``vgg11unet``, ``vgg16unet``.

Built from smp rather than by hand: ``smp.Unet(encoder_name="vgg11" | "vgg16")`` is the plain
(BatchNorm-free) torchvision VGG feature extractor as encoder plus a U-Net decoder; for VGG smp
also inserts a centre block on the bottleneck, as TernausNet does. Differences from TernausNet
(same topology otherwise): smp's decoder upsamples by nearest-neighbour interpolation + two
3x3 Conv-BN-ReLU instead of a transposed conv, and it does not use the full-resolution 64-channel
VGG feature as a skip (its last block upsamples to full resolution without a skip).

``pretrained=True`` loads ImageNet encoder weights (what TernausNet and the reproduced study did)
and needs internet or a warm Hugging Face cache; without them a ``RuntimeError`` says to use
``model.pretrained=false``. The configs default to ``false`` so everything runs offline. With
``in_channels=1`` and pretrained weights smp adapts the first conv (sums the RGB filters).
Inputs are padded to a multiple of 32 (five max-pools) and cropped back.
"""

from __future__ import annotations

from typing import ClassVar

from bloodseg.models.smp import SMPModel


class _VGGUNet(SMPModel):
    encoder_name: ClassVar[str]

    def __init__(self, in_channels: int = 3, classes: int = 1, pretrained: bool = False,
                 batch_norm: bool = False) -> None:
        # TernausNet's encoder has no BatchNorm (it starts from ImageNet weights); from random
        # weights the *_bn variant trains far more reliably, hence the option.
        super().__init__(
            arch="Unet",
            encoder=self.encoder_name + ("_bn" if batch_norm else ""),
            pretrained=pretrained,
            in_channels=in_channels,
            classes=classes,
        )


class VGG11UNet(_VGGUNet):
    """TernausNet (TernausNet-11): VGG11 encoder + U-Net decoder."""

    encoder_name = "vgg11"


class VGG16UNet(_VGGUNet):
    """TernausNet-16: VGG16 encoder + U-Net decoder."""

    encoder_name = "vgg16"
