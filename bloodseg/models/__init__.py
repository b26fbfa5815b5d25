"""Segmentation networks for bloodseg, and a registry to build them by name.

The registry is ``conf/model/``: one YAML per network (its ``_target_`` and defaults), used
by Hydra runs and by :func:`build_model` alike. Every network maps ``(B, in_channels, H, W)``
images (``in_channels`` 1 = gray, 3 = RGB) to ``(B, classes, H, W)`` logits (no activation)
for any H, W: inputs are padded to the network's ``size_divisor`` and the output cropped back
(:class:`~bloodseg.models.common.SegmentationNet`).

=========  ==============================================  ====================================
name       class                                           own parameters
=========  ==============================================  ====================================
unet       :class:`~bloodseg.models.unet.UNet`             ``base_channels=64``
resunet    :class:`~bloodseg.models.resunet.ResUNet`       ``base_channels=64, depth=3``
vgg11unet  :class:`~bloodseg.models.vggunet.VGG11UNet`     ``pretrained=False``
vgg16unet  :class:`~bloodseg.models.vggunet.VGG16UNet`     ``pretrained=False``
attunet    :class:`~bloodseg.models.attunet.AttentionUNet` ``base_channels=64``
smp        :class:`~bloodseg.models.smp.SMPModel`          ``arch, encoder, pretrained, **smp``
=========  ==============================================  ====================================

Usage::

    import torch
    from bloodseg.models import build_model

    net = build_model("unet", in_channels=1, base_channels=32)
    logits = net(torch.randn(2, 1, 250, 320))           # -> (2, 1, 250, 320)
    fpn = build_model("smp", arch="FPN", encoder="resnet18", in_channels=3)

With Hydra (``conf/model/<name>.yaml``)::

    net = hydra.utils.instantiate(cfg.model)            # in_channels: ${data.in_channels}

``bloodseg-models`` prints the parameter counts.
"""

from __future__ import annotations

from bloodseg.config import UnknownNameError

# The networks' modules are not imported here: the registry imports the one a config names
# (``_target_``), so running a U-Net never pays for segmentation_models_pytorch's import.
from bloodseg.models.common import SegmentationNet
from bloodseg.models.registry import build_model, model_class, model_names

__all__ = ["SegmentationNet", "UnknownNameError", "build_model", "model_class", "model_names"]
