"""Tests for bloodseg.models: shapes, gradients, padding, registry, configs, offline errors.

One small subclass of :class:`_ModelContract` per registered network (smp style). Each network
is built from its ``conf/model/<name>.yaml`` with ``hydra.utils.instantiate`` (``data.in_channels``
set to 1 and to 3), so the configs are tested by the same builds; ``base_channels`` is overridden
to 8 where the network has it. Each (model, in_channels) is built once per session to keep the
file fast on a 2-core CPU: VGG construction alone takes seconds (torchvision allocates and
initialises the 100M-parameter classifier that smp then deletes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import hydra.utils
import pytest
import segmentation_models_pytorch as smp
import torch
from omegaconf import OmegaConf
from torch import nn

from bloodseg.models import UnknownNameError, build_model, model_class, model_names
from bloodseg.models.attunet import AttentionGate
from bloodseg.models.common import crop_padding, pad_to_multiple
from bloodseg.models.smp import SMPModel
from bloodseg.models.vggunet import VGG11UNet

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "model"
_CACHE: dict[tuple[str, int], nn.Module] = {}


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def instantiate_config(name: str, in_channels: int, **overrides: Any) -> nn.Module:
    """Build ``conf/model/<name>.yaml`` the way the framework does."""
    model_cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    assert "name" not in model_cfg, "would be passed to the constructor"
    cfg = OmegaConf.create({"data": {"in_channels": in_channels}, "target": {"channels": 1},
                            "model": model_cfg})
    return hydra.utils.instantiate(cfg.model, **overrides)


class _ModelContract:
    """What every registered network must do; subclasses set ``name`` and small ``kwargs``."""

    name: ClassVar[str]
    kwargs: ClassVar[dict[str, Any]] = {}

    def model(self, in_channels: int) -> nn.Module:
        key = (self.name, in_channels)
        if key not in _CACHE:
            torch.manual_seed(0)
            _CACHE[key] = instantiate_config(self.name, in_channels, **self.kwargs)
        model = _CACHE[key].train()
        model.zero_grad(set_to_none=True)
        return model

    @pytest.mark.parametrize("in_channels", [1, 3])
    def test_forward_backward(self, in_channels: int) -> None:
        model = self.model(in_channels)
        assert type(model) is model_class(self.name)
        assert model.in_channels == in_channels == first_conv(model).in_channels
        assert model.classes == 1
        x = torch.randn(2, in_channels, 64, 64)
        y = model(x)
        assert y.shape == (2, 1, 64, 64)
        assert torch.isfinite(y).all()
        y.square().mean().backward()
        grad = first_conv(model).weight.grad
        assert grad is not None and grad.abs().sum() > 0, "no gradient reached the first conv"

    @pytest.mark.parametrize("hw", [(50, 70), (9, 13)])
    def test_any_input_size(self, hw: tuple[int, int]) -> None:
        model = self.model(3)
        assert model(torch.randn(2, 3, *hw)).shape == (2, 1, *hw)

    def test_channels_last(self) -> None:
        model = self.model(3).eval()
        x = torch.randn(1, 3, 40, 48)
        with torch.no_grad():
            expected = model(x)
            model.to(memory_format=torch.channels_last)
            try:
                got = model(x.contiguous(memory_format=torch.channels_last))
            finally:
                model.to(memory_format=torch.contiguous_format)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


class TestUNet(_ModelContract):
    name = "unet"
    kwargs = {"base_channels": 8}


class TestResUNet(_ModelContract):
    name = "resunet"
    kwargs = {"base_channels": 8}


class TestVGG11UNet(_ModelContract):
    name = "vgg11unet"


class TestVGG16UNet(_ModelContract):
    name = "vgg16unet"


class TestAttentionUNet(_ModelContract):
    name = "attunet"
    kwargs = {"base_channels": 8}

    def test_gate_coefficients(self) -> None:
        gate = AttentionGate(skip_channels=8, gate_channels=16, inter_channels=4)
        x, g = torch.randn(2, 8, 16, 16), torch.randn(2, 16, 8, 8)
        alpha = gate.coefficients(x, g)
        assert alpha.shape == (2, 1, 16, 16)
        assert ((alpha >= 0) & (alpha <= 1)).all()
        assert gate(x, g).shape == x.shape


class TestSMP(_ModelContract):
    name = "smp"
    kwargs = {"encoder": "resnet18"}

    def test_encoder_is_exposed(self) -> None:
        model = self.model(3)
        assert model.encoder_name == "resnet18" and model.encoder is model.net.encoder


def test_every_registered_model_is_tested_and_configured() -> None:
    tested = {cls.name for cls in _ModelContract.__subclasses__()}
    assert tested == set(model_names())


def test_default_widths_match_the_papers() -> None:
    # ~31.0M is the well-known U-Net count; guards against silently changed defaults
    assert 30.9e6 < build_model("unet").num_parameters() < 31.1e6
    assert build_model("resunet").num_parameters() < 9e6


@pytest.mark.parametrize("multiple", [16, 32])
@pytest.mark.parametrize("hw", [(64, 64), (50, 70), (3, 5), (1, 1)])
def test_pad_and_crop_roundtrip(hw: tuple[int, int], multiple: int) -> None:
    x = torch.randn(2, 3, *hw)
    padded, padding = pad_to_multiple(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    torch.testing.assert_close(crop_padding(padded, padding), x)


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(KeyError) as info:
        build_model("segnet")
    assert isinstance(info.value, UnknownNameError)
    for name in model_names():
        assert name in str(info.value)


def test_unknown_smp_arch_and_encoder_list_valid_names() -> None:
    with pytest.raises(KeyError, match="UnetPlusPlus"):
        SMPModel(arch="Unet3000")
    with pytest.raises(KeyError, match="resnet34"):
        SMPModel(encoder="resnet3000")
    with pytest.raises(KeyError, match="timm"):
        SMPModel(encoder="tu-not_a_timm_model")


def test_smp_rejects_arguments_it_would_ignore() -> None:
    # smp passes unknown kwargs to the encoder, where non-timm encoders drop them silently
    with pytest.raises(TypeError, match=r"base_channels.*~model\.base_channels"):
        SMPModel(encoder="resnet18", in_channels=1, base_channels=16)
    model = SMPModel(encoder="resnet18", in_channels=1, decoder_channels=[32, 16, 8, 8, 4])
    assert model.net.decoder.blocks[-1].conv2[0].out_channels == 4


def test_pretrained_offline_error_names_the_override(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> str:
        raise OSError("simulated: no internet")

    # smp >= 0.4 fetches encoder weights via hf_hub_download, older smp via model_zoo.load_url;
    # failing them at once keeps the test fast (real offline runs retry for ~20 s first)
    monkeypatch.setattr(smp.encoders, "hf_hub_download", offline, raising=False)
    monkeypatch.setattr(torch.utils.model_zoo, "load_url", offline)
    with pytest.raises(RuntimeError, match=r"model\.pretrained=false") as info:
        VGG11UNet(in_channels=1, pretrained=True)
    assert "simulated: no internet" in str(info.value)
    with pytest.raises(RuntimeError, match=r"model\.pretrained=false"):
        SMPModel(encoder="resnet18", pretrained=True)


def test_build_model_passes_kwargs() -> None:
    model = build_model("attunet", in_channels=1, classes=3, base_channels=4)
    assert isinstance(model, model_class("attunet")) and model.base_channels == 4
    assert model(torch.randn(2, 1, 20, 24)).shape == (2, 3, 20, 24)
