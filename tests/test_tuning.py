"""Post-processing chosen on training images (bloodseg.tuning), the typical cell size that
specks cannot sway, dropping the frame-cut cells BBBC041Seg leaves out, and checkpoint
hyper-parameter updates."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from bloodseg.io import DataError
from bloodseg.labels import CUT_CELL_GRID, drop_cut_cells, typical_area
from bloodseg.options import OptionError
from bloodseg.postprocess import ContourWatershed, DistanceWatershed, Watershed
from bloodseg.targets import contour_target
from bloodseg.tuning import TuningItem, default_grid, score, search


def disc_labels(centres, radius=20, shape=(120, 200)) -> np.ndarray:
    lab = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, 1):
        cv2.circle(lab, (x, y), radius, i, -1)
    return lab


def one_hot(classes: np.ndarray) -> np.ndarray:
    return np.stack([(classes == c).astype(np.float32) for c in range(3)])


# -- typical size and frame-cut cells ------------------------------------------------------


def test_typical_area_is_not_taken_over_by_specks():
    areas = np.array([60] * 80 + [10_000] * 30)
    assert np.median(areas) == 60  # the plain median is a speck
    assert typical_area(areas) == 10_000
    assert typical_area(areas, floor=100) == 10_000
    assert typical_area(np.array([5, 7])) in (5, 7) and typical_area(np.zeros(0)) == 0.0


def test_drop_cut_cells_keeps_whole_and_mostly_visible_cells():
    lab = disc_labels([(60, 100), (60, 5), (60, 195)], radius=20)
    # id 1 whole (~1257 px); id 2 cut at the left edge, ~65% visible; id 3 a sliver (~20%)
    lab[lab == 3] = 0
    cv2.circle(lab, (212, 60), 20, 3, -1)
    lab[:, :0] = 0
    areas = np.bincount(lab.ravel())
    assert areas[2] / areas[1] > 0.5 and areas[3] / areas[1] < 0.3
    out = drop_cut_cells(lab, 0.4)
    assert out.max() == 2 and set(np.unique(out)) == {0, 1, 2}
    assert (out > 0).sum() == areas[1] + areas[2]  # the sliver alone went
    assert drop_cut_cells(lab, 0.0) is lab
    assert drop_cut_cells(lab, 0.7).max() == 1  # the 65% cell goes too
    assert drop_cut_cells(np.zeros((4, 4), np.int32)).max() == 0


@pytest.mark.parametrize("make", [
    lambda: Watershed(cut_cell_frac=0.4),
    lambda: ContourWatershed(cut_cell_frac=0.4),
])
def test_postprocessors_drop_frame_slivers_only_when_asked(make):
    truth = disc_labels([(60, 100), (60, 212)], radius=20)  # a whole cell and a sliver
    pp = make()
    if isinstance(pp, ContourWatershed):
        outputs = one_hot(contour_target(truth, width=2))
    else:
        outputs = (truth > 0).astype(np.float32)[None]
    assert pp(outputs).max() == 1
    pp.cut_cell_frac = 0.0
    assert pp(outputs).max() == 2


def test_specks_do_not_survive_on_a_pale_smear():
    # 6 cells and 40 specks (a pale smear's debris): a plain median would call the specks
    # typical and keep them all
    truth = disc_labels([(40, 40 + 60 * i) for i in range(3)] +
                        [(110, 40 + 60 * i) for i in range(3)], radius=22, shape=(160, 240))
    outputs = one_hot(contour_target(truth, width=2))
    rng = np.random.default_rng(0)
    for y, x in rng.integers([145, 5], [158, 235], size=(40, 2)):
        outputs[:, y - 2:y + 2, x - 2:x + 2] = [[[0.0]], [[1.0]], [[0.0]]]
    assert ContourWatershed(min_area=4).__call__(outputs).max() == 6


# -- tuning --------------------------------------------------------------------------------


def neck_outputs() -> tuple[np.ndarray, np.ndarray]:
    """Two touching cells whose border the network saw only faintly: p_interior 0.95 in the
    cores, 0.75 across the neck. marker_threshold 0.7 floods them as one, 0.8 splits them."""
    truth = disc_labels([(60, 78), (60, 122)], radius=22)  # touching, 1-px gap between
    truth[:, 100] = 0
    fg = truth > 0
    p_int = np.where(fg, 0.95, 0.0).astype(np.float32)
    p_int[:, 96:105] = np.where(fg[:, 96:105], 0.75, 0.0)
    p_int[:, 100] = np.where((truth[:, 99] > 0) | (truth[:, 101] > 0), 0.75, 0.0)
    out = np.stack([1 - np.maximum(p_int, fg), p_int, np.where(fg | (p_int > 0), 1 - p_int, 0)])
    return out.astype(np.float32), truth


def test_search_finds_the_threshold_that_splits():
    outputs, truth = neck_outputs()
    items = [TuningItem("a", outputs, truth)]
    assert ContourWatershed(marker_threshold=0.7)(outputs).max() == 1
    result = search(ContourWatershed(), items, {"marker_threshold": [0.8, 0.9]})
    assert result.best == {"marker_threshold": 0.8}  # ties on F1 and MAE: the first best
    assert result.postprocess.marker_threshold == 0.8 and result.postprocess(outputs).max() == 2
    tried = [r["marker_threshold"] for r in result.rows]
    assert tried == [0.7, 0.8, 0.9]  # the current value is always tried
    assert result.rows[0]["count_mae"] == 1 and result.rows[1]["f1"] == 1.0
    assert score(result.postprocess, items)["count_mae"] == 0


def test_search_scores_at_the_truths_size():
    outputs, truth = neck_outputs()
    small = np.stack([cv2.resize(c, (100, 60), interpolation=cv2.INTER_AREA) for c in outputs])
    result = search(ContourWatershed(), [TuningItem("a", small, truth)],
                    {"marker_threshold": [0.8]})
    assert result.rows[-1]["f1"] > 0.9  # upsampled to 120x200 before scoring


def test_search_rejects_bad_requests():
    outputs, truth = neck_outputs()
    items = [TuningItem("a", outputs, truth)]
    with pytest.raises(OptionError, match="no parameter 'marker_treshold'"):
        search(ContourWatershed(), items, {"marker_treshold": [0.8]})
    with pytest.raises(OptionError, match="metric must be one of"):
        search(ContourWatershed(), items, metric="dice")
    with pytest.raises(DataError, match="no images"):
        search(ContourWatershed(), [])
    with pytest.raises(TypeError, match="no tune_grid"):
        default_grid(object())


def cells_and_cut_cells() -> tuple[np.ndarray, np.ndarray]:
    """Binary outputs and truth: three whole cells, a cell cut by the left edge to 0.82 of a
    whole one (which the truth keeps) and one cut by the right edge to 0.62 (left out)."""
    shown = disc_labels([(60, 40), (60, 100), (60, 160), (20, 9), (100, 216)], radius=18,
                        shape=(120, 220))
    truth = np.where(shown == 5, 0, shown)
    return (shown > 0).astype(np.float32)[None], truth


@pytest.mark.parametrize("make", [
    lambda c: Watershed(cut_cell_frac=c),
    lambda c: ContourWatershed(cut_cell_frac=c),
    lambda c: DistanceWatershed(cut_cell_frac=c),
])
def test_the_cut_rule_is_every_postprocessors_last_step(make):
    # search() scores every cut-off on one labelling made with the cut-off 0: that is only
    # right if each post-processor drops cut cells last, on its finished labels
    from bloodseg.targets import distance_target

    shown = disc_labels([(60, 40), (60, 76), (20, -2), (100, 208), (-5, 120)], radius=18,
                        shape=(120, 220))
    outputs = {ContourWatershed: one_hot(contour_target(shown, width=2)),
               DistanceWatershed: np.stack([(shown > 0).astype(np.float32),
                                            distance_target(shown)]),
               Watershed: (shown > 0).astype(np.float32)[None]}[type(make(0.0))]
    raw = make(0.0)(outputs)
    assert raw.max() == 5
    counts = []
    for cut in (0.3, 0.5, 0.7, 0.9):
        labels = make(cut)(outputs)
        np.testing.assert_array_equal(labels, drop_cut_cells(raw, cut))
        counts.append(labels.max())
    assert counts[0] == 5 and counts[-1] <= 3 and counts == sorted(counts, reverse=True)


def test_search_picks_the_cut_off_the_truth_follows():
    outputs, truth = cells_and_cut_cells()
    items = [TuningItem("a", outputs, truth)]
    pp = Watershed(cut_cell_frac=0.4)
    assert pp(outputs).max() == 5  # 0.4 keeps the 0.62 cell the truth left out
    result = search(pp, items, {"cut_cell_frac": [0.3, 0.5, 0.7, 0.9]})
    assert result.best == {"cut_cell_frac": 0.7}  # 0.9 would drop the 0.82 cell too
    assert [r["cut_cell_frac"] for r in result.rows] == [0.3, 0.4, 0.5, 0.7, 0.9]
    assert [r["count_bias"] for r in result.rows] == [1, 1, 1, 0, -1]
    assert result.postprocess(outputs).max() == 4
    assert score(result.postprocess, items)["f1"] == 1.0
    both = search(pp, items, {"split_ratio": [0.8, 0.9], "cut_cell_frac": [0.7]})  # +0.85, +0.4
    assert len(both.rows) == 3 * 2 and set(both.best) == {"split_ratio", "cut_cell_frac"}
    for row in both.rows:  # each try's scores are those of the post-processor it names
        tried = dataclasses.replace(pp, **{k: row[k] for k in both.best})
        assert score(tried, items)["f1"] == row["f1"]


def test_the_cut_off_is_tuned_only_where_the_data_has_a_rule():
    for pp in (Watershed, ContourWatershed, DistanceWatershed):
        assert "cut_cell_frac" not in default_grid(pp())
        assert default_grid(pp(cut_cell_frac=0.4))["cut_cell_frac"] == list(CUT_CELL_GRID)
    assert "cut_cell_frac" not in default_grid(Watershed(cut_cell_frac=0.4,
                                                             remove_border=True))


def test_every_postprocessor_has_a_default_grid_of_its_own_parameters():
    for pp in (Watershed(), ContourWatershed(), DistanceWatershed(),
               DistanceWatershed(markers="hmaxima")):
        grid = default_grid(pp)
        assert grid and all(hasattr(pp, k) and len(v) >= 3 for k, v in grid.items())


# -- the tuning stage ------------------------------------------------------------------------


def test_tune_options_defaults_and_errors():
    from bloodseg.tuning import TuneOptions

    def tune_spec(value):
        options = TuneOptions.from_config(value)
        return None if options is None else options.to_dict()

    assert tune_spec(None) is None and tune_spec({}) is None
    assert tune_spec({"split": "val"}) == {"split": "val", "metric": "f1", "grid": None,
                                          "max_images": 50}
    for bad, match in (({"spilt": "train"}, "unknown keys"), ({"split": "test"}, "train, val"),
                       ({"metric": "dice"}, "metric must be"), ({"max_images": 0}, ">= 1")):
        with pytest.raises(OptionError, match=match):
            tune_spec(bad)


def test_tuning_samples_are_training_images_evenly_spaced(tmp_path):
    from bloodseg.data.datamodule import BloodCellDataModule
    from bloodseg.data.synthetic import write_dataset
    from bloodseg.tuning import tuning_samples

    root = write_dataset(tmp_path / "d", n_train=9, n_test=2, size=(48, 64), seed=0)
    names = [s.name for s in tuning_samples(root, "train")]
    assert len(names) == 9 and names == sorted(names)
    some = [s.name for s in tuning_samples(root, "train", max_images=3)]
    assert some == [names[0], names[4], names[8]]
    val = tuning_samples(root, "val", val_fraction=0.2, seed=42)
    dm = BloodCellDataModule(root=str(root), expected_counts=None, val_fraction=0.2, seed=42)
    assert [s.name for s in val] == [s.name for s in dm.split_train_val(dm_train(root))[1]]
    assert len(val) == 2 and not set(s.name for s in val) & {"test"}


def dm_train(root):
    from bloodseg.data.bbbc041seg import list_split

    return list_split(root, "train")
