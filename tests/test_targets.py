"""Instance-aware targets (bloodseg.targets) and the marker watersheds that invert them
(bloodseg.postprocess.markers): exact answers on drawn cells."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from scipy import ndimage

from bloodseg.labels import mask_from_instances
from bloodseg.metrics import match_instances
from bloodseg.postprocess import (
    ContourWatershed,
    DistanceContourWatershed,
    DistanceWatershed,
    Watershed,
)
from bloodseg.targets import contour_target, distance_target, unet_weight_map

CONF = Path(__file__).resolve().parents[1] / "conf" / "postprocess"


# -- drawing ------------------------------------------------------------------------------


def draw(shape, cells, gap: int = 0) -> np.ndarray:
    """int32 labels of ellipses ``(cx, cy, rx, ry[, angle])``, ids 1..N in order. Overlaps go
    to the nearest centre (a straight shared boundary); ``gap`` > 0 then cuts a background
    gap of that many px between touching cells, as in BBBC041Seg masks."""
    best = np.full(shape, np.inf)
    inst = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for k, (cx, cy, rx, ry, *angle) in enumerate(cells, start=1):
        m = np.zeros(shape, np.uint8)
        cv2.ellipse(m, (cx, cy), (rx, ry), angle[0] if angle else 0, 0, 360, 1, -1)
        d = np.hypot(yy - cy, xx - cx)
        win = (m > 0) & (d < best)
        inst[win], best[win] = k, d[win]
    if gap:
        inst[mask_from_instances(inst, gap_px=gap) == 0] = 0
    return inst


def pair(gap=0, r=20, shape=(80, 120)):
    """Two discs of radius ``r`` side by side, centres ~1.8 r apart (they overlap: the shared
    boundary is the vertical line half way). Returns labels and the two centres (y, x)."""
    cy, cx = shape[0] // 2, shape[1] // 2
    d = int(0.9 * r)
    x1, x2 = cx - d, cx + d + 1  # midpoint between pixels: disc 1 ends at column cx
    return draw(shape, [(x1, cy, r, r), (x2, cy, r, r)], gap), (cy, x1), (cy, x2)


def contact(inst, row):
    """(last column of cell 1, first column of cell 2) on ``row``."""
    return np.flatnonzero(inst[row] == 1).max(), np.flatnonzero(inst[row] == 2).min()


def chain(gap=0, r=20, shape=(80, 160)):
    cy, cx, d = shape[0] // 2, shape[1] // 2, int(1.8 * r)
    return draw(shape, [(cx - d, cy, r, r), (cx, cy, r, r), (cx + d, cy, r, r)], gap)


def squares(gap: int) -> np.ndarray:
    """Two 10x10 squares in rows 5..14: columns 5..14 and 15 + gap .. 24 + gap."""
    inst = np.zeros((20, 32), np.int32)
    inst[5:15, 5:15] = 1
    inst[5:15, 15 + gap : 25 + gap] = 2
    return inst


def maxima(d: np.ndarray, floor: float = 0.5) -> list[tuple[int, int]]:
    """(y, x) of the 8-connected plateaus of 3x3 local maxima above ``floor``."""
    peak = (d == ndimage.maximum_filter(d, size=3)) & (d > floor)
    lab, n = ndimage.label(peak, np.ones((3, 3)))
    centres = ndimage.center_of_mass(peak, lab, range(1, n + 1))
    return [(int(round(y)), int(round(x))) for y, x in centres]


# -- contour_target -----------------------------------------------------------------------


def test_contour_all_is_the_outer_rim_of_every_cell():
    inst = np.zeros((20, 20), np.int32)
    inst[5:15, 5:15] = 3
    c = contour_target(inst, width=2)
    assert c.dtype == np.uint8 and set(np.unique(c)) == {0, 1, 2}
    assert (c == 2).sum() == 100 - 36 and (c == 1).sum() == 36  # 6x6 interior
    assert (c[7:13, 7:13] == 1).all()
    np.testing.assert_array_equal(c > 0, inst > 0)


def test_contour_image_edge_is_not_a_border():
    inst = np.zeros((20, 20), np.int32)
    inst[:, :8] = 1  # a cell cut by three image edges
    c = contour_target(inst, width=2)
    assert (c[:, :6] == 1).all() and (c[:, 6:8] == 2).all()


@pytest.mark.parametrize("gap", [0, 1])
def test_contour_touching_squares_exact(gap):
    inst = squares(gap)
    c = contour_target(inst, width=1, mode="touching")
    border = np.zeros_like(inst, bool)
    border[5:15, [14, 15 + gap]] = True  # the facing columns
    # rim pixels (top and bottom rows) within 2 * width + 1 = 3 px of the other square
    border[[5, 14], 12 + gap : 15] = True
    border[[5, 14], 15 + gap : 18] = True
    np.testing.assert_array_equal(c == 2, border)
    # mode "all": the whole 1-px rim of both squares
    assert (contour_target(inst, width=1) == 2).sum() == 2 * 36


@pytest.mark.parametrize("gap", [0, 1])
def test_contour_two_touching_discs(gap):
    inst, (cy, x1), (_, x2) = pair(gap)
    last1, first2 = contact(inst, cy)
    assert first2 - last1 == gap + 1
    for mode in ("all", "touching"):
        c = contour_target(inst, width=2, mode=mode)
        assert (c[cy, last1 - 1 : last1 + 1] == 2).all(), mode  # disc 1's side of the contact
        assert (c[cy, first2 : first2 + 2] == 2).all(), mode  # disc 2's side
        assert (c[cy, first2 + 2 : x2 + 1] == 1).all() and c[cy, x1] == 1
    far = np.flatnonzero(inst[cy] == 1)[0]  # left end of disc 1: faces nobody
    assert contour_target(inst, 2, "all")[cy, far] == 2
    touching = contour_target(inst, 2, "touching")
    assert touching[cy, far] == 1
    assert touching[cy - 19, x1] == 1 and touching[cy, x2 + 19] == 1  # top / right rims
    np.testing.assert_array_equal(touching > 0, inst > 0)


def test_contour_chain_has_three_interiors():
    for gap in (0, 1):
        c = contour_target(chain(gap), width=2)
        assert ndimage.label(c == 1, np.ones((3, 3)))[1] == 3


def test_contour_lone_cell_has_no_touching_border():
    inst = draw((60, 60), [(30, 30, 20, 20)])
    assert (contour_target(inst, 2, "touching") == 2).sum() == 0


# -- distance_target ----------------------------------------------------------------------


@pytest.mark.parametrize("gap", [0, 1])
def test_distance_two_touching_discs(gap):
    inst, c1, c2 = pair(gap)
    d = distance_target(inst)
    assert d.dtype == np.float32 and d.min() == 0 and d.max() == 1.0
    assert (d[inst == 0] == 0).all() and (d[inst > 0] > 0).all()
    peaks = maxima(d)
    assert len(peaks) == 2
    for (py, px), (cy, cx) in zip(sorted(peaks, key=lambda p: p[1]), (c1, c2), strict=True):
        assert abs(py - cy) <= 1 and abs(px - cx) <= 2
        assert d[py, px] == pytest.approx(1.0)
    # scaled per cell: a small cell next to a big one also peaks at 1
    both = draw((80, 120), [(40, 40, 30, 30), (85, 40, 12, 12)])
    assert [float(d[both == k].max()) for k in (1, 2)] == [1.0, 1.0]


def test_distance_chain_has_three_maxima():
    assert len(maxima(distance_target(chain()))) == 3


def test_distance_is_the_edt_to_the_own_boundary():
    inst = np.zeros((11, 11), np.int32)
    inst[1:10, 1:10] = 1  # 9x9 square: EDT 1..5 from the rim to the centre
    d = distance_target(inst)
    np.testing.assert_allclose(d[5, 1:10], np.array([1, 2, 3, 4, 5, 4, 3, 2, 1]) / 5)


# -- unet_weight_map ----------------------------------------------------------------------


def test_weight_map_exact_in_a_one_pixel_gap():
    inst = squares(gap=1)
    w0, sigma = 10.0, 5.0
    w = unet_weight_map(inst, w0=w0, sigma=sigma)
    n, n_fg = inst.size, int((inst > 0).sum())
    wc_fg, wc_bg = n / (2 * n_fg), n / (2 * (n - n_fg))
    assert w.dtype == np.float32
    np.testing.assert_allclose(w[inst > 0], wc_fg, rtol=1e-6)
    # a gap pixel is 1 px from both squares
    assert w[10, 15] == pytest.approx(wc_bg + w0 * math.exp(-(2**2) / (2 * sigma**2)), rel=1e-5)
    assert w.max() == w[5:15, 15].max()  # the gap holds the maximum
    # a corner pixel: 7.8 px from one square (row 5, column 25), 17.7 px from the other
    d1, d2 = math.hypot(5, 31 - 25), math.hypot(5, 31 - 14)
    assert w[0, 31] == pytest.approx(wc_bg + w0 * math.exp(-((d1 + d2) ** 2) / 50), rel=1e-5)


def test_weight_map_discs_gap_is_highest_far_is_class_weight():
    inst, (cy, _), _ = pair(gap=1, shape=(120, 200))
    w = unet_weight_map(inst)
    last1, first2 = contact(inst, cy)
    assert first2 - last1 == 2  # one gap column
    wc_bg = inst.size / (2 * (inst == 0).sum())
    assert w[cy, last1 + 1] == w.max()  # 1 px from both: w_c + w0 exp(-(1 + 1)^2 / 50)
    assert w[cy, last1 + 1] == pytest.approx(wc_bg + 10 * math.exp(-4 / 50), rel=1e-5)
    assert w[0, 0] == pytest.approx(wc_bg, abs=1e-3)  # far from both cells
    w_plain = unet_weight_map(inst, class_balance=False)
    assert w_plain[0, 0] == pytest.approx(1.0, abs=1e-3) and (w_plain[inst > 0] == 1).all()


def test_weight_map_single_cell_has_no_border_term():
    inst = draw((60, 60), [(30, 30, 15, 15)])
    w = unet_weight_map(inst, class_balance=False)
    assert (w == 1).all()  # d2 is undefined: no second cell


# -- empty images -------------------------------------------------------------------------


def test_empty_image_targets_are_zero():
    inst = np.zeros((32, 48), np.int32)
    assert (contour_target(inst) == 0).all() and (contour_target(inst, mode="touching") == 0).all()
    assert (distance_target(inst) == 0).all()
    w = unet_weight_map(inst)
    assert w.dtype == np.float32 and np.isfinite(w).all() and (w == 1).all()


def test_target_input_checks():
    with pytest.raises(ValueError, match="HxW"):
        distance_target(np.zeros((2, 4, 4), np.int32))
    with pytest.raises(TypeError):
        contour_target(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match="mode"):
        contour_target(np.zeros((4, 4), np.int32), mode="inner")


# -- marker watersheds on perfect targets --------------------------------------------------


def scene(scale: float, shape) -> np.ndarray:
    """Touching and gapped pairs, a chain of three, a lone cell, an ellipse and cells cut by
    the image border; ``scale`` = cell radius in px."""
    r = int(scale)
    h, w = shape
    s = lambda v: int(round(v * scale))  # noqa: E731  (layout in units of r)
    cells = [
        (s(2.2), s(2.2), r, r), (s(4.0), s(2.2), r, r),  # touching pair
        (s(2.2), s(5.4), r, r), (s(4.0), s(5.4), r, r),  # pair, gap cut below
        (s(7.0), s(2.2), r, r), (s(8.8), s(2.2), r, r), (s(10.6), s(2.2), r, r),  # chain
        (s(7.5), s(5.5), r, r),  # lone cell
        (s(10.5), s(5.5), int(1.5 * r), int(0.8 * r), 30),  # ellipse
        (0, s(8.5), r, r),  # cut by the left edge
        (w - s(0.3), h - s(0.4), r, r),  # cut by a corner
    ]
    inst = draw(shape, cells)
    gapped = draw(shape, cells, gap=max(1, round(scale / 20)))
    inst[s(4.2) : s(6.6)] = gapped[s(4.2) : s(6.6)]  # the second pair has a gap
    return inst


SCENES = {
    "128px": (scene(10, (128, 128)), 11),
    "1600x1200": (scene(50, (1200, 1600)), 11),
}


def contour_outputs(inst, mode="all"):
    c = contour_target(inst, width=2, mode=mode)
    return np.stack([c == k for k in range(3)]).astype(np.float32)


def distance_outputs(inst):
    return np.stack([(inst > 0).astype(np.float32), distance_target(inst)])


def assert_recovers(true, pred, n_cells):
    assert pred.dtype == np.int32
    np.testing.assert_array_equal(np.unique(pred), np.arange(pred.max() + 1))
    assert len(np.unique(true)) - 1 == n_cells  # the scene is what it claims
    m = match_instances(true, pred, iou_threshold=0.9)
    assert (m.n_true, m.n_pred, m.tp) == (n_cells, n_cells, n_cells), m


@pytest.mark.parametrize("name", SCENES)
@pytest.mark.parametrize("mode", ["all", "touching"])
def test_contour_watershed_recovers_perfect_targets(name, mode):
    inst, n = SCENES[name]
    assert_recovers(inst, ContourWatershed()(contour_outputs(inst, mode)), n)


@pytest.mark.parametrize("name", SCENES)
@pytest.mark.parametrize("markers", ["threshold", "hmaxima"])
def test_distance_watershed_recovers_perfect_targets(name, markers):
    inst, n = SCENES[name]
    assert_recovers(inst, DistanceWatershed(markers=markers)(distance_outputs(inst)), n)


def distance_contour_outputs(inst):
    border = contour_target(inst, width=2, mode="touching") == 2
    return np.concatenate([distance_outputs(inst), border[None].astype(np.float32)])


@pytest.mark.parametrize("name", SCENES)
def test_distance_contour_watershed_recovers_perfect_targets(name):
    inst, n = SCENES[name]
    assert_recovers(inst, DistanceContourWatershed()(distance_contour_outputs(inst)), n)


def test_border_head_cuts_a_bridge_the_distance_alone_does_not():
    # A network that blurs the neck between two touching cells: its distance map treats the
    # pair as one blob (one core), but its border head sees where they meet.
    inst, _, _ = pair()
    blob = (inst > 0).astype(np.uint8)
    d = cv2.GaussianBlur(cv2.distanceTransform(blob, cv2.DIST_L2, 5), (0, 0), 6) * blob
    outputs = np.stack([blob.astype(np.float32), d / d.max(),
                        (contour_target(inst, width=2, mode="touching") == 2)])
    outputs = outputs.astype(np.float32)
    assert DistanceWatershed()(outputs[:2]).max() == 1  # merged without the border
    labels = DistanceContourWatershed()(outputs)
    assert labels.max() == 2
    assert match_instances(inst, labels, iou_threshold=0.8).tp == 2
    # border_weight=0 reads the first two channels exactly as DistanceWatershed does
    np.testing.assert_array_equal(DistanceContourWatershed(border_weight=0)(outputs),
                                  DistanceWatershed()(outputs[:2]))
    np.testing.assert_array_equal(DistanceContourWatershed(markers="hmaxima", border_weight=0)(
        outputs), DistanceWatershed(markers="hmaxima")(outputs[:2]))
    with pytest.raises(ValueError, match=r"expects \(3, H, W\)"):
        DistanceContourWatershed()(outputs[:2])


def test_without_watershed_line_touching_cells_keep_every_pixel():
    inst, _ = SCENES["128px"]
    for pp, out in (
        (ContourWatershed(watershed_line=False), contour_outputs(inst)),
        (DistanceWatershed(watershed_line=False), distance_outputs(inst)),
    ):
        pred = pp(out)
        np.testing.assert_array_equal(pred > 0, inst > 0)
        assert match_instances(inst, pred, 0.9).tp == 11


def test_watershed_line_separates_cells_like_gt_gaps():
    inst, (cy, _), _ = pair(gap=0)
    pred = ContourWatershed()(contour_outputs(inst))
    assert pred.max() == 2
    # no two different ids are 8-neighbours: the mask's components are the cells again
    assert ndimage.label(pred > 0, np.ones((3, 3)))[1] == 2


def test_empty_maps_give_no_instances():
    for pp in (ContourWatershed(), DistanceWatershed(), DistanceWatershed(markers="hmaxima")):
        lab = pp(np.zeros((pp.channels, 40, 50), np.float32))
        assert lab.shape == (40, 50) and lab.dtype == np.int32 and lab.max() == 0


def test_foreground_without_confident_interior_is_one_instance():
    blob = draw((80, 120), [(40, 40, 20, 20), (75, 40, 20, 20)]) > 0  # two merged cells
    contour = np.stack([1 - 0.8 * blob, 0.4 * blob, 0.4 * blob]).astype(np.float32)
    assert ContourWatershed()(contour).max() == 1
    dist = np.stack([blob, 0.3 * blob]).astype(np.float32)
    assert DistanceWatershed()(dist).max() == 1
    assert DistanceWatershed(markers="hmaxima")(dist).max() == 1


def test_one_seeded_cell_floods_its_whole_component():
    inst, _, _ = pair(gap=0)
    out = contour_outputs(inst)
    out[1][inst == 2] = 0.6  # the right cell is foreground but has no confident interior
    pred = ContourWatershed(watershed_line=False)(out)
    assert pred.max() == 1 and ((pred > 0) == (inst > 0)).all()


def test_small_markers_and_debris_are_dropped():
    inst, (cy, _), _ = pair(gap=0)
    out = contour_outputs(inst)
    interior = np.array([0, 1, 0], np.float32)[:, None, None]
    out[:, 5:8, 5:8] = interior  # a 9 px speck of debris: one instance below min_area
    last1, _ = contact(inst, cy)
    # a confident 2x2 speck in the middle of the 4 px border band between the cells: a
    # marker of its own (it touches no interior), but too small to seed a cell
    out[:, cy - 1 : cy + 1, last1 : last1 + 2] = interior
    assert ContourWatershed()(out).max() == 2
    keep_all = ContourWatershed(min_marker_area_frac=0, min_area=0, min_area_frac=0)
    assert keep_all(out).max() == 4


def test_foreground_and_threshold():
    inst, _, _ = pair()
    out = contour_outputs(inst)
    cw = ContourWatershed(threshold=0.4)
    assert cw.threshold == 0.4
    np.testing.assert_array_equal(cw.foreground(out) > cw.threshold, inst > 0)
    dout = distance_outputs(inst)
    dw = DistanceWatershed()
    assert dw.foreground(dout).shape == inst.shape
    np.testing.assert_array_equal(dw.foreground(dout) > dw.threshold, inst > 0)


def test_output_checks():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        ContourWatershed()(np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        DistanceWatershed()(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="markers"):
        DistanceWatershed(markers="peaks")


def test_batch():
    inst, _, _ = pair()
    out = contour_outputs(inst)
    labs = ContourWatershed().batch(np.stack([out, np.zeros_like(out)]))
    assert [int(lab.max()) for lab in labs] == [2, 0]


@pytest.mark.parametrize("name, cls", [("binary", Watershed), ("contour", ContourWatershed),
                                       ("distance", DistanceWatershed),
                                       ("distance_contour", DistanceContourWatershed)])
def test_hydra_configs_name_every_parameter(name, cls):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(cfg) - {"_target_"} == fields
    pp = instantiate(cfg)
    assert type(pp) is cls and pp == cls()  # the config spells out the defaults
