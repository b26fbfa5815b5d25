"""Every target trains -> tunes -> tests, and its checkpoint alone gives the same answer in
evaluate and predict (in-process): one model file, one inference path, one answer."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.core.global_hydra import GlobalHydra

from bloodseg.cli.evaluate import main as evaluate
from bloodseg.modelfile import file_sha256, load_model, read_tuned
from bloodseg.prediction import predict
from bloodseg.training import train
from tests.conftest import compose_cfg
from tests.helpers.runs import TINY


def read_png(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.mark.slow
@pytest.mark.parametrize("target", ["contour", "distance", "distance_contour", "binary_wmap"])
def test_target_checkpoint_round_trips_through_evaluate_and_predict(tmp_path, target):
    name = "binary" if target == "binary_wmap" else target
    # contour/distance also tune their marker threshold on the training images (a stage
    # after fit): the choice goes beside the weights, and evaluate/predict must pick it up
    extra = ["target.weight_map=unet"] if target == "binary_wmap" else [
        "tune={split:train,metric:f1}"]
    cfg = compose_cfg(tmp_path, [*TINY, f"target={name}", *extra, "model.base_channels=4",
                                 "trainer.max_epochs=2", "data.scale=1.0", "data.crop_size=48",
                                 "augment=strong"])
    metrics = train(cfg)
    GlobalHydra.instance().clear()
    for key in ("test/count_mae", "test/dice", "test/ap50", "test/map"):
        assert np.isfinite(metrics[key]), key
    run = Path(cfg.paths.output_dir)
    ckpt = run / "checkpoints" / "best.ckpt"
    before = file_sha256(ckpt)
    spec, net = load_model(ckpt)
    assert spec.target.name == name and net.classes == spec.target.channels
    assert spec.postprocess.name == name  # each target's own post-processing
    if name != "binary":
        tuning = json.loads((run / "tuning.json").read_text())
        assert tuning["n_images"] == 8 and len(tuning["tried"]) >= 6
        chosen = tuning["chosen"]["marker_threshold"]
        tuned = read_tuned(ckpt)  # postprocess.json beside the weights, tied to them
        assert tuned is not None and tuned.fields["marker_threshold"] == chosen
        assert file_sha256(ckpt) == before  # tuning never rewrites the checkpoint
    else:
        assert not (run / "postprocess.json").exists()

    # evaluate with nothing but the checkpoint: the data folder comes from its spec, and the
    # numbers are the run's own, exactly
    ecfg = compose_cfg(tmp_path / "eval", [f"ckpt_path={ckpt}"], config_name="evaluate")
    got = evaluate(ecfg)
    GlobalHydra.instance().clear()
    assert got == {k: v for k, v in metrics.items() if k.startswith("test/")}
    eval_out = Path(ecfg.paths.output_dir)

    root = Path(spec.provenance["data_root"])
    pcfg = compose_cfg(tmp_path / "pred", [f"ckpt_path={ckpt}",
                                           f"input={root / 'test' / 'original'}",
                                           f"output={tmp_path / 'pred_out'}"],
                       config_name="predict")
    rows, failed = predict(pcfg)
    GlobalHydra.instance().clear()
    assert not failed and len(rows) == 2
    # the same label image from the run's test, evaluate and predict
    for sample in json.loads((run / "samples" / "index.json").read_text()):
        test_labels = read_png(run / "samples" / f"{sample['name']}_instances.png")
        eval_labels = read_png(eval_out / "samples" / f"{sample['name']}_instances.png")
        pred_labels = read_png(tmp_path / "pred_out" / "instances" / f"{sample['name']}.png")
        assert test_labels.max() > 0
        np.testing.assert_array_equal(test_labels, eval_labels)
        np.testing.assert_array_equal(test_labels, pred_labels)
