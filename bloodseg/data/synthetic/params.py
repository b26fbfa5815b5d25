"""Looks of the synthetic smears: styles, measured palettes and per-image parameters.

Every image draws one :class:`_Params` from the sampler of its style
(:func:`_params_bbbc041`, :func:`_params_bccd`), so images differ the way real slides do.
Colours are optical densities (:func:`_od`) against the image's own background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STYLES = ("bbbc041", "bccd")

# Median equivalent diameter / image width of the non-border cells in the 41 real BBBC041Seg
# masks is 0.064 (p5 0.051, p95 0.081; ~102 px at 1600 px). BCCD red-cell boxes (640 px wide)
# give 0.16. Both are at the dataset's native magnification; resizing a whole image keeps them.
DEFAULT_CELL_DIAMETER_FRAC = {"bbbc041": 0.064, "bccd": 0.16}

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

# Cell kinds: plain red cell, parasite-infected red cell, white cell.
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


def _sample_params(rng: np.random.Generator, style: str) -> _Params:
    """The parameters of one image of ``style`` (one of :data:`STYLES`)."""
    return _params_bbbc041(rng) if style == "bbbc041" else _params_bccd(rng)
