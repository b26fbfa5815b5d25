"""bloodseg.trust and bloodseg.boxes: count intervals, review flags, per-cell confidence, box
agreement; the calibration carried by a model file and used by bloodseg-predict."""

from __future__ import annotations

import csv
import math
import shutil

import cv2
import numpy as np
import pytest

from bloodseg import trust
from bloodseg.boxes import box_agreement, instance_boxes
from bloodseg.data.boxes import boxes_for, read_boxes_csv
from bloodseg.io import CheckpointError, DataError
from bloodseg.metrics import InstanceStats
from bloodseg.modelfile import load_model, write_calibrated
from bloodseg.spec import trust_from_dict
from bloodseg.weights.shipped import weights_path
from tests.conftest import SHARED_DATA
from tests.helpers.cli import run

CENTRE = {"stain_a": 137.0, "stain_b": 106.0, "foreground": 0.29, "log_cell_area": 9.1,
          "uncertain": 0.14}
SPREAD = {"stain_a": 9.4, "stain_b": 8.2, "foreground": 0.15, "log_cell_area": 0.14,
          "uncertain": 0.03}

COVARIANCE = np.diag([SPREAD[k] ** 2 for k in trust.FEATURES]).tolist()


def calibration(**interval) -> trust.Trust:
    return trust.Trust(trust.CountInterval(**{"method": "constant", "level": 0.9, "low": -4.0,
                                              "high": 3.0, **interval}),
                       trust.Typical(CENTRE, COVARIANCE, 3.5), trust.Review(0.3, 0.05))


def rows(rng, n=40, noise=3):
    """Held-out rows as the calibration script makes them: true count = count + noise."""
    out = []
    for i in range(n):
        count = int(rng.integers(40, 100))
        spread = int(rng.integers(0, 4))
        out.append({"fold": i % 4, "name": f"im{i}", "count": count, "spread": spread,
                    "truth": count + int(rng.integers(-noise - spread, noise + spread + 1)),
                    "features": {k: v + rng.normal(0, SPREAD[k]) for k, v in CENTRE.items()},
                    "clumps": float(rng.uniform(0, 0.03))})
    return out


def test_interval_bounds_round_outwards_and_never_go_below_zero():
    iv = trust.CountInterval("constant", 0.9, -2.5, 3.2)
    assert iv.bounds(10) == (7, 14)
    assert iv.bounds(1) == (0, 5)
    sq = trust.CountInterval("sqrt", 0.9, -1.0, 1.0)
    assert sq.bounds(100) == (90, 110)
    sp = trust.CountInterval("spread", 0.9, -1.0, 2.0)
    assert sp.bounds(50, spread=0) == (49, 52) and sp.bounds(50, spread=3) == (46, 58)


def test_nested_cv_reports_coverage_and_chooses_the_narrowest_within_the_goal():
    data = rows(np.random.default_rng(0), n=200)
    report = trust.evaluate_methods(data)
    for m in trust.METHODS:
        got = report["methods"][m]
        assert len(got["per_fold"]) == 4 and got["images"] == 200
        assert 0 <= got["coverage"] <= 1 and got["mean_width"] > 0
    ok = [m for m, v in report["methods"].items()
          if trust.COVERAGE_GOAL[0] <= v["coverage"] <= trust.COVERAGE_GOAL[1]]
    assert ok, report
    assert report["chosen"] == min(ok, key=lambda m: report["methods"][m]["mean_width"])
    # each fold's interval never saw that fold: rows of a fold moved far away are missed
    shifted = [{**r, "truth": r["truth"] + 50} if r["fold"] == 0 else r for r in data]
    fold0 = trust.evaluate_methods(shifted)["methods"]["constant"]["per_fold"][0]
    assert fold0["coverage"] < 0.2


def test_a_repeat_never_calibrates_a_fold_on_its_own_images():
    """Repeated k-fold: every image is held out once per repeat; fold r/k's interval is fitted
    without any row of its images, so an image far off in both repeats stays uncovered."""
    rng = np.random.default_rng(2)
    one = rows(rng, n=80)
    data = [{**r, "fold": f"{rep}/{(i + rep) % 4}"}
            for rep in (0, 1) for i, r in enumerate(one)]
    odd = {"im3", "im7"}  # miscounted by 60 in both repeats
    data = [{**r, "truth": r["truth"] + 60} if r["name"] in odd else r for r in data]
    report = trust.evaluate_methods(data)
    assert report["folds"] == [f"{r}/{k}" for r in (0, 1) for k in range(4)]
    assert report["methods"]["constant"]["images"] == 160
    for k in report["folds"]:
        cal = trust._calibration_rows(data, k)
        held = {r["name"] for r in data if r["fold"] == k}
        assert cal and not held & {r["name"] for r in cal}
        iv = trust.fit_interval("constant", [r["count"] for r in cal],
                                [r["spread"] for r in cal], [r["truth"] for r in cal], 0.9)
        for r in (r for r in data if r["fold"] == k and r["name"] in odd):
            low, high = iv.bounds(r["count"])
            assert not low <= r["truth"] <= high  # its twin in the other repeat did not help
    md = trust.calibration_markdown(report, trust.evaluate_review(data, {}), "cmd")
    assert "| fold 0/0 |" in md and "Fold r/k: fold k of repeat r" in md


def test_review_flags_another_stain_and_not_the_calibration_images():
    rng = np.random.default_rng(1)
    data = rows(rng)
    other = {k: [{"features": {**CENTRE, "stain_b": 126.0, "uncertain": 0.31}}] * 5
             for k in range(4)}
    rates = trust.evaluate_review(data, other)
    assert rates["other_rate"] == 1.0 and rates["other"] == 20
    assert rates["held_out_rate"] <= 0.15 and rates["held_out"] == 40
    t = trust.calibrate(data, "constant")
    bccd_like = {**CENTRE, "stain_b": 126.0, "foreground": 0.48, "uncertain": 0.31}
    obs = trust.Observation(80, 0, bccd_like, 0.0)
    assert t.reasons(obs, 76, 83) == ["unlike training images"]
    assert t.reasons(trust.Observation(80, 0, CENTRE, 0.5), 76, 83) == ["many merged clumps"]
    assert "wide interval" in t.reasons(trust.Observation(10, 0, CENTRE, 0.0), 0, 40)


def test_a_calibration_round_trips_and_bad_values_are_refused():
    t = calibration(coverage=0.9, mean_width=7.5, images=40)
    assert trust_from_dict(t.to_dict(), "m.pt") == t
    bad = [({"interval": {**t.to_dict()["interval"], "low": math.nan}}, "interval.low"),
           ({"interval": {**t.to_dict()["interval"], "method": "magic"}}, "interval.method"),
           ({"interval": {**t.to_dict()["interval"], "high": -9.0}}, "interval.high"),
           ({"typical": {**t.to_dict()["typical"], "max_distance": -1}}, "max_distance"),
           ({"typical": {**t.to_dict()["typical"], "covariance": [[1.0]]}}, "covariance"),
           ({"typical": {**t.to_dict()["typical"],
                         "covariance": (-np.eye(5)).tolist()}}, "positive-definite"),
           ({"review": {"relative_width": 0.3, "clumps": 5.0}}, "review.clumps"),
           ({"review": {"relative_width": 0.3, "clumps": 0.1, "_target_": "os.system"}},
            "_target_")]
    for change, key in bad:
        with pytest.raises(CheckpointError, match=key):
            trust_from_dict({**t.to_dict(), **change}, "m.pt")


def test_a_bundle_carries_its_calibration_with_its_weights_unchanged(tmp_path):
    src = tmp_path / "model.pt"
    shutil.copy(weights_path("count_real"), src)
    before_spec, before_net = load_model(src)
    write_calibrated(src, calibration(), tmp_path / "calibrated.pt")
    spec, net = load_model(tmp_path / "calibrated.pt")
    assert spec.trust == calibration()
    assert spec.replace(trust=None) == before_spec.replace(trust=None)
    a, b = before_net.state_dict(), net.state_dict()
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)


def torch_equal(x, y) -> bool:
    return bool((x == y).all())


def test_per_cell_confidence_is_the_mean_foreground_probability():
    from bloodseg.measure import cell_rows

    labels = np.zeros((20, 20), np.int32)
    labels[2:8, 2:8], labels[10:18, 10:18] = 1, 2
    prob = np.where(labels == 1, 0.9, np.where(labels == 2, 0.6, 0.1)).astype(np.float32)
    got = {r["cell_id"]: r["confidence"] for r in cell_rows(labels, "a.png", "a.png", prob)}
    assert got == {1: 0.9, 2: 0.6}
    assert {r["confidence"] for r in cell_rows(labels, "a.png", "a.png")} == {""}


def test_box_agreement_and_the_box_columns_of_instance_stats(tmp_path):
    labels = np.zeros((50, 50), np.int32)
    labels[0:10, 0:10], labels[20:30, 20:30], labels[40:45, 40:45] = 1, 2, 3
    assert instance_boxes(labels).tolist() == [[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 44, 44]]
    boxes = np.array([[0, 0, 9, 9], [21, 21, 30, 30], [0, 30, 5, 35], [10, 40, 15, 45]], float)
    assert box_agreement(labels, boxes) == {"box_tp": 2, "box_fp": 1, "box_fn": 2,
                                            "box_count": 4}
    csv_file = tmp_path / "boxes.csv"
    csv_file.write_text("stem,split,x0,y0,x1,y1,label\n"
                        + "".join(f"a,test,{x0:g},{y0:g},{x1:g},{y1:g},rbc\n"
                                  for x0, y0, x1, y1 in boxes))
    read = read_boxes_csv(csv_file)
    assert list(read) == ["a"] and np.array_equal(read["a"], boxes)
    assert boxes_for(tmp_path) is not None and boxes_for(tmp_path / "none") is None
    stats = InstanceStats(boxes=read)
    stats.update("a.png", labels, labels)
    stats.update("b.png", labels, labels)  # no boxes for b: not in the box columns
    agg = stats.aggregate()
    assert agg["box_f1"] == pytest.approx(4 / 7) and agg["box_images"] == 1
    assert agg["box_count_mae"] == 1 and agg["box_count_bias"] == -1
    plain = InstanceStats()
    plain.update("a.png", labels, labels)
    assert "box_f1" not in plain.aggregate() and "box_tp" not in plain.rows[0]
    (tmp_path / "bad.csv").write_text("stem,x0\na,1\n")
    with pytest.raises(DataError, match="bad.csv: no column"):
        read_boxes_csv(tmp_path / "bad.csv")


@pytest.mark.real
def test_masks_against_the_boxes_disagree_as_two_annotations_do():
    """The yardstick row of the cross-validation, on the 40 shared pairs' folds."""
    from bloodseg.cv.folds import assign_folds, list_pairs
    from bloodseg.cv.runner import masks_vs_boxes

    boxes = read_boxes_csv(SHARED_DATA / "bbbc041-boxes" / "boxes.csv")
    samples = {s.name: s for s in list_pairs(SHARED_DATA / "bbbc041seg-mini")}
    folds = masks_vs_boxes(samples, assign_folds(list(samples), 4, 0), boxes)
    f1 = [f["metrics"]["box_f1"] for f in folds]
    assert all(0.8 < v < 0.95 for v in f1), f1  # agree, but far from perfectly
    assert all(math.isnan(f["metrics"]["f1"]) for f in folds)  # only the box columns
    bias = np.mean([f["metrics"]["box_count_bias"] for f in folds])
    assert 4 < bias < 9  # the masks hold ~6.6 more cells per image than the boxes


@pytest.mark.real
def test_predict_writes_intervals_review_and_confidence(tmp_path):
    """The shipped model carries its calibration: counts.csv has the interval and review
    columns, cells.csv a confidence, and a smear of another stain (BCCD) is flagged."""
    smears = tmp_path / "in"
    smears.mkdir()
    shutil.copy(SHARED_DATA / "bbbc041seg-sample" / "original.png", smears / "bbbc041.png")
    bccd = sorted((SHARED_DATA / "bccd-boxes" / "JPEGImages").glob("*.jpg"))[0]
    shutil.copy(bccd, smears / "bccd.jpg")
    out = tmp_path / "out"
    proc = run("bloodseg.cli.predict", ["weights=count_real", f"input={smears}",
                                        f"output={out}"], tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["file"]: r for r in csv.DictReader((out / "counts.csv").open())}
    for r in rows.values():
        assert int(r["count_low"]) <= int(r["cell_count"]) <= int(r["count_high"])
    assert "unlike training images" in rows["bccd.jpg"]["review"]
    assert "unlike training images" not in rows["bbbc041.png"]["review"]
    assert "to review by hand" in proc.stdout
    conf = [float(c["confidence"]) for c in csv.DictReader((out / "cells.csv").open())]
    assert conf and all(0 <= c <= 1 for c in conf) and np.mean(conf) > 0.5
    # the overlay names the interval: its label box is wider than the count's alone
    from bloodseg.render import overlay

    image = cv2.cvtColor(cv2.imread(str(smears / "bbbc041.png")), cv2.COLOR_BGR2RGB)
    labels = cv2.imread(str(out / "instances" / "bbbc041.png"), cv2.IMREAD_UNCHANGED)
    written = cv2.cvtColor(cv2.imread(str(out / "overlays" / "bbbc041.png")), cv2.COLOR_BGR2RGB)
    r = rows["bbbc041.png"]
    with_interval = overlay(image, labels.astype(np.int32), count=int(r["cell_count"]),
                            interval=(int(r["count_low"]), int(r["count_high"])))
    plain = overlay(image, labels.astype(np.int32), count=int(r["cell_count"]))
    assert np.array_equal(written, with_interval) and not np.array_equal(written, plain)
