"""Instance metrics on hand-made label images with exact answers."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from bloodseg import rundir
from bloodseg.metrics import ROW_KEYS, InstanceStats, count_error, iou_matrix, match_instances


def _squares(n: int, size: int = 10, gap: int = 5, slots: int = 4) -> np.ndarray:
    """n separate size x size squares in one row of ``slots`` places, labelled 1..n."""
    lab = np.zeros((size + 2 * gap, max(n, slots) * (size + gap) + gap), np.int32)
    for i in range(n):
        x = gap + i * (size + gap)
        lab[gap : gap + size, x : x + size] = i + 1
    return lab


def test_perfect_match():
    t = _squares(4)
    m = match_instances(t, t.copy())
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (4, 4, 4, 0, 0)
    assert m.precision == m.recall == m.f1 == m.ap == m.mean_matched_iou == 1.0


def test_ids_need_not_match_or_be_contiguous():
    t = _squares(3)
    p = np.where(t > 0, 10 * (4 - t), 0)  # ids 30, 20, 10 in reverse order
    m = match_instances(t, p)
    assert (m.tp, m.fp, m.fn) == (3, 0, 0)


def test_one_missed_cell():
    t = _squares(4)
    p = t.copy()
    p[p == 3] = 0
    m = match_instances(t, p)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (4, 3, 3, 0, 1)
    assert m.precision == 1.0
    assert m.recall == pytest.approx(3 / 4)
    assert m.f1 == pytest.approx(6 / 7)
    assert m.ap == pytest.approx(3 / 4)


def test_one_split_cell_counts_a_false_positive():
    t = _squares(3)
    p = t.copy()
    ys, xs = np.nonzero(t == 2)
    # Cut cell 2 into 7 and 3 columns: IoU 0.7 (still a TP) and 0.3 (an FP).
    right = xs >= xs.min() + 7
    p[ys[right], xs[right]] = 9
    m = match_instances(t, p)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (3, 4, 3, 1, 0)
    assert m.ap == pytest.approx(3 / 4)
    assert m.mean_matched_iou == pytest.approx((1 + 0.7 + 1) / 3)


def test_one_merged_pair_counts_a_false_negative():
    t = np.zeros((10, 30), np.int32)
    t[:, 0:12] = 1  # 120 px
    t[:, 12:20] = 2  # 80 px, touching cell 1
    t[:, 25:29] = 3
    p = np.zeros_like(t)
    p[:, 0:20] = 1  # the pair merged: IoU 0.6 with cell 1, 0.4 with cell 2
    p[:, 25:29] = 2
    m = match_instances(t, p)
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (3, 2, 2, 0, 1)
    assert m.recall == pytest.approx(2 / 3)
    assert m.mean_matched_iou == pytest.approx((0.6 + 1.0) / 2)


def test_empty_images():
    empty = np.zeros((8, 8), np.int32)
    both = match_instances(empty, empty)
    assert (both.tp, both.fp, both.fn) == (0, 0, 0)
    assert both.precision == both.recall == both.f1 == both.ap == 1.0
    some = _squares(2)
    no_pred = match_instances(some, np.zeros_like(some))
    assert (no_pred.fn, no_pred.precision, no_pred.recall, no_pred.f1, no_pred.ap) == (
        2,
        0.0,
        0.0,
        0.0,
        0.0,
    )
    no_true = match_instances(np.zeros_like(some), some)
    assert (no_true.fp, no_true.precision, no_true.recall, no_true.f1, no_true.ap) == (
        2,
        0.0,
        0.0,
        0.0,
        0.0,
    )


def test_iou_matrix_values():
    t = np.array([[1, 1, 1, 1, 0, 2, 2]])
    p = np.array([[1, 1, 0, 3, 3, 3, 0]])
    iou = iou_matrix(t, p)
    # rows: true 1, 2; columns: pred 1, 3 (ids are made contiguous)
    np.testing.assert_allclose(iou, [[2 / 4, 1 / 6], [0.0, 1 / 4]])


def test_hungarian_beats_greedy_at_low_threshold():
    # Greedy would take the best pair (B, P; IoU 0.5) and leave A unmatched; the
    # assignment A-P (1/3) + B-Q (1/3) matches both at threshold 0.3.
    t = np.zeros((1, 12), np.int32)
    t[0, 0:1], t[0, 1:4] = 1, 2
    p = np.zeros((1, 12), np.int32)
    p[0, 0:3], p[0, 3:4] = 1, 2
    assert match_instances(t, p, iou_threshold=0.3).tp == 2
    assert match_instances(t, p, iou_threshold=0.5).tp == 1


def test_shape_mismatch_and_bad_labels():
    with pytest.raises(ValueError):
        match_instances(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.int32))
    with pytest.raises(ValueError):
        match_instances(np.full((2, 2), -1), np.zeros((2, 2), np.int32))
    with pytest.raises(TypeError):
        match_instances(np.zeros((2, 2), np.float32), np.zeros((2, 2), np.int32))


def test_as_dict_and_count_error():
    d = match_instances(_squares(2), _squares(2)).as_dict()
    assert {"n_true", "n_pred", "tp", "fp", "fn", "f1", "ap", "mean_matched_iou"} <= set(d)
    assert count_error(n_true=10, n_pred=7) == -3


def _two_image_stats() -> InstanceStats:
    stats = InstanceStats()
    # image a: 3 cells, all found exactly
    a = _squares(3)
    stats.update("a", a, a.copy())
    # image b: 2 cells; cell 1 found, cell 2 missed, plus one false detection
    b_true = _squares(3)
    b_true[b_true == 3] = 0
    b_pred = _squares(3)
    b_pred[b_pred == 2] = 0
    stats.update("b", b_true, b_pred)
    return stats


def test_instance_stats_aggregate_exact():
    stats = _two_image_stats()
    assert [r["count_error"] for r in stats.rows] == [0, 0]
    row_b = stats.rows[1]
    assert (row_b["tp"], row_b["fp"], row_b["fn"]) == (1, 1, 1)
    agg = stats.aggregate()
    assert agg["n_images"] == 2
    assert agg["true_count_mean"] == 2.5 and agg["pred_count_mean"] == 2.5
    assert agg["count_mae"] == 0.0 and agg["count_bias"] == 0.0
    # micro: TP 4, FP 1, FN 1
    assert (agg["tp"], agg["fp"], agg["fn"]) == (4, 1, 1)
    assert agg["precision"] == pytest.approx(4 / 5)
    assert agg["recall"] == pytest.approx(4 / 5)
    assert agg["f1"] == pytest.approx(4 / 5)
    assert agg["ap50"] == pytest.approx(4 / 6)
    assert agg["mean_matched_iou"] == 1.0
    assert [r["ap50"] for r in stats.rows] == [1.0, pytest.approx(1 / 3)]
    # one name per number: AP at IoU 0.5 is ap50 alone
    assert "ap" not in agg and "ap" not in stats.rows[0]


def test_instance_stats_count_errors():
    stats = InstanceStats()
    t = _squares(4)
    stats.update("under", t, _squares(2))  # -2
    stats.update("over", _squares(2), _squares(3))  # +1
    agg = stats.aggregate()
    assert agg["count_mae"] == 1.5
    assert agg["count_bias"] == -0.5
    assert agg["count_mape"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    counts, edges = stats.area_histogram(bins=4)
    assert counts.sum() == 2 + 3  # predicted instances
    assert stats.area_histogram(bins=4, which="true")[0].sum() == 4 + 2
    stats.reset()
    assert stats.rows == [] and stats.aggregate() == {"n_images": 0}


def test_per_image_csv_round_trip(tmp_path):
    stats = _two_image_stats()
    # every row key is a column; the rest are filled only with boxes or a calibrated model
    assert list(stats.rows[0]) == list(ROW_KEYS) == rundir.PER_IMAGE_COLUMNS[:len(ROW_KEYS)]
    assert rundir.PER_IMAGE_COLUMNS[len(ROW_KEYS):] == [
        "box_tp", "box_fp", "box_fn", "box_count", "count_low", "count_high", "in_interval"]
    path = rundir.write_per_image(tmp_path / "sub", stats.rows)
    assert [p.name for p in path.parent.iterdir()] == ["per_image.csv"]  # no temp left
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == ["a", "b"]
    for got, want in zip(rows, stats.rows, strict=True):
        assert list(got) == rundir.PER_IMAGE_COLUMNS
        assert all(got[k] == "" for k in rundir.PER_IMAGE_COLUMNS[len(ROW_KEYS):])
        for key, value in want.items():
            if isinstance(value, float):
                assert math.isclose(float(got[key]), value)
            else:
                assert got[key] == str(value)


def test_ap_over_iou_thresholds_counts_pairs_that_reach_each_threshold():
    true = np.zeros((40, 40), np.int32)
    true[0:10, 0:10] = 1          # predicted exactly: IoU 1
    true[20:30, 0:10] = 2         # predicted shifted by 2 px: IoU 80/120 = 0.667
    true[0:10, 20:30] = 3         # missed
    pred = np.zeros_like(true)
    pred[0:10, 0:10] = 1
    pred[22:32, 0:10] = 2
    pred[30:40, 30:40] = 3        # false positive
    stats = InstanceStats()
    stats.update("a", true, pred)
    agg = stats.aggregate()
    assert agg["ap50"] == pytest.approx(2 / 4) == pytest.approx(stats.rows[0]["ap50"])
    assert agg["ap75"] == pytest.approx(1 / 5)  # only the exact cell is a TP at 0.75
    # thresholds 0.50..0.65: 2 TPs (2/4); 0.70..0.95: 1 TP (1/5)
    assert agg["map"] == pytest.approx((4 * 2 / 4 + 6 * 1 / 5) / 10)
    empty = InstanceStats()
    empty.update("e", np.zeros((5, 5), np.int32), np.zeros((5, 5), np.int32))
    assert empty.aggregate()["map"] == 1.0
