"""Per-cell measurements (cells.csv) and the label exports QuPath, napari and Fiji read."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import tifffile

from bloodseg.measure import CELL_COLUMNS, cell_rows, polygons, write_geojson, write_label_tiff


def two_cells() -> np.ndarray:
    lab = np.zeros((100, 120), np.int32)
    cv2.circle(lab, (40, 50), 10, 1, -1)            # a whole disc
    lab[0:15, 100:120] = 2                          # a rectangle cut by the frame (top right)
    return lab


def test_cell_rows_measure_each_cell():
    rows = cell_rows(two_cells(), file="a.png", output="a.png")
    assert [r["cell_id"] for r in rows] == [1, 2] and set(rows[0]) == set(CELL_COLUMNS)
    disc, cut = rows
    assert disc["area_px"] == int((two_cells() == 1).sum())
    assert (disc["centroid_x"], disc["centroid_y"]) == pytest.approx((40, 50), abs=0.01)
    assert (disc["bbox_x0"], disc["bbox_y0"], disc["bbox_x1"], disc["bbox_y1"]) == (30, 40,
                                                                                   51, 61)
    assert disc["equivalent_diameter_px"] == pytest.approx(2 * np.sqrt(disc["area_px"] / np.pi),
                                                           abs=0.01)
    assert disc["eccentricity"] < 0.2 and not disc["touches_frame"]
    assert cut["area_px"] == 300 and cut["touches_frame"] and cut["eccentricity"] > 0.5
    assert cell_rows(np.zeros((5, 5), np.int32), "b", "b") == []


def test_geojson_polygons_outline_each_cell(tmp_path):
    lab = two_cells()
    path = write_geojson(tmp_path / "a.geojson", lab)
    data = json.loads(path.read_text())
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 2
    for feature, (cell_id, _) in zip(data["features"], polygons(lab)):
        assert feature["properties"]["objectType"] == "detection"
        coords = np.asarray(feature["geometry"]["coordinates"][0], np.float32)
        assert coords[0].tolist() == coords[-1].tolist()  # a closed ring
        # the polygon's area is the cell's, within the outline's half-pixel
        area = cv2.contourArea(coords[:-1])
        assert area == pytest.approx((lab == cell_id).sum(), rel=0.15)
        assert coords[:, 0].min() >= 0 and coords[:, 1].min() >= 0


def test_label_tiff_round_trips(tmp_path):
    lab = two_cells()
    back = tifffile.imread(write_label_tiff(tmp_path / "a.tif", lab))
    assert back.dtype == np.uint16 and np.array_equal(back, lab)


def test_predict_writes_cells_and_the_extra_formats(trained_run, tmp_path):
    from hydra.core.global_hydra import GlobalHydra

    from bloodseg.prediction import predict
    from tests.conftest import compose_cfg

    image = next((trained_run / "samples").glob("*_image.png"))
    out = tmp_path / "out"
    cfg = compose_cfg(tmp_path, [f"ckpt_path={trained_run / 'checkpoints' / 'best.ckpt'}",
                                 f"input={image}", f"output={out}",
                                 "predict.formats=[geojson,tiff]"], config_name="predict")
    try:
        rows, failed = predict(cfg)
    finally:
        GlobalHydra.instance().clear()
    (row,) = rows
    cells = list(csv.DictReader(open(out / "cells.csv")))
    assert len(cells) == row["cell_count"] > 0
    assert {c["output"] for c in cells} == {row["output"]}
    stem = row["output"].removesuffix(".png")
    labels = cv2.imread(str(out / "instances" / row["output"]), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(tifffile.imread(out / "tiff" / f"{stem}.tif"), labels)
    features = json.loads((out / "geojson" / f"{stem}.geojson").read_text())["features"]
    assert len(features) == row["cell_count"]
    assert sorted(int(c["area_px"]) for c in cells) == sorted(
        np.bincount(labels.ravel())[1:][np.bincount(labels.ravel())[1:] > 0].tolist())
