"""Every target trains, and its checkpoint alone drives evaluate and predict (in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from bloodseg.evaluate import evaluate
from bloodseg.module import SegmentationModule
from bloodseg.predict import predict
from bloodseg.train import train
from tests.conftest import compose_cfg
from tests.test_train import TINY_DATA


@pytest.mark.slow
@pytest.mark.parametrize("target", ["contour", "distance", "binary_wmap"])
def test_target_checkpoint_round_trips_through_evaluate_and_predict(tmp_path, target):
    name = "binary" if target == "binary_wmap" else target
    # contour/distance also tune their marker threshold on the training images: the chosen
    # value must reach the checkpoint, or evaluate below would not reproduce the test scores
    extra = (["target.weight_map=unet"] if target == "binary_wmap" else
             ["callbacks.watershed.tune={split:train,metric:f1}"])
    cfg = compose_cfg(tmp_path, [*TINY_DATA, f"target={name}", *extra, "model.base_channels=4",
                                 "trainer.max_epochs=2", "data.scale=1.0", "data.crop_size=48",
                                 "augment=strong"])
    metrics = train(cfg)
    GlobalHydra.instance().clear()
    for key in ("test/count_mae", "test/native_dice", "test/ap50", "test/map"):
        assert np.isfinite(metrics[key]), key
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "best.ckpt"
    module = SegmentationModule.from_checkpoint(ckpt)
    assert module.target == name and module.net.classes == cfg.target.channels
    assert module.postprocess_config()["_target_"].endswith(
        {"binary": "Watershed", "contour": "ContourWatershed",
         "distance": "DistanceWatershed"}[name])
    if name != "binary":
        tuning = json.loads((Path(cfg.paths.output_dir) / "tuning.json").read_text())
        assert tuning["checkpoint_updated"] == str(ckpt) and tuning["n_images"] == 8
        chosen = tuning["chosen"]["marker_threshold"]
        assert module.postprocess_config()["marker_threshold"] == chosen
        assert metrics["test/tuned_marker_threshold"] == pytest.approx(chosen)
        assert len(tuning["tried"]) >= 6

    # evaluate with nothing but the checkpoint and the data: same test scores as training
    ecfg = compose_cfg(tmp_path / "eval", ["data=synthetic", *[o for o in TINY_DATA if
                                                              o.startswith("data.synthetic")],
                                           "data.num_workers=0", "trainer=cpu",
                                           f"ckpt_path={ckpt}"], config_name="evaluate")
    with open_dict(ecfg):
        ecfg.paths.data_dir = cfg.paths.data_dir
    got = evaluate(ecfg)
    GlobalHydra.instance().clear()
    for key in ("test/count_mae", "test/inst_f1", "test/native_dice"):
        assert got[key] == pytest.approx(metrics[key], abs=1e-6), key
    assert json.loads((Path(ecfg.paths.output_dir) / "test_metrics.json").read_text())[
        "target"] == name

    root = Path(json.loads((Path(cfg.paths.output_dir) / "meta.json").read_text())["data_root"])
    pcfg = compose_cfg(tmp_path / "pred", [f"ckpt_path={ckpt}",
                                           f"input={root / 'test' / 'original'}",
                                           f"output={tmp_path / 'pred_out'}"],
                       config_name="predict")
    rows, failed = predict(pcfg)
    GlobalHydra.instance().clear()
    assert not failed and len(rows) == 2
    assert (tmp_path / "pred_out" / "instances").is_dir()
