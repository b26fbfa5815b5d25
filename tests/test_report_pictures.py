"""What the report's pictures show: matches coloured on the test panels, count MAE and F1
next to the Otsu baselines, the count on overlays; and evaluate folders accepted as runs."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from bloodseg.labels import mask_from_instances
from bloodseg.metrics import match_instances, merges_and_splits
from bloodseg.render import overlay
from bloodseg.report import find_runs, load_run
from bloodseg.report.baselines import OTSU, OTSU_TUNED
from bloodseg.report.build import build_report
from bloodseg.report.figures import MATCH_COLORS, _match_outlines, comparison_figure
from tests.test_report import make_run


def discs(centres, radius=9, shape=(64, 96)) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, 1):
        cv2.circle(lab, (x, y), radius, i, -1)
    return lab


# true cells 1..5; the prediction finds 1, merges 2+3, splits 4, misses 5 and adds a speck
TRUTH = discs([(14, 14), (14, 40), (14, 58), (46, 30), (46, 76)])


def prediction() -> np.ndarray:
    pred = np.zeros_like(TRUTH)
    pred[TRUTH == 1] = 1
    pred[(TRUTH == 2) | (TRUTH == 3)] = 2
    pred[14, 41:57] = 2                         # the two touching cells as one blob
    half = (TRUTH == 4) & (np.arange(96)[None, :] < 30)
    pred[half], pred[(TRUTH == 4) & ~half] = 3, 4
    cv2.circle(pred, (60, 56), 4, 5, -1)        # a false positive between cells
    return pred


def test_merges_splits_and_matched_pairs_are_named_by_id():
    pred = prediction()
    merged, split = merges_and_splits(TRUTH, pred)
    assert merged.tolist() == [2] and split.tolist() == [4]
    m = match_instances(TRUTH, pred)
    # the blob still matches one of its cells and a half the split cell (IoU >= 0.5): a merge
    # or a split costs an FN or an FP besides, which is why the panel marks them
    assert m.pairs.tolist() == [[1, 1], [3, 2], [4, 4]] and (m.tp, m.fp, m.fn) == (3, 2, 2)
    # a speck in a cell is no split, one cell well inside a big prediction no merge
    speck = TRUTH.copy()
    speck[14, 14] = 9
    assert merges_and_splits(TRUTH, speck)[1].size == 0
    assert merges_and_splits(TRUTH, (TRUTH == 1).astype(np.int32))[0].size == 0


def test_match_panel_outlines_each_kind_in_its_colour():
    image = np.full((*TRUTH.shape, 3), 200, np.uint8)
    rgb, marks = _match_outlines(image, prediction(), TRUTH, k=1)
    assert (marks["tp"], marks["fp"], marks["fn"]) == (3, 2, 2)

    def has(color, region):
        return bool((rgb[region] == color).all(axis=-1).any())

    left_cell = (slice(3, 26), slice(3, 26))     # matched
    speck = (slice(50, 64), slice(50, 64))       # false positive only
    missed = (slice(36, 57), slice(66, 88))      # true cell 5, nothing predicted there
    assert has(MATCH_COLORS["tp"], left_cell) and not has(MATCH_COLORS["fp"], left_cell)
    assert has(MATCH_COLORS["fp"], speck) and not has(MATCH_COLORS["tp"], speck)
    assert has(MATCH_COLORS["fn"], missed) and not has(MATCH_COLORS["fp"], missed)
    [(mx, my)] = marks["merge"]
    [(sx, sy)] = marks["split"]
    assert 40 < mx < 58 and abs(my - 14) < 3      # on the merged blob
    assert abs(sx - 30) < 3 and abs(sy - 46) < 3  # on the split cell


@pytest.mark.parametrize("truth_png", [True, False])
def test_panel_draws_matches_from_truth_png_or_mask(tmp_path, truth_png):
    run = make_run(tmp_path / "run", "unet_gray", experiment=None, model="unet", color="gray",
                   dice=0.8)
    samples = run / "samples"
    index = json.loads((samples / "index.json").read_text())
    name = index[0]["name"]
    cv2.imwrite(str(samples / f"{name}_instances.png"),
                cv2.resize(prediction().astype(np.uint16), (64, 48),
                           interpolation=cv2.INTER_NEAREST))
    if truth_png:  # touching cells kept apart, unlike the mask's components
        cv2.imwrite(str(samples / f"{name}_truth.png"), TRUTH.astype(np.uint16))
    cv2.imwrite(str(samples / f"{name}_mask.png"),
                cv2.resize(mask_from_instances(TRUTH), (64, 48), interpolation=cv2.INTER_NEAREST))
    written, _ = build_report([load_run(run)], tmp_path / "fig")
    panel = cv2.imread(str(tmp_path / "fig" / "unet_gray_panel.png"))[:, :, ::-1]
    assert panel.shape[1] > 1800  # five columns
    for kind in ("tp", "fp", "fn"):  # each outline colour is on the picture
        assert (np.abs(panel.astype(int) - MATCH_COLORS[kind]).sum(axis=-1) < 30).sum() > 50


def test_comparison_shows_count_mae_and_f1_with_the_baselines(tmp_path):
    runs = [load_run(make_run(tmp_path / n, n, experiment=None, model="unet", color="gray",
                              dice=d)) for n, d in (("a", 0.8), ("b", 0.9))]
    baselines = [{"experiment": OTSU, "count_mae": 7.5, "f1": 0.6, "dice": 0.7},
                 {"experiment": OTSU_TUNED, "count_mae": 5.0, "f1": 0.65, "dice": 0.7}]
    fig = comparison_figure(runs, baselines)
    mae, f1, dice = fig.axes
    assert mae.get_xlabel().startswith("count MAE") and f1.get_xlabel().startswith("instance F1")
    assert [t.get_text() for t in mae.get_yticklabels()] == ["a", "b", OTSU, OTSU_TUNED]
    widths = [p.get_width() for p in mae.patches]
    assert widths == pytest.approx([1.5, 1.5, 7.5, 5.0])  # the runs' test/count_mae, then refs
    assert [p.get_width() for p in f1.patches] == pytest.approx([0.72, 0.72, 0.6, 0.65])
    assert [bool(p.get_hatch()) for p in f1.patches] == [False, False, True, True]
    assert [t.get_text() for t in comparison_figure(runs).axes[0].get_yticklabels()] == ["a", "b"]


def test_overlay_prints_the_total_count_in_a_corner():
    image = np.full((120, 160, 3), 230, np.uint8)
    plain = overlay(image, np.zeros((120, 160), np.int32))
    counted = overlay(image, np.zeros((120, 160), np.int32), count=87)
    assert (plain == 230).all()
    ys, xs = np.nonzero((counted < 120).all(axis=-1))  # the darkened box
    assert ys.max() < 30 and xs.max() < 90 and ys.min() < 5 and xs.min() < 5  # top-left
    box = counted[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert (box > 200).all(axis=-1).sum() > 20  # light text on it
    assert (counted[30:] == 230).all() and (counted[:, 90:] == 230).all()  # only the corner
    assert (overlay(image, np.zeros((120, 160), np.int32), count=1)[:30, :90] != 230).any()


def test_evaluate_folder_is_a_run_named_after_its_checkpoint(tmp_path):
    trained = make_run(tmp_path / "runs" / "train", "unet_gray", experiment=None, model="unet",
                       color="gray", dice=0.8)
    evaluated = make_run(tmp_path / "runs" / "evaluate", "x", experiment=None, model="x",
                         color="gray", dice=0.7)
    (evaluated / "meta.json").unlink()
    (evaluated / "metrics.csv").unlink()  # what bloodseg-evaluate leaves: no history either
    (evaluated / "evaluate.log").write_text("")
    (evaluated / "test_metrics.json").write_text(json.dumps({
        "ckpt_path": str(trained / "checkpoints" / "best.ckpt"), "tta": True,
        "data_kind": "real", "color": "rgb", "metrics": {"test/dice": 0.7,
                                                         "test/count_mae": 3.0}}))
    found = find_runs([tmp_path / "runs"])
    assert sorted(p.name for p in found.runs) == ["evaluate", "train"] and not found.unfinished
    run = load_run(evaluated)
    assert run.name == "unet_gray (evaluate, TTA)" and run.history.empty
    assert run.meta["model"] == "unet" and run.data_kind == "real" and run.meta["color"] == "rgb"
    assert run.test == {"test/dice": 0.7, "test/count_mae": 3.0}
    written, table = build_report([run, load_run(trained)], tmp_path / "fig")
    names = {p.name for p in written}
    assert "unet_gray_evaluate_TTA_panel.png" in names  # its pictures, no curves
    assert not any(n.startswith("unet_gray_evaluate") and n.endswith("_loss.png") for n in names)
    row = table.set_index("experiment").loc["unet_gray (evaluate, TTA)"]
    assert row["count_mae"] == 3.0 and row["data_kind"] == "real" and pd.isna(row["epochs_run"])
    assert Path(row["run_dir"]) == evaluated
