"""Any segmentation_models_pytorch (smp) architecture/encoder pair as a bloodseg network.

``SMPModel(arch="Unet", encoder="resnet34", pretrained=False, in_channels=3, classes=1)`` builds
``smp.create_model(...)`` and adds what bloodseg expects of every network: logits output, any
input size (padded to a multiple of ``size_divisor``, 32 by default, and cropped back), names
checked up front (``KeyError`` listing the valid ones) and a clear ``RuntimeError`` instead of an
obscure network error when pretrained weights cannot be downloaded. Extra keyword arguments go
to the smp constructor (e.g. ``decoder_channels=[128, 64, 32, 16, 8]``).

Encoders are smp's own (``smp.encoders.get_encoder_names()``) or ``"tu-<timm model>"``.
"""

from __future__ import annotations

import inspect
from typing import Any

import segmentation_models_pytorch as smp
import timm
import torch
from segmentation_models_pytorch.base import SegmentationModel as _SMPBase
from torch import nn

from bloodseg.config import unknown_name
from bloodseg.models.common import SegmentationNet

OFFLINE_HINT = (
    "Train from scratch with `model.pretrained=false`, or make the weights available first: "
    "run once with internet access so they land in the Hugging Face cache ($HF_HOME), then "
    "set HF_HUB_OFFLINE=1 (which also makes a missing download fail at once instead of retrying)."
)


def architectures() -> dict[str, type[_SMPBase]]:
    """smp architectures by lower-case name (``"unet"``, ``"fpn"``, ...)."""
    # scanned rather than smp.MODEL_ARCHITECTURES_MAPPING, which older smp (<0.4) lacks
    return {
        name.lower(): obj
        for name, obj in vars(smp).items()
        if isinstance(obj, type) and issubclass(obj, _SMPBase) and obj is not _SMPBase
    }


def check_encoder(encoder: str) -> None:
    """Raise ``KeyError`` listing the valid names if smp cannot build ``encoder``."""
    if encoder.startswith("tu-"):
        timm_name = encoder[3:].split(".")[0]  # drop a pretrained tag such as ".in1k"
        if timm_name not in timm.list_models():
            raise unknown_name("timm encoder", encoder, ["tu-<any name in timm.list_models()>"])
        return
    valid = smp.encoders.get_encoder_names()
    if encoder not in valid:
        raise unknown_name("smp encoder", encoder, [*valid, "tu-<timm model>"])


def check_arch_kwargs(cls: type[_SMPBase], encoder: str, kwargs: dict[str, Any]) -> None:
    """Raise ``TypeError`` for keyword arguments ``cls`` would silently drop.

    smp architectures take ``**kwargs`` and hand them to the encoder, where only timm
    (``tu-``) encoders use them: ``model=smp model.base_channels=16`` would otherwise train
    smp's default width without a word.
    """
    if encoder.startswith("tu-"):
        return
    named = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    unknown = sorted(set(kwargs) - named)
    if unknown:
        raise TypeError(
            f"smp {cls.__name__} with encoder {encoder!r} takes no argument(s) {unknown} "
            f"(it would ignore them); valid: {', '.join(sorted(named))}. Remove them, e.g. "
            f"`~model.{unknown[0]}` on the command line."
        )


def create_smp_model(
    arch: str,
    encoder: str,
    pretrained: bool | str,
    in_channels: int,
    classes: int,
    **kwargs: Any,
) -> torch.nn.Module:
    """``smp.create_model`` with name checks and a clear error when weights are unavailable.

    ``pretrained``: ``False`` (random init), ``True`` (ImageNet) or an smp weights name.
    """
    archs = architectures()
    if arch.lower() not in archs:
        raise unknown_name("smp architecture", arch, sorted(cls.__name__ for cls in archs.values()))
    check_encoder(encoder)
    check_arch_kwargs(archs[arch.lower()], encoder, kwargs)
    weights: bool | str | None
    if not pretrained:
        weights = None
    elif encoder.startswith("tu-"):
        weights = True  # timm encoders take a bool; the weights tag is part of the name
    else:
        weights = "imagenet" if pretrained is True else pretrained
    try:
        return smp.create_model(
            arch,
            encoder_name=encoder,
            encoder_weights=weights,
            in_channels=in_channels,
            classes=classes,
            activation=None,  # logits: the losses apply sigmoid/softmax themselves
            **kwargs,
        )
    except OSError as exc:  # covers hub/URL/connection errors and "not in local cache"
        if weights is None:
            raise
        raise RuntimeError(
            f"could not load pretrained weights {weights!r} for encoder {encoder!r} "
            f"(no internet, or the Hugging Face Hub is unreachable): {exc}\n{OFFLINE_HINT}"
        ) from exc


class SMPModel(SegmentationNet):
    """A generic smp model, e.g. ``SMPModel(arch="FPN", encoder="efficientnet-b0")``."""

    def __init__(
        self,
        arch: str = "Unet",
        encoder: str = "resnet34",
        pretrained: bool | str = False,
        in_channels: int = 3,
        classes: int = 1,
        size_divisor: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(in_channels, classes, size_divisor=size_divisor)
        self.arch_name = arch
        self.encoder_name = encoder
        self.pretrained = pretrained
        self.net = create_smp_model(arch, encoder, pretrained, in_channels, classes, **kwargs)

    @property
    def encoder(self) -> nn.Module:
        """smp's encoder module, e.g. to freeze it or give it its own learning rate."""
        return self.net.encoder

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
