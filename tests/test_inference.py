"""Evaluate and predict commands on a briefly trained checkpoint, real and synthetic images."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import torch

from bloodseg.inference import Predictor, blend_window, tile_starts
from bloodseg.io import CheckpointError
from bloodseg.metrics import InstanceStats
from bloodseg.modelfile import load_model
from bloodseg.prediction import list_inputs
from tests.conftest import REPO
from tests.helpers.cli import run
from tests.helpers.runs import read_csv


def test_run_folder_has_callback_outputs(trained_run):
    rows = read_csv(trained_run / "metrics.csv")
    assert any(r.get("val/count_mae_trainres") for r in rows)
    assert any(r.get("val/f1_trainres") for r in rows)
    assert any(r.get("test/map") for r in rows)
    test = json.loads((trained_run / "test_metrics.json").read_text())["metrics"]
    logged = [r for r in rows if r.get("test/map")][-1]
    assert float(logged["test/map"]) == pytest.approx(test["test/map"])  # CSV == JSON
    # one vocabulary: InstanceStats' names (test/, val/..._trainres) and the pixel metrics'
    stats = InstanceStats()
    stats.update("x", np.ones((4, 4), np.int32), np.ones((4, 4), np.int32))
    names = set(stats.aggregate())
    pixels = {"dice", "iou", "pixel_precision", "pixel_recall", "pixel_accuracy"}
    assert set(test) == {f"test/{n}" for n in names | pixels}
    assert {k for k in rows[0] if k.endswith("_trainres")} == {f"val/{n}_trainres" for n in names}
    assert {k for k in rows[0] if k.startswith("val/") and not k.endswith("_trainres")} == {
        "val/loss", *(f"val/{n}" for n in pixels)}
    per_image = read_csv(trained_run / "per_image.csv")
    assert len(per_image) == 3 and all(int(r["true_count"]) > 0 for r in per_image)
    index = json.loads((trained_run / "samples" / "index.json").read_text())
    assert len(index) == 3
    inst = cv2.imread(str(trained_run / "samples" / f"{index[0]['name']}_instances.png"),
                      cv2.IMREAD_UNCHANGED)
    assert inst.dtype == np.uint16 and inst.max() == index[0]["pred_count"]
    hist = read_csv(trained_run / "size_hist.csv")
    assert sum(int(r["true_cells"]) for r in hist) == sum(int(r["true_count"]) for r in per_image)


def test_tile_starts_cover_with_overlap():
    assert tile_starts(100, 256, 0.25) == [0]
    starts = tile_starts(600, 256, 0.25)
    assert starts[0] == 0 and starts[-1] == 600 - 256
    assert all(b - a <= 192 for a, b in zip(starts, starts[1:]))
    w = blend_window(8, 8)
    assert w[4, 4] > w[0, 0] > 0


def test_predictor_tile_and_resize_agree_on_training_sized_input(trained_run):
    best = trained_run / "checkpoints" / "best.ckpt"
    image = cv2.imread(str(next((trained_run / "samples").glob("*_image.png"))))[:, :, ::-1]
    tile = Predictor.load(best, mode="tile").outputs(image)
    resize = Predictor.load(best, mode="resize").outputs(image)
    auto = Predictor.load(best).outputs(image)  # trained on squashed images: resize
    assert tile.shape == resize.shape == (1, *image.shape[:2])
    assert np.allclose(tile, resize, atol=1e-4)  # one tile == the whole image here
    np.testing.assert_array_equal(auto, resize)
    tta = Predictor.load(best, mode="tile", tta=True).outputs(image)
    assert 0 <= tta.min() and tta.max() <= 1 and not np.allclose(tta, tile)


def test_predictor_tiles_large_images_at_training_scale(trained_run):
    pred = Predictor.load(trained_run / "checkpoints" / "best.ckpt", mode="tile", scale=1.0,
                          batch_size=3)
    big = np.full((300, 410, 3), 200, np.uint8)
    prob = pred.outputs(big)
    assert prob.shape == (1, 300, 410) and np.isfinite(prob).all()


def test_evaluate_writes_metrics(trained_run, tmp_path):
    data_dir = trained_run.parent / "data"
    out = tmp_path / "eval"
    # only the checkpoint: the data folder comes from its spec, and the log says so
    proc = run("bloodseg.cli.evaluate", [
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={out}"],
        tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "the folder the model was trained on" in proc.stdout + proc.stderr
    assert str(data_dir) in json.loads((out / "test_metrics.json").read_text())["data_root"]
    # the run's own numbers, exactly: one inference path
    ours = json.loads((trained_run / "test_metrics.json").read_text())["metrics"]
    assert json.loads((out / "test_metrics.json").read_text())["metrics"] == ours
    # with TTA, other numbers and the choice recorded
    tta = tmp_path / "tta"
    proc = run("bloodseg.cli.evaluate", [
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={tta}",
        "predict.tta=true"], tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tta / "test_metrics.json").read_text())
    assert result["tta"] is True
    for key in ("test/dice", "test/iou", "test/count_mae", "test/f1", "test/ap50"):
        assert key in result["metrics"]
    assert len(read_csv(tta / "per_image.csv")) == 3


@pytest.mark.real
def test_predict_on_mixed_folder_lists_unreadable_and_exits_nonzero(trained_run, tmp_path,
                                                                    shared_data):
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(shared_data / "bbbc041seg-sample" / "original.png", inputs / "full.png")
    bccd = sorted((shared_data / "bccd-boxes" / "JPEGImages").glob("*.jpg"))[0]
    shutil.copy(bccd, inputs / "bccd.jpg")
    gray16 = (np.linspace(0, 65535, 200 * 150).reshape(150, 200)).astype(np.uint16)
    cv2.imwrite(str(inputs / "gray16.tif"), gray16)
    rgba = np.full((90, 120, 4), 255, np.uint8)  # a gradient: a blank one is refused
    rgba[..., :3] = np.linspace(60, 220, 120, dtype=np.uint8)[None, :, None]
    cv2.imwrite(str(inputs / "rgba.png"), rgba)
    (inputs / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "pred"
    proc = run("bloodseg.cli.predict", [
        f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}", f"input={inputs}",
        f"output={out}", f"hydra.run.dir={tmp_path / 'hydra'}"], tmp_path, in_process=True)
    assert proc.returncode == 1
    assert "broken.png" in proc.stderr and "1 file(s) could not be read" in proc.stderr
    rows = {r["file"]: r for r in read_csv(out / "counts.csv")}
    assert set(rows) == {"full.png", "bccd.jpg", "gray16.tif", "rgba.png"}
    assert (rows["full.png"]["width"], rows["full.png"]["height"]) == ("1600", "1200")
    for stem, (h, w) in {"full": (1200, 1600), "bccd": (480, 640), "gray16": (150, 200)}.items():
        mask = cv2.imread(str(out / "masks" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(out / "instances" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        ov = cv2.imread(str(out / "overlays" / f"{stem}.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        assert inst.dtype == np.uint16 and inst.shape == (h, w)
        assert ov.shape == (h, w, 3)
    assert int(rows["full.png"]["cell_count"]) == int(
        cv2.imread(str(out / "instances" / "full.png"), cv2.IMREAD_UNCHANGED).max())


def test_list_inputs_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file or folder"):
        list_inputs(tmp_path / "nope")
    with pytest.raises(ValueError, match="no images"):
        list_inputs(tmp_path)


def test_checkpoint_rebuilds_without_downloading(trained_run):
    spec, net = load_model(trained_run / "checkpoints" / "best.ckpt")
    assert not net.training and spec.network.name == "unet"
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 50, 70)).shape == (1, 1, 50, 70)
    with pytest.raises(CheckpointError, match="missing.ckpt: checkpoint not found"):
        load_model(REPO / "missing.ckpt")
