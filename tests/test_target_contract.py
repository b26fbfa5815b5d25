"""Every registered target (``conf/target/<name>.yaml`` + ``bloodseg/targets/<name>.py``) is
held to the target contract, so a new target is one module and one config, nothing else.

On a synthetic instance image (separate cells, one cut by the frame, so the gap-drawn mask is
the cells themselves): the config spells out the class's fields; ``encode`` gives arrays of
the documented shapes and dtypes; ``decode`` keeps the channels and gives probabilities;
``foreground`` is one channel in [0, 1]; logits that say exactly what ``encode`` said decode
to the cells again, and the target's default post-processing counts them; its default loss
builds, scores those logits better than random ones, and the whole target round-trips
through the model spec.
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
import torch

from bloodseg import targets
from bloodseg.config import group_config, group_names
from bloodseg.labels import mask_from_instances
from bloodseg.losses import build_loss
from bloodseg.spec import ModelSpec, Postprocess, SpecError, target_from_dict
from bloodseg.targets import from_config, target_class

NAMES = group_names("target")
#: settings beyond the config's defaults that change what a target encodes
VARIANTS = {"binary": [{"weight_map": "unet"}], "contour": [{"mode": "touching", "width": 1}],
            "distance_contour": [{"mode": "all", "width": 1}]}
CASES = [(n, {}) for n in NAMES] + [(n, v) for n in NAMES for v in VARIANTS.get(n, [])]
IDS = [f"{n}{''.join(f'-{k}={v}' for k, v in s.items())}" for n, s in CASES]


def cells() -> tuple[np.ndarray, int]:
    """int32 labels of 6 discs (r = 9 px) on 64x96, 4+ px apart, one cut by the left edge."""
    inst = np.zeros((64, 96), np.int32)
    centres = [(16, 16), (16, 40), (16, 66), (46, 28), (46, 56), (40, 3)]
    for k, (cy, cx) in enumerate(centres, start=1):
        cv2.circle(inst, (cx, cy), 9, k, -1)
    return inst, len(centres)


def build(name: str, settings: dict) -> targets.Target:
    return from_config({**group_config("target", name), **settings})


def perfect_logits(target: targets.Target, arrays: dict[str, np.ndarray]) -> torch.Tensor:
    """(1, C, H, W) logits that decode to exactly what ``encode`` said (+-12: p ~ 6e-6)."""
    t = torch.from_numpy(arrays["target"])
    if t.dtype == torch.int64:  # class indices
        onehot = torch.nn.functional.one_hot(t, target.channels).permute(2, 0, 1)
        return (onehot.float() * 24 - 12)[None]
    return torch.logit(t.clamp(1e-5, 1 - 1e-5))[None]


def test_the_registry_is_the_configs_and_each_has_its_module():
    assert NAMES == targets.names()  # conf/target/<name>.yaml <-> bloodseg/targets/<name>.py
    assert NAMES == ["binary", "contour", "distance", "distance_contour"]


@pytest.mark.parametrize("name", NAMES)
def test_config_names_itself_and_spells_out_every_field(name):
    cfg = group_config("target", name)
    cls = target_class(name)
    assert cfg["name"] == name == cls.name
    assert set(cfg) - {"name"} == {f.name for f in dataclasses.fields(cls)}
    assert from_config(cfg) == cls()  # the config's values are the class's defaults
    assert len(cls.channel_names) == cls.channels >= 1


@pytest.mark.parametrize("name,settings", CASES, ids=IDS)
def test_encode_decode_foreground(name, settings):
    target = build(name, settings)
    inst, _ = cells()
    mask = (mask_from_instances(inst, gap_px=1) > 0).astype(np.uint8)
    arrays = target.encode(inst, mask)
    assert set(arrays) <= {"target", "weight"} and "target" in arrays
    t = arrays["target"]
    assert t.flags.c_contiguous  # torch.from_numpy takes it as is
    if t.dtype == np.int64:  # class indices for cross-entropy
        assert t.shape == inst.shape and t.min() >= 0 and t.max() < target.channels
    else:  # one map per channel
        assert t.dtype == np.float32 and t.shape == (target.channels, *inst.shape)
        assert t.min() >= 0 and t.max() <= 1
    if "weight" in arrays:
        w = arrays["weight"]
        assert w.dtype == np.float32 and w.shape == (1, *inst.shape) and w.min() > 0

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, target.channels, *inst.shape, generator=gen)
    outputs = target.decode(logits)
    assert outputs.shape == logits.shape and outputs.dtype == torch.float32
    assert outputs.min() >= 0 and outputs.max() <= 1
    fg = target.foreground(outputs)
    assert fg.shape == (2, 1, *inst.shape) and fg.min() >= 0 and fg.max() <= 1 + 1e-6
    # logits saying exactly what encode said: the foreground is the cells again
    fg = target.foreground(target.decode(perfect_logits(target, arrays)))[0, 0].numpy()
    np.testing.assert_array_equal(fg > 0.5, inst > 0)


@pytest.mark.parametrize("name,settings", CASES, ids=IDS)
def test_default_loss_and_post_processing_fit_the_target(name, settings):
    target = build(name, settings)
    assert target.default_loss in group_names("loss")
    assert target.default_postprocess in group_names("postprocess")
    inst, n = cells()
    mask = (mask_from_instances(inst, gap_px=1) > 0).astype(np.uint8)
    arrays = {k: torch.from_numpy(v)[None] for k, v in target.encode(inst, mask).items()}
    perfect = perfect_logits(target, target.encode(inst, mask))

    loss = build_loss(target.training_loss(None))
    weight = [arrays["weight"]] if "weight" in arrays else []
    good = float(loss(perfect, arrays["target"], *weight))
    bad = float(loss(torch.randn(perfect.shape, generator=torch.Generator().manual_seed(0)),
                     arrays["target"], *weight))
    assert np.isfinite(good) and good < bad

    spec_target = target_from_dict({"name": name, **settings}, "test")
    pp = Postprocess(target.default_postprocess)
    ModelSpec.from_dict({"version": 1,
                         "network": {"name": "unet", "kwargs": {"classes": target.channels}},
                         "target": spec_target.to_dict(), "preprocess": {},
                         "postprocess": {"name": pp.name}}, "test")  # channels fit: no error
    labels = pp.build()(spec_target.decode(perfect)[0].numpy())
    assert labels.max() == n  # the default post-processing counts the cells


@pytest.mark.parametrize("name,settings", CASES, ids=IDS)
def test_round_trip_through_the_spec(name, settings):
    t = target_from_dict({**group_config("target", name), **settings}, "target config")
    assert t == build(name, settings) and t.channels == target_class(name).channels
    assert target_from_dict(t.to_dict(), "model.ckpt") == t
    assert t.to_dict()["channels"] == t.channels  # model files keep writing it


@pytest.mark.parametrize("name", NAMES)
def test_the_spec_refuses_what_the_class_does_not_take(name):
    cls = target_class(name)
    with pytest.raises(SpecError, match=rf"x.ckpt: target.bogus: .*{name} has no such field"):
        target_from_dict({"name": name, "bogus": 1}, "x.ckpt")
    with pytest.raises(SpecError, match=rf"target.channels: target {name} has {cls.channels}"):
        target_from_dict({"name": name, "channels": cls.channels + 1}, "x.ckpt")
    for f in dataclasses.fields(cls):  # a value of another type for every field
        with pytest.raises(SpecError, match=rf"target.{f.name}: \[1\] is not of type"):
            target_from_dict({"name": name, f.name: [1]}, "x.ckpt")
    with pytest.raises(SpecError, match="'base' is not a registered target; valid: binary"):
        target_from_dict({"name": "base"}, "x.ckpt")


def test_literal_fields_name_their_values():
    with pytest.raises(SpecError, match=r"target.mode: 'inner' is not of type one of 'all', "
                       r"'touching'"):
        target_from_dict({"name": "contour", "mode": "inner"}, "x.ckpt")
    with pytest.raises(SpecError, match="target.weight_map: 'paper' is not of type"):
        target_from_dict({"name": "binary", "weight_map": "paper"}, "x.ckpt")


def test_the_module_gives_the_network_the_targets_channels_and_loss():
    from bloodseg.losses import ContourLoss, WeightedBCELoss
    from bloodseg.module import SegmentationModule

    model = {"_target_": "bloodseg.models.unet.UNet", "in_channels": 1, "base_channels": 4}
    m = SegmentationModule(model=model, target={"name": "contour"})
    assert m.net.classes == 3 and m.hparams.model["classes"] == 3
    assert isinstance(m.criterion, ContourLoss) and m.postprocess_spec.name == "contour"
    m = SegmentationModule(model=model, loss="dice",
                           target={"name": "binary", "weight_map": "unet"})
    assert isinstance(m.criterion, WeightedBCELoss)  # the weight map replaces the loss
    with pytest.raises(SpecError, match="network.kwargs.classes: 1 does not match target"):
        SegmentationModule(model={**model, "classes": 1}, target={"name": "distance"})


def test_joint_loss_is_the_distance_loss_plus_the_border_term():
    from bloodseg.losses import DistanceContourLoss, DistanceLoss

    target = build("distance_contour", {})
    inst, _ = cells()
    mask = (mask_from_instances(inst, gap_px=1) > 0).astype(np.uint8)
    truth = torch.from_numpy(target.encode(inst, mask)["target"])[None]
    logits = perfect_logits(target, target.encode(inst, mask))
    noisy = logits + torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
    assert float(DistanceContourLoss(border_weight=0.0)(noisy, truth)) == pytest.approx(
        float(DistanceLoss()(noisy[:, :2], truth[:, :2])))
    wrong_border = logits.clone()
    wrong_border[:, 2] = -wrong_border[:, 2]  # every border pixel says "no", and vice versa
    joint = DistanceContourLoss()
    assert float(joint(wrong_border, truth)) > float(joint(logits, truth)) + 1.0
