"""Synthetic blood smears with exact instance labels: the offline default dataset.

Renders thin-smear microscope images in two looks together with a per-pixel instance map:

* ``"bbbc041"``: BBBC041Seg (the Kaggle "BCCD Dataset with mask"): Giemsa-stained malaria
  smears, blue-violet / purple / grey red cells on a white, cream or grey background, some
  crenated, some with central pallor, occasional parasites, infected cells and white cells.
* ``"bccd"``: BCCD: pink-salmon red cells with pale centres, densely packed and overlapping,
  usually one white cell with a lobed purple nucleus, a few purple platelets.

Instances: every red cell (infected or not) and every white cell gets its own id 1..N, drawn
later = on top, so each pixel belongs to exactly one cell. Platelets, parasites outside cells,
stain specks and haze are painted into the image but are NOT instances, because the BBBC041Seg
masks contain red and white cells only. Cells cut by the image border are kept as instances.

:func:`mask_from_instances` turns instances into the BBBC041Seg mask convention: 255 on cells,
0 elsewhere, with a thin background gap wherever two cells touch, so that connected components
(8-connectivity) of the mask recover the instances. :func:`write_dataset` writes the Kaggle
layout ``{train,test}/{original,mask,instances}/NAME.png`` so that everything reading the real
data also runs offline.

Calibration (measured on the 41 real BBBC041Seg pairs and 292 BCCD images in
``../shared/data``): cell diameter, size spread, cell coverage, per-image background / cell
colours (``_BBBC041_PALETTES``, ``_BCCD_PALETTES``) and the gap width of the real masks.

Example::

    import numpy as np
    from pathlib import Path
    from bloodseg.data.synthetic import mask_from_instances, render_smear, write_dataset

    image, instances = render_smear(np.random.default_rng(0), 800, 600, style="bbbc041")
    mask = mask_from_instances(instances)  # uint8 {0, 255}, touching cells separated
    write_dataset(Path("data/synthetic"), n_train=100, n_test=20, size=(256, 256), seed=0)
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi

from bloodseg.labels import GAP_FRAC, MIN_CELL_AREA, mask_from_instances

__all__ = [
    "DEFAULT_CELL_DIAMETER_FRAC",
    "STYLES",
    "render_smear",
    "write_dataset",
]

STYLES = ("bbbc041", "bccd")

# Median equivalent diameter / image width of the non-border cells in the 41 real BBBC041Seg
# masks is 0.064 (p5 0.051, p95 0.081; ~102 px at 1600 px). BCCD red-cell boxes (640 px wide)
# give 0.16. Both are at the dataset's native magnification; resizing a whole image keeps them.
DEFAULT_CELL_DIAMETER_FRAC = {"bbbc041": 0.064, "bccd": 0.16}

# A visible remnant smaller than this fraction of the drawn cell is not annotatable as a cell;
# it is merged into the cell lying on top of it.
_MIN_VISIBLE_FRAC = 0.3

_LN10 = math.log(10.0)

# Per-image colours measured on the real BBBC041Seg images (one row per image; RGB):
# (median background, mean cell, darkest-decile cell, lightest-decile cell).
_BBBC041_PALETTES: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((231, 237, 222), (61, 72, 101), (31, 38, 64), (121, 133, 152)),
    ((253, 253, 253), (159, 141, 208), (105, 82, 164), (235, 226, 251)),
    ((253, 253, 253), (152, 143, 191), (97, 83, 144), (220, 219, 239)),
    ((223, 222, 228), (62, 46, 122), (30, 17, 77), (136, 119, 176)),
    ((149, 151, 145), (119, 125, 127), (104, 109, 118), (132, 134, 133)),
    ((149, 150, 143), (110, 118, 120), (84, 88, 103), (141, 142, 136)),
    ((230, 229, 225), (134, 137, 155), (82, 86, 110), (204, 204, 206)),
    ((230, 231, 224), (93, 62, 95), (38, 15, 43), (171, 145, 166)),
    ((215, 219, 206), (61, 69, 95), (31, 36, 60), (127, 136, 150)),
    ((233, 234, 233), (102, 101, 140), (64, 61, 99), (153, 152, 183)),
    ((212, 214, 214), (84, 85, 130), (55, 52, 97), (130, 130, 168)),
    ((144, 146, 142), (123, 116, 121), (116, 102, 114), (133, 125, 127)),
    ((227, 227, 226), (82, 82, 113), (41, 41, 67), (137, 135, 163)),
    ((228, 229, 227), (88, 88, 127), (40, 41, 75), (142, 141, 175)),
    ((253, 253, 253), (130, 116, 183), (89, 69, 146), (197, 187, 227)),
    ((253, 253, 253), (149, 145, 191), (91, 84, 142), (219, 219, 239)),
    ((228, 230, 222), (114, 113, 119), (80, 80, 86), (152, 152, 155)),
    ((223, 227, 225), (76, 86, 129), (27, 31, 70), (162, 170, 194)),
    ((231, 231, 226), (116, 123, 142), (65, 69, 93), (188, 192, 198)),
    ((221, 224, 222), (78, 84, 126), (40, 39, 79), (148, 154, 182)),
    ((232, 233, 233), (98, 102, 153), (66, 67, 120), (147, 149, 188)),
    ((220, 219, 226), (56, 38, 125), (28, 14, 79), (104, 83, 169)),
    ((253, 253, 253), (194, 177, 228), (101, 56, 165), (233, 222, 251)),
    ((144, 146, 142), (115, 117, 120), (101, 101, 112), (128, 128, 128)),
    ((233, 232, 227), (138, 135, 144), (106, 103, 114), (182, 178, 182)),
    ((233, 237, 224), (56, 68, 96), (35, 44, 68), (108, 123, 145)),
    ((223, 222, 229), (46, 33, 106), (19, 10, 57), (100, 85, 164)),
    ((232, 234, 232), (76, 82, 115), (23, 26, 52), (146, 151, 178)),
    ((219, 219, 225), (50, 37, 108), (18, 9, 53), (119, 107, 177)),
    ((223, 225, 223), (69, 69, 101), (31, 31, 56), (127, 128, 159)),
    ((225, 226, 226), (81, 83, 123), (52, 52, 89), (129, 128, 164)),
    ((231, 234, 232), (69, 75, 110), (22, 26, 49), (146, 151, 181)),
    ((215, 219, 223), (59, 62, 103), (15, 16, 39), (127, 132, 172)),
    ((230, 229, 232), (100, 96, 134), (41, 38, 72), (181, 178, 200)),
    ((149, 149, 144), (112, 117, 123), (81, 90, 108), (130, 133, 132)),
    ((233, 238, 223), (75, 94, 129), (34, 47, 78), (135, 153, 177)),
    ((231, 230, 234), (109, 99, 148), (70, 59, 109), (171, 161, 196)),
    ((216, 222, 222), (55, 60, 96), (11, 13, 31), (123, 130, 166)),
    ((253, 251, 253), (122, 94, 181), (86, 61, 152), (179, 156, 219)),
    ((220, 219, 226), (61, 47, 127), (32, 19, 81), (121, 104, 178)),
    ((231, 229, 234), (83, 68, 129), (52, 38, 93), (143, 125, 178)),
)

# Same measurement on every 24th BCCD image (reddish pixels as cells).
_BCCD_PALETTES: tuple[tuple[tuple[int, int, int], ...], ...] = (
    ((198, 200, 201), (183, 162, 160), (168, 143, 141), (205, 197, 186)),
    ((199, 202, 203), (183, 158, 156), (170, 140, 137), (201, 187, 182)),
    ((200, 204, 202), (182, 157, 153), (166, 135, 133), (204, 196, 183)),
    ((201, 202, 199), (186, 164, 161), (171, 142, 140), (208, 203, 189)),
    ((201, 202, 200), (182, 158, 155), (171, 142, 137), (202, 194, 184)),
    ((199, 200, 197), (184, 169, 166), (167, 143, 147), (206, 203, 190)),
    ((197, 197, 196), (178, 158, 158), (161, 134, 136), (202, 196, 185)),
    ((198, 204, 199), (192, 172, 171), (176, 148, 152), (210, 205, 192)),
    ((199, 200, 197), (180, 161, 160), (164, 137, 141), (204, 199, 186)),
    ((196, 200, 195), (178, 162, 159), (162, 140, 142), (201, 200, 185)),
    ((196, 200, 195), (189, 172, 169), (175, 153, 154), (205, 197, 188)),
    ((200, 200, 199), (189, 172, 171), (171, 144, 151), (207, 201, 192)),
    ((198, 198, 196), (189, 173, 171), (171, 144, 149), (209, 205, 192)),
)
# Mean colour of the purple white-cell nuclei inside the BCCD WBC boxes.
_BCCD_NUCLEUS_RGB = (145, 110, 213)

_RBC, _INFECTED, _WBC = 0, 1, 2


def _od(bg: np.ndarray, rgb: np.ndarray | tuple[float, ...]) -> np.ndarray:
    """Optical density of a colour seen against ``bg`` (Beer-Lambert, base 10)."""
    rgb = np.clip(np.asarray(rgb, np.float64), 1.0, None)
    # Slightly negative densities let pale cell centres be a little brighter than the
    # background, as measured on BCCD (refraction, not absorption).
    return np.clip(np.log10(bg / rgb), -0.03, None).astype(np.float32)


@dataclass
class _Params:
    """Per-image knobs; sampled once per image so that images differ like real slides do."""

    bg: np.ndarray
    od_light: np.ndarray  # red-cell stain at t = 0 (pale parts)
    od_dark: np.ndarray  # red-cell stain at t = 1 (dark parts)
    t_mean: float
    t_cell_sd: float
    coverage: float
    min_sep: float  # centres stay >= min_sep * (r1 + r2) apart: keeps overlaps partial
    neighbour_prob: float  # chance that a cell is placed touching an existing one
    free_sep: float  # the other cells keep centres >= free_sep * (r1 + r2) apart
    through: float  # fraction of an underlying cell's stain still seen through the top cell
    size_sigma: float
    size_scale: float  # per-slide magnification jitter around the default diameter
    ecc_sd: float
    harm_sd: float
    cren_frac: float
    cren_amp: float
    tail_frac: float
    pallor_frac: float
    pallor_amp: float
    pallor_width: float
    pallor_power: float  # 2 = soft Gaussian dip, higher = flat, sharp-edged hole
    rim: float
    fold_frac: float
    infected_frac: float
    ring_frac: float
    stipple: float
    n_wbc: int
    wbc_scale: tuple[float, float]
    od_cyto: np.ndarray
    od_nucleus: np.ndarray
    od_infected_light: np.ndarray
    od_infected_dark: np.ndarray
    od_pigment: np.ndarray
    platelet_rate: float
    od_platelet: np.ndarray
    speck_rate: float
    od_speck: np.ndarray
    sparkle_frac: float
    haze: float
    od_haze: np.ndarray
    blur_frac: float
    noise_sd: float
    vignette: float
    gradient: float
    mottle: float
    seam: float
    halo: float  # bright defocus fringe just outside each cell (BCCD), in OD units
    texture: float


def _palette(rng: np.random.Generator, table) -> tuple[np.ndarray, ...]:
    bg, mean, dark, light = (np.asarray(c, np.float64) for c in table[rng.integers(len(table))])
    # Jitter so that 41 measured slides become a continuum rather than 41 look-alikes.
    bg = np.clip(bg + rng.normal(0, 3, 3), 60, 253)
    od_scale = rng.uniform(0.85, 1.15)
    od_mean = _od(bg, mean) * od_scale
    od_dark = _od(bg, dark) * od_scale
    od_light = _od(bg, light) * od_scale
    span = float(np.sum(od_dark - od_light))
    t_mean = float(np.sum(od_mean - od_light) / span) if span > 1e-3 else 0.5
    return bg, od_light, od_dark, t_mean, od_mean


def _params_bbbc041(rng: np.random.Generator) -> _Params:
    bg, od_light, od_dark, t_mean, _ = _palette(rng, _BBBC041_PALETTES)
    purple = _od(bg, (150, 80, 165))
    heavy_blur = rng.random() < 0.15
    return _Params(
        bg=bg,
        od_light=od_light,
        od_dark=od_dark,
        t_mean=t_mean,
        t_cell_sd=rng.uniform(0.08, 0.18),
        coverage=rng.uniform(0.11, 0.5),  # real masks: 0.11-0.46, mean 0.28
        min_sep=0.8,
        # Real masks: 52% of cells touch another (p10 25%, p90 85%).
        neighbour_prob=rng.uniform(0.05, 0.45),
        free_sep=1.1,
        through=0.25,
        size_sigma=rng.uniform(0.08, 0.14),
        size_scale=rng.uniform(0.9, 1.1),
        ecc_sd=rng.uniform(0.02, 0.09),
        harm_sd=rng.uniform(0.01, 0.03),
        cren_frac=float(rng.choice([0.0, 0.15, 0.5, 0.9], p=[0.4, 0.2, 0.2, 0.2])),
        cren_amp=rng.uniform(0.05, 0.09),
        tail_frac=float(rng.choice([0.0, 0.05, 0.2], p=[0.5, 0.3, 0.2])),
        pallor_frac=rng.uniform(0.0, 1.0),
        pallor_amp=rng.uniform(0.3, 0.9),
        pallor_width=rng.uniform(0.3, 0.5),
        pallor_power=2.0,
        rim=rng.uniform(0.1, 0.5),
        fold_frac=float(rng.choice([0.0, 0.3], p=[0.6, 0.4])),
        infected_frac=float(rng.choice([0.0, 0.02, 0.06], p=[0.45, 0.35, 0.2])),
        ring_frac=rng.uniform(0.0, 0.05),
        stipple=float(rng.choice([0.0, 1.5, 4.0], p=[0.5, 0.3, 0.2])),
        n_wbc=int(rng.random() < 0.1),
        wbc_scale=(1.3, 1.6),
        od_cyto=_od(bg, (200, 180, 215)),
        od_nucleus=_od(bg, (90, 50, 140)),
        od_infected_light=_od(bg, (205, 160, 215)),
        od_infected_dark=_od(bg, (140, 90, 170)),
        od_pigment=_od(bg, (60, 25, 70)),
        platelet_rate=rng.uniform(0.0, 0.04),
        od_platelet=purple,
        speck_rate=float(rng.choice([0.2, 1.0, 3.0])),
        od_speck=_od(bg, (185, 140, 180)),
        sparkle_frac=0.0,
        haze=float(rng.random() < 0.15) * rng.uniform(0.05, 0.25),
        od_haze=(od_dark + od_light) * 0.5,
        blur_frac=rng.uniform(0.025, 0.05) if heavy_blur else rng.uniform(0.01, 0.022),
        noise_sd=rng.uniform(1.5, 3.5),
        vignette=rng.uniform(0.0, 0.08),
        gradient=rng.uniform(0.0, 0.05),
        mottle=rng.uniform(0.005, 0.02),
        seam=rng.uniform(0.2, 0.6),
        halo=0.0,
        texture=rng.uniform(0.03, 0.1),
    )


def _params_bccd(rng: np.random.Generator) -> _Params:
    bg, _, od_lo, _, od_mean = _palette(rng, _BCCD_PALETTES)
    # Reddish-pixel statistics mix cell bodies with their blurred edges and pale centres.
    # Probing cell bodies directly (e.g. BloodImage_00013: ~(170, 137, 130)) shows that the
    # body is close to the darkest decile and the pallor almost background; 0.75x the darkest
    # decile's density keeps the reddish-pixel mean within ~10 levels of the real one.
    od_body = 0.75 * od_lo
    od_light = 0.2 * od_mean
    od_dark = 1.25 * od_body
    t_mean = float(np.sum(od_body - od_light) / np.sum(od_dark - od_light))
    nucleus = np.asarray(_BCCD_NUCLEUS_RGB, np.float64) * rng.uniform(0.8, 0.95)
    return _Params(
        bg=bg,
        od_light=od_light,
        od_dark=od_dark,
        t_mean=t_mean,
        t_cell_sd=rng.uniform(0.04, 0.1),
        coverage=rng.uniform(0.4, 0.65),
        min_sep=0.68,
        neighbour_prob=rng.uniform(0.5, 0.9),
        free_sep=0.9,
        through=0.6,
        size_sigma=rng.uniform(0.06, 0.11),
        size_scale=rng.uniform(0.92, 1.08),
        ecc_sd=rng.uniform(0.08, 0.18),
        harm_sd=rng.uniform(0.025, 0.05),
        cren_frac=0.0,
        cren_amp=0.0,
        tail_frac=0.0,
        pallor_frac=rng.uniform(0.5, 0.9),
        pallor_amp=rng.uniform(0.8, 1.1),
        pallor_width=rng.uniform(0.3, 0.42),
        pallor_power=rng.uniform(4.0, 8.0),
        rim=rng.uniform(0.2, 0.45),
        fold_frac=0.0,
        infected_frac=0.0,
        ring_frac=0.0,
        stipple=0.0,
        n_wbc=int(rng.choice([0, 1, 2], p=[0.1, 0.8, 0.1])),
        wbc_scale=(1.7, 2.1),
        od_cyto=_od(bg, (200, 188, 212)),
        od_nucleus=_od(bg, nucleus),
        od_infected_light=od_light,
        od_infected_dark=od_dark,
        od_pigment=od_dark,
        platelet_rate=rng.uniform(0.05, 0.15),
        od_platelet=_od(bg, nucleus * 0.9),
        speck_rate=0.3,
        od_speck=_od(bg, (150, 150, 160)),
        sparkle_frac=rng.uniform(0.1, 0.6),
        haze=0.0,
        od_haze=od_light,
        blur_frac=rng.uniform(0.012, 0.025),
        noise_sd=rng.uniform(0.5, 1.0),  # BCCD JPEGs are smooth
        vignette=rng.uniform(0.0, 0.1),
        gradient=rng.uniform(0.0, 0.04),
        mottle=rng.uniform(0.005, 0.015),
        seam=0.0,
        halo=rng.uniform(0.02, 0.05),
        texture=rng.uniform(0.03, 0.07),
    )


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise whose features are ~``scale`` px wide (cubic upsampling)."""
    step = max(1, int(round(scale)))
    small = rng.standard_normal((h // step + 4, w // step + 4)).astype(np.float32)
    dsize = (small.shape[1] * step, small.shape[0] * step)
    big = cv2.resize(small, dsize, interpolation=cv2.INTER_CUBIC)
    out = big[step : step + h, step : step + w]
    return (out - out.mean()) / (out.std() + 1e-6)


@dataclass
class _Cell:
    x: float
    y: float
    r: float
    kind: int


def _place_cells(
    rng: np.random.Generator, width: float, height: float, d: float, p: _Params
) -> list[_Cell]:
    """Random placement with touching neighbours (pairs, chains, clusters); overlaps stay partial.

    A neighbour is put at (r1 + r2) * U(0.85, 1.0) from an existing cell, so it touches or
    slightly overlaps it, as in real smears; any new cell closer than ``min_sep * (r1 + r2)`` to
    an existing one is rejected so that no cell is hidden under others. Freely placed cells keep
    ``free_sep`` instead, so that touching is controlled by ``neighbour_prob``.
    """
    r0 = d / 2
    margin = 0.3 * d
    area = (width + 2 * margin) * (height + 2 * margin)
    cell_area = math.pi * r0**2 * math.exp(2 * p.size_sigma**2)
    n_target = max(1, int(round(p.coverage * area / cell_area)))
    kinds = [_WBC] * p.n_wbc
    kinds += [
        _INFECTED if rng.random() < p.infected_frac else _RBC for _ in range(n_target - p.n_wbc)
    ]
    xs = np.empty(len(kinds), np.float64)
    ys = np.empty(len(kinds), np.float64)
    rs = np.empty(len(kinds), np.float64)
    cells: list[_Cell] = []
    for kind in kinds:
        z = float(np.clip(rng.normal(0.0, p.size_sigma), -3 * p.size_sigma, 3 * p.size_sigma))
        r = r0 * math.exp(z)
        if kind == _WBC:
            r = r0 * rng.uniform(*p.wbc_scale)
        elif kind == _INFECTED:
            r *= rng.uniform(1.05, 1.3)
        n = len(cells)
        for _ in range(30):
            sep = p.min_sep
            if n and kind != _WBC and rng.random() < p.neighbour_prob:
                # Half of the time extend the newest cell so that chains form.
                j = n - 1 if rng.random() < 0.5 else int(rng.integers(n))
                ang = rng.uniform(0, 2 * math.pi)
                dist = (rs[j] + r) * rng.uniform(0.85, 1.0)
                x, y = xs[j] + dist * math.cos(ang), ys[j] + dist * math.sin(ang)
                if not (-margin <= x <= width + margin and -margin <= y <= height + margin):
                    continue
            else:
                x = rng.uniform(-margin, width + margin)
                y = rng.uniform(-margin, height + margin)
                sep = p.free_sep
            if n and np.any(np.hypot(xs[:n] - x, ys[:n] - y) < sep * (rs[:n] + r)):
                continue
            xs[n], ys[n], rs[n] = x, y, r
            cells.append(_Cell(x, y, r, kind))
            break
    return cells


def _unit(x: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1]; cheaper than np.clip on the many small per-cell arrays."""
    return np.minimum(np.maximum(x, 0), 1)


def _blobs(
    dx: np.ndarray, dy: np.ndarray, cx: np.ndarray, cy: np.ndarray, s: np.ndarray
) -> np.ndarray:
    """Sum of isotropic Gaussian blobs (centres cx, cy; widths s) on a patch grid."""
    if len(cx) == 0:
        return np.zeros(np.broadcast_shapes(dx.shape, dy.shape), np.float32)
    g = ((dx[None] - cx[:, None, None]) ** 2 + (dy[None] - cy[:, None, None]) ** 2) / (
        s[:, None, None] ** 2
    )
    return np.exp(-g).sum(0).astype(np.float32)


def _nucleus(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """White-cell nucleus coverage in [0, 1]: one round nucleus or 3-5 lobes on an arc."""
    if rng.random() < 0.3:
        # Lymphocyte / monocyte: one large, slightly off-centre nucleus.
        ox, oy = rng.normal(0, 0.08 * r, 2)
        centres = [(ox, oy, r * rng.uniform(0.55, 0.72), rng.uniform(0.8, 1.0))]
        angles = [rng.uniform(0, math.pi)]
    else:
        # Segmented neutrophil: overlapping lobes along a curved band.
        k = int(rng.integers(3, 6))
        arc = r * rng.uniform(0.3, 0.42)
        ang = rng.uniform(0, 2 * math.pi) + np.arange(k) * rng.uniform(0.75, 1.1)
        centres = [
            (
                arc * math.cos(a),
                arc * math.sin(a),
                r * rng.uniform(0.26, 0.36),
                rng.uniform(0.6, 0.8),
            )
            for a in ang
        ]
        angles = [a + math.pi / 2 for a in ang]
    lob = np.zeros(np.broadcast_shapes(dx.shape, dy.shape), np.float32)
    for (cx, cy, a, ratio), phi in zip(centres, angles, strict=True):
        c, s = math.cos(phi), math.sin(phi)
        u = (dx - cx) * c + (dy - cy) * s
        v = -(dx - cx) * s + (dy - cy) * c
        lob = np.maximum(lob, 1 - (u / a) ** 2 - (v / (a * ratio)) ** 2)
    return np.clip(lob * 6, 0, 1)


def _draw_cell(
    rng: np.random.Generator,
    cell: _Cell,
    cell_id: int,
    p: _Params,
    od: np.ndarray,
    inst: np.ndarray,
    tex: np.ndarray,
    y_stretch: float,
) -> int:
    """Composite one cell over ``od`` (on top) and claim its pixels in ``inst``.

    Returns the number of pixels drawn for the cell (before later cells cover it).
    """
    height, width = inst.shape
    r = cell.r
    is_rbc = cell.kind != _WBC
    # Outline = radius perturbed by an ellipse, a few low Fourier harmonics, optional crenation
    # spikes and an optional teardrop tail.
    ecc = abs(rng.normal(0, p.ecc_sd)) * (0.4 if cell.kind == _WBC else 1.0)
    phi = rng.uniform(0, 2 * math.pi)
    # Low orders bend the outline, the weak high orders make it slightly ragged.
    ks = np.array([3.0, 4.0, 5.0, 7.0, 9.0, 12.0], np.float32)
    harm = rng.normal(0, p.harm_sd, 6) * np.array([1, 1, 1, 0.35, 0.25, 0.15])
    harm = harm.astype(np.float32)
    hph = rng.uniform(0, 2 * math.pi, 6).astype(np.float32)
    cren = p.cren_amp if (cell.kind == _RBC and rng.random() < p.cren_frac) else 0.0
    n_spikes = int(rng.integers(12, 23))
    cph, cmod = rng.uniform(0, 2 * math.pi, 2)
    tail = rng.uniform(0.2, 0.5) if (cell.kind == _RBC and rng.random() < p.tail_frac) else 0.0
    tph = rng.uniform(0, 2 * math.pi)
    halo_w = max(0.05 * r, 0.8)
    ext = r * (1 + ecc + float(np.abs(harm).sum()) + cren) * (1 + tail) + 2
    ext += 3 * halo_w if p.halo else 0.0
    # Cell geometry lives in specimen coordinates; image rows are y_stretch times denser.
    x0, x1 = max(0, int(cell.x - ext)), min(width, int(cell.x + ext) + 2)
    y0 = max(0, int((cell.y - ext) * y_stretch))
    y1 = min(height, int((cell.y + ext) * y_stretch) + 2)
    if x0 >= x1 or y0 >= y1:
        return 0
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cell.x))[None, :]
    rows = np.arange(y0, y1, dtype=np.float32) / np.float32(y_stretch)
    dy = (rows - np.float32(cell.y))[:, None]
    dist = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    rr = 1 + ecc * np.cos(2 * (theta - phi))
    use = np.abs(harm) * r >= 0.05  # sub-pixel harmonics only cost time (small renders)
    if use.any():
        h, k, ph = harm[use, None, None], ks[use, None, None], hph[use, None, None]
        rr = rr + (h * np.cos(k * theta[None] - ph)).sum(0)
    if cren:
        # max(0, cos)^2 gives short outward bumps (0.25 is its mean, subtracted to keep the
        # area); the slow modulation makes some bumps longer than others, as on echinocytes.
        spikes = np.maximum(np.cos(n_spikes * theta + cph), 0) ** 2 - 0.25
        rr = rr + cren * spikes * (1 + 0.6 * np.cos(2 * theta + cmod))
    if tail:
        rr = rr * (1 + tail * np.maximum(np.cos(theta - tph), 0) ** 8)
    radius = (r * rr).astype(np.float32)
    sd = radius - dist  # approximate signed distance to the outline, px
    hard = sd >= 0
    drawn = int(hard.sum())
    if drawn == 0:
        return 0
    alpha = _unit(sd + 0.5)
    rho = dist / np.maximum(radius, 1e-3)
    ux, uy = dx / r, dy / r  # coordinates in cell radii
    tx = tex[y0:y1, x0:x1]

    if is_rbc:
        t = rng.normal(p.t_mean, p.t_cell_sd) + p.texture * tx
        t = t + p.rim * _unit((rho - 0.55) / 0.4) ** 2
        if rng.random() < p.pallor_frac:
            ox, oy = rng.normal(0, 0.12, 2)
            w = p.pallor_width * rng.uniform(0.8, 1.2)
            q2 = ((ux - ox) ** 2 + (uy - oy) ** 2) / w**2
            t = t - p.pallor_amp * np.exp(-(q2 ** (p.pallor_power / 2)))
        if rng.random() < p.fold_frac:
            # A membrane fold shows up as a thin pale curve across the cell.
            a = rng.uniform(0, math.pi)
            u = ux * math.cos(a) + uy * math.sin(a)
            v = -ux * math.sin(a) + uy * math.cos(a)
            wiggle = 0.06 * np.sin(rng.uniform(3, 7) * u + rng.uniform(0, 2 * math.pi))
            curve = v - rng.uniform(-0.6, 0.6) * u**2 - rng.uniform(-0.3, 0.3) - wiggle
            t = t - 0.35 * np.exp(-((curve / 0.09) ** 2)) * _unit((0.9 - rho) * 4)
        # Pallor and folds thin the cell down to its palest measured colour, never below it.
        t = np.maximum(t, 0.0)
        if cell.kind == _INFECTED:
            od_lo, od_hi = p.od_infected_light, p.od_infected_dark
        else:
            od_lo, od_hi = p.od_light, p.od_dark
        od_cell = od_lo + t[..., None] * (od_hi - od_lo)
        # Dark inclusions: parasite pigment in infected cells, ring forms, fine stippling.
        if cell.kind == _INFECTED:
            k = int(rng.integers(3, 14))
            ang, rad = rng.uniform(0, 2 * math.pi, k), 0.6 * np.sqrt(rng.random(k))
            s = r * rng.uniform(0.04, 0.1, k)
            spots = 0.8 * _blobs(dx, dy, r * rad * np.cos(ang), r * rad * np.sin(ang), s)
        else:
            k = int(rng.poisson(p.stipple))
            ang, rad = rng.uniform(0, 2 * math.pi, k), 0.85 * np.sqrt(rng.random(k))
            s = np.maximum(r * rng.uniform(0.02, 0.04, k), 0.5)
            spots = (
                0.7 * _blobs(dx, dy, r * rad * np.cos(ang), r * rad * np.sin(ang), s) if k else 0
            )
            if rng.random() < p.ring_frac:
                px, py = rng.uniform(-0.4, 0.4, 2) * r
                rring = r * rng.uniform(0.12, 0.2)
                ring = np.hypot(dx - px, dy - py) - rring
                spots = spots + 0.5 * np.exp(-((ring / (0.05 * r + 0.3)) ** 2))
                spots = spots + _blobs(
                    dx, dy, np.array([px + rring]), np.array([py]), np.array([0.07 * r + 0.3])
                )
        od_spot = p.od_pigment if cell.kind == _INFECTED else p.od_dark * 1.4
        if not np.isscalar(spots):
            od_cell = od_cell + np.minimum(spots, 1.5)[..., None] * od_spot
        if p.sparkle_frac and rng.random() < p.sparkle_frac:
            # BCCD's refractile spots: a bright dot with a dark fringe.
            px, py = rng.uniform(-0.5, 0.5, 2) * r
            s0 = np.array([0.07 * r + 0.4])
            core = _blobs(dx, dy, np.array([px]), np.array([py]), s0)
            halo = _blobs(dx, dy, np.array([px]), np.array([py]), s0 * 1.8)
            od_cell = od_cell + ((0.5 * halo - 0.9 * core) * 0.25)[..., None]
    else:
        edge = _unit(rho - 0.75)
        od_cell = p.od_cyto * (0.8 + 0.2 * tx + 0.6 * edge)[..., None]
        nucleus = _nucleus(rng, dx, dy, r)
        chromatin = 0.9 + 0.25 * tx  # clumped chromatin: mottled nucleus
        od_cell = (
            od_cell * (1 - nucleus[..., None]) + (nucleus * chromatin)[..., None] * p.od_nucleus
        )
    od_cell = np.maximum(od_cell, -0.15)

    under = od[y0:y1, x0:x1]
    a = alpha[..., None]
    new = under * (1 - a * (1 - p.through)) + a * od_cell
    if p.seam:
        # Where this cell lies over another one its edge shows as a thin light seam.
        band = alpha * _unit(1 - sd / max(0.03 * r, 0.7))
        below = _unit(under.sum(-1) / (od_cell.mean() * 3 + 1e-3))
        new = new * (1 - p.seam * band * below)[..., None]
    if p.halo:
        new = new - (p.halo * np.exp(-(((sd + halo_w) / halo_w) ** 2)))[..., None]
    od[y0:y1, x0:x1] = new
    inst[y0:y1, x0:x1][hard] = cell_id
    return drawn


def _draw_background_objects(
    rng: np.random.Generator, od: np.ndarray, d: float, n_cells: int, p: _Params
) -> None:
    """Platelets and stain specks: painted into the image, never instances."""
    height, width = od.shape[:2]
    layer_platelet = np.zeros((height, width), np.uint8)
    n_pl = int(rng.poisson(p.platelet_rate * max(n_cells, 1)))
    for _ in range(n_pl):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        # A platelet is a small irregular clump of granules.
        for _ in range(int(rng.integers(2, 6))):
            ox, oy = rng.normal(0, 0.06 * d, 2)
            ax = max(1, int(round(d * rng.uniform(0.04, 0.1))))
            ay = max(1, int(round(ax * rng.uniform(0.6, 1.0))))
            cv2.ellipse(
                layer_platelet,
                (int(cx + ox), int(cy + oy)),
                (ax, ay),
                float(rng.uniform(0, 180)),
                0,
                360,
                int(rng.integers(150, 256)),
                -1,
                cv2.LINE_AA,
            )
    layer_speck = np.zeros((height, width), np.uint8)
    n_sp = int(rng.poisson(p.speck_rate * width * height / d**2))
    if n_sp:
        pts = np.column_stack([rng.integers(0, width, n_sp), rng.integers(0, height, n_sp)]).astype(
            np.int32
        )
        true_r = d * rng.uniform(0.005, 0.025, n_sp)
        radii = np.maximum(1, np.round(true_r)).astype(int)
        # A speck smaller than a pixel is drawn as one pixel with proportionally less stain.
        vals = (rng.integers(60, 200, n_sp) * np.minimum(1.0, true_r**2)).astype(int)
        for (x, y), rad, v in zip(pts, radii, vals, strict=True):
            cv2.circle(layer_speck, (int(x), int(y)), int(rad), int(v), -1, cv2.LINE_AA)
    od += (layer_platelet.astype(np.float32) / 255)[..., None] * p.od_platelet
    od += (layer_speck.astype(np.float32) / 255)[..., None] * p.od_speck


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _merge_fragment(inst: np.ndarray, sl: tuple[slice, ...], frag: np.ndarray, own: int) -> None:
    """Hand a piece of instance ``own`` to the 4-adjacent instance it borders most, else to 0.

    4-adjacency keeps the receiving instance 4-connected.
    """
    sub = inst[sl]
    ring = cv2.dilate(frag.astype(np.uint8), _CROSS).astype(bool) & ~frag
    labels = sub[ring]
    labels = labels[(labels != own) & (labels != 0)]
    sub[frag] = int(np.bincount(labels).argmax()) if labels.size else 0


def _expand(sl: tuple[slice, ...], shape: tuple[int, ...], m: int = 1) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, s.start - m), min(n, s.stop + m)) for s, n in zip(sl, shape, strict=True)
    )


def _fix_geometry(inst: np.ndarray, min_area: np.ndarray) -> bool:
    """One pass: slivers and occlusion fragments go to the cell on top. Returns True if changed."""
    changed = False
    for i, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        sl = _expand(sl, inst.shape)
        region = inst[sl] == i
        if int(region.sum()) < min_area[i]:
            _merge_fragment(inst, sl, region, i)
            changed = True
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(region.astype(np.uint8), connectivity=4)
        if n > 2:
            keep = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
            for j in range(1, n):
                if j != keep:
                    _merge_fragment(inst, sl, lab == j, i)
            changed = True
    return changed


def _fix_gaps(inst: np.ndarray, gap: int, final: bool) -> bool:
    """One pass: make each instance one mask component of more than MIN_CELL_AREA px after gapping.

    A cell that the gap cuts keeps its largest piece (plus the gap pixels attached to it); the
    rest goes to the neighbour. With ``final`` a failing cell is simply removed, which can only
    enlarge the other cells' masks, so the result is guaranteed consistent.
    """
    mask = mask_from_instances(inst, gap_px=gap) > 0
    changed = False
    for i, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is None:
            continue
        sl = _expand(sl, inst.shape)
        region = inst[sl] == i
        n, lab, stats, _ = cv2.connectedComponentsWithStats(
            (region & mask[sl]).astype(np.uint8), connectivity=8
        )
        areas = stats[1:, cv2.CC_STAT_AREA]
        if n == 2 and areas[0] > MIN_CELL_AREA:
            continue
        changed = True
        if final or n < 2 or areas.max() <= MIN_CELL_AREA:
            _merge_fragment(inst, sl, region, i)
            continue
        main = lab == 1 + int(np.argmax(areas))
        rest = region & ((lab == 0) | main)
        _, lab2 = cv2.connectedComponents(rest.astype(np.uint8), connectivity=4)
        core = lab2 == lab2[main][0]
        _merge_fragment(inst, sl, region & ~core, i)
    return changed


def _sanitize(inst: np.ndarray, drawn: np.ndarray, d: float, gap: int) -> np.ndarray:
    """Make every instance one 4-connected region that survives gapping as one mask component.

    Occlusion can cut an under-cell into pieces or leave only a sliver of it; such pieces are
    merged into the neighbour that covers them (the image shows that neighbour there, too).
    Slivers of cells cut by the image border (under 10% of a cell) become background, as the
    real masks also leave many border cells out. Returns the instance map relabelled to
    contiguous ids in drawing order.
    """
    nominal = math.pi * (d / 2) ** 2
    min_area = np.maximum(_MIN_VISIBLE_FRAC * drawn, max(16.0, 0.1 * nominal))
    for _ in range(6):
        changed = _fix_geometry(inst, min_area)
        changed |= _fix_gaps(inst, gap, final=False)
        if not changed:
            break
    else:
        while _fix_gaps(inst, gap, final=True):
            pass
    ids = np.unique(inst)
    ids = ids[ids > 0]
    lut = np.zeros(int(inst.max()) + 1, np.uint16)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.uint16)
    return lut[inst]


def render_smear(
    rng: np.random.Generator,
    width: int,
    height: int,
    style: str = "bbbc041",
    cell_diameter_frac: float | None = None,
    y_stretch: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic smear.

    Args:
        rng: the only source of randomness; the same generator state gives the same output.
        width, height: image size in pixels.
        style: one of :data:`STYLES`.
        cell_diameter_frac: mean red-cell diameter as a fraction of ``width``; ``None`` takes
            the value measured on the real dataset of that style
            (:data:`DEFAULT_CELL_DIAMETER_FRAC`). Everything else (outline detail, blur,
            speck size, gap width) scales with the cell diameter.
        y_stretch: image rows per specimen unit relative to columns. 1 = square pixels (round
            cells). 4/3 renders what a 4:3 field of view (1600x1200 BBBC041Seg, 640x480 BCCD)
            looks like after being resized to a square image: cells taller than wide.

    Returns:
        ``(image, instances)``: ``image`` is ``HxWx3`` uint8 **RGB**; ``instances`` is ``HxW``
        uint16, 0 = background, 1..N = red and white cells in drawing order (later = on top).
        Each instance is one 4-connected region and stays one component after
        :func:`mask_from_instances`. Platelets and debris are not instances.
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: {', '.join(STYLES)}")
    if width < 8 or height < 8:
        raise ValueError(f"image too small: {width}x{height}")
    frac = DEFAULT_CELL_DIAMETER_FRAC[style] if cell_diameter_frac is None else cell_diameter_frac
    if not 0 < frac < 1:
        raise ValueError(f"cell_diameter_frac must be in (0, 1), got {frac}")
    if not 0.25 <= y_stretch <= 4:
        raise ValueError(f"y_stretch must be in [0.25, 4], got {y_stretch}")
    p = _params_bbbc041(rng) if style == "bbbc041" else _params_bccd(rng)
    d = frac * width * p.size_scale

    cells = _place_cells(rng, width, height / y_stretch, d, p)
    od = np.zeros((height, width, 3), np.float32)
    inst = np.zeros((height, width), np.uint16)
    tex = _smooth_noise(rng, height, width, max(1.0, d / 8))
    if p.haze:
        # Thick parts of the smear: large faint stain clouds.
        cloud = np.clip(_smooth_noise(rng, height, width, 3 * d) - 0.3, 0, None)
        od += (p.haze * cloud)[..., None] * p.od_haze
    drawn = [0]
    for cell in cells:
        n = _draw_cell(rng, cell, len(drawn), p, od, inst, tex, y_stretch)
        drawn.append(n)
    _draw_background_objects(rng, od, d, len(cells), p)

    gap = max(1, int(round(GAP_FRAC * d)))
    inst = _sanitize(inst, np.asarray(drawn, np.float64), d * math.sqrt(y_stretch), gap)

    yy = (np.arange(height, dtype=np.float32) - height / 2)[:, None] / (0.5 * max(width, height))
    xx = (np.arange(width, dtype=np.float32) - width / 2)[None, :] / (0.5 * max(width, height))
    ang = rng.uniform(0, 2 * math.pi)
    illum = (
        1
        - p.vignette * (xx**2 + yy**2)
        + p.gradient * (xx * math.cos(ang) + yy * math.sin(ang))
        + p.mottle * _smooth_noise(rng, height, width, 2 * d)
    )
    # Keep the measured background colour as the typical background, not the brightest.
    illum /= np.median(illum)
    img = (p.bg.astype(np.float32) * illum[..., None]) * np.exp(-_LN10 * od)
    sigma = p.blur_frac * d
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    # Fewer, larger cells per pixel means less averaging of sensor noise per pixel: scale the
    # noise with cell size so that a small render looks like a downsampled real image.
    noise_sd = p.noise_sd * float(np.clip(d / 100, 0.3, 1.5))
    img += rng.standard_normal(img.shape, dtype=np.float32) * noise_sd
    image = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return image, inst


def _image_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """Independent generator per image, so that any subset or parallel run is reproducible."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, index)))


def _image_name(seed: int, split: int, index: int) -> str:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, index, 1)))
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _imwrite(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cv2.imwrite failed for {path}")


def write_dataset(
    out: Path,
    n_train: int,
    n_test: int,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    style: str = "mixed",
    overwrite: bool = False,
    cell_diameter_frac: float | None = None,
    native_aspect: float | None = 4 / 3,
) -> Path:
    """Write a synthetic dataset in the Kaggle "BCCD Dataset with mask" layout.

    Layout: ``out/{train,test}/{original,mask,instances}/NAME.png`` with ``original`` an RGB
    PNG, ``mask`` an RGB PNG with values {0, 255} (three identical channels, as the real masks)
    and ``instances`` a 16-bit single-channel PNG of instance ids. NAME is a UUID derived from
    ``(seed, split, index)``. Same arguments give byte-identical files.

    The dataset is built in a temporary folder next to ``out`` and renamed into place at the
    end, so ``out`` is either complete or absent.

    Args:
        out: destination folder; must not exist or be empty unless ``overwrite``.
        n_train, n_test: number of images per split.
        size: ``(width, height)`` in pixels.
        seed: base seed; image ``i`` of a split uses its own generator from ``(seed, split, i)``.
        style: one of :data:`STYLES` or ``"mixed"`` (alternates bbbc041 and bccd).
        overwrite: replace a non-empty ``out``.
        cell_diameter_frac: passed to :func:`render_smear`.
        native_aspect: width/height of the field of view each image stands for. Both real
            datasets are 4:3 and the training pipeline resizes them to ``size``; with the
            default 4/3 the synthetic images get the same distortion (at 256x256 cells are
            ~1.33x taller than wide, exactly like resized real images). ``None`` renders
            square pixels whatever ``size`` is.

    Returns:
        ``out``.
    """
    if style != "mixed" and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: mixed, {', '.join(STYLES)}")
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    width, height = (int(v) for v in size)
    y_stretch = 1.0 if native_aspect is None else native_aspect * height / width
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        for split_id, (split, n) in enumerate((("train", n_train), ("test", n_test))):
            dirs = {k: tmp / split / k for k in ("original", "mask", "instances")}
            for dd in dirs.values():
                dd.mkdir(parents=True)
            for i in range(n):
                global_index = i if split_id == 0 else n_train + i
                st = STYLES[global_index % len(STYLES)] if style == "mixed" else style
                image, inst = render_smear(
                    _image_rng(seed, split_id, i), width, height, st, cell_diameter_frac, y_stretch
                )
                mask = mask_from_instances(inst)
                name = _image_name(seed, split_id, i) + ".png"
                _imwrite(dirs["original"] / name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                _imwrite(dirs["mask"] / name, cv2.merge([mask, mask, mask]))
                _imwrite(dirs["instances"] / name, inst)
        if out.exists():
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            elif not overwrite:
                # another writer (e.g. a parallel sweep job) finished first: keep its data
                raise FileExistsError(f"{out} was written by another process meanwhile")
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, old / out.name)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
                return out
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
