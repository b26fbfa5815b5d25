"""What a cell looks like inside its outline: per-pixel optical density (OD) of one cell.

Red cells: a stain thickness ``t`` (0 = palest, 1 = darkest measured colour) with texture, a
darker rim, optional central pallor and membrane fold, then dark inclusions (parasite pigment,
ring forms, stippling) and BCCD's refractile sparkle. White cells: pale cytoplasm with a
purple nucleus (round or lobed).

All functions work on a cell's patch: ``dx``, ``dy`` are pixel offsets from the cell centre in
specimen px, ``r`` is the cell radius. Each stage draws from ``rng`` in a fixed order; the
output of a seed depends on that order, so keep it when editing.
"""

from __future__ import annotations

import math

import numpy as np

from bloodseg.data.synthetic.params import _INFECTED, _Params


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


def _pallor(rng: np.random.Generator, p: _Params, ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Thickness removed by the central pallor (``ux``, ``uy`` in cell radii)."""
    ox, oy = rng.normal(0, 0.12, 2)
    w = p.pallor_width * rng.uniform(0.8, 1.2)
    q2 = ((ux - ox) ** 2 + (uy - oy) ** 2) / w**2
    return p.pallor_amp * np.exp(-(q2 ** (p.pallor_power / 2)))


def _fold(rng: np.random.Generator, ux: np.ndarray, uy: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Thickness removed by a membrane fold: a thin pale curve across the cell."""
    a = rng.uniform(0, math.pi)
    u = ux * math.cos(a) + uy * math.sin(a)
    v = -ux * math.sin(a) + uy * math.cos(a)
    wiggle = 0.06 * np.sin(rng.uniform(3, 7) * u + rng.uniform(0, 2 * math.pi))
    curve = v - rng.uniform(-0.6, 0.6) * u**2 - rng.uniform(-0.3, 0.3) - wiggle
    return 0.35 * np.exp(-((curve / 0.09) ** 2)) * _unit((0.9 - rho) * 4)


def _parasite(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Pigment spots of an infected cell."""
    k = int(rng.integers(3, 14))
    ang, rad = rng.uniform(0, 2 * math.pi, k), 0.6 * np.sqrt(rng.random(k))
    s = r * rng.uniform(0.04, 0.1, k)
    return 0.8 * _blobs(dx, dy, r * rad * np.cos(ang), r * rad * np.sin(ang), s)


def _stippling(
    rng: np.random.Generator, p: _Params, dx: np.ndarray, dy: np.ndarray, r: float
) -> np.ndarray | int:
    """Fine dark dots; the int 0 when there are none."""
    k = int(rng.poisson(p.stipple))
    ang, rad = rng.uniform(0, 2 * math.pi, k), 0.85 * np.sqrt(rng.random(k))
    s = np.maximum(r * rng.uniform(0.02, 0.04, k), 0.5)
    return 0.7 * _blobs(dx, dy, r * rad * np.cos(ang), r * rad * np.sin(ang), s) if k else 0


def _add_ring_form(
    rng: np.random.Generator, spots: np.ndarray | int, dx: np.ndarray, dy: np.ndarray, r: float
) -> np.ndarray:
    """``spots`` plus a ring-form parasite: a thin dark ring with a chromatin dot."""
    px, py = rng.uniform(-0.4, 0.4, 2) * r
    rring = r * rng.uniform(0.12, 0.2)
    ring = np.hypot(dx - px, dy - py) - rring
    spots = spots + 0.5 * np.exp(-((ring / (0.05 * r + 0.3)) ** 2))
    return spots + _blobs(
        dx, dy, np.array([px + rring]), np.array([py]), np.array([0.07 * r + 0.3])
    )


def _inclusions(
    rng: np.random.Generator, p: _Params, kind: int, dx: np.ndarray, dy: np.ndarray, r: float
) -> np.ndarray | int:
    """Dark inclusions: parasite pigment in infected cells, else stippling and ring forms."""
    if kind == _INFECTED:
        return _parasite(rng, dx, dy, r)
    spots = _stippling(rng, p, dx, dy, r)
    if rng.random() < p.ring_frac:
        spots = _add_ring_form(rng, spots, dx, dy, r)
    return spots


def _sparkle(rng: np.random.Generator, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """OD change of BCCD's refractile spot: a bright dot with a dark fringe."""
    px, py = rng.uniform(-0.5, 0.5, 2) * r
    s0 = np.array([0.07 * r + 0.4])
    core = _blobs(dx, dy, np.array([px]), np.array([py]), s0)
    halo = _blobs(dx, dy, np.array([px]), np.array([py]), s0 * 1.8)
    return (0.5 * halo - 0.9 * core) * 0.25


def _red_cell_od(
    rng: np.random.Generator,
    p: _Params,
    kind: int,
    dx: np.ndarray,
    dy: np.ndarray,
    r: float,
    rho: np.ndarray,
    tx: np.ndarray,
) -> np.ndarray:
    """OD (h x w x 3) of a red cell; ``rho`` = distance / outline radius, ``tx`` = texture."""
    ux, uy = dx / r, dy / r  # coordinates in cell radii
    t = rng.normal(p.t_mean, p.t_cell_sd) + p.texture * tx
    t = t + p.rim * _unit((rho - 0.55) / 0.4) ** 2
    if rng.random() < p.pallor_frac:
        t = t - _pallor(rng, p, ux, uy)
    if rng.random() < p.fold_frac:
        t = t - _fold(rng, ux, uy, rho)
    # Pallor and folds thin the cell down to its palest measured colour, never below it.
    t = np.maximum(t, 0.0)
    if kind == _INFECTED:
        od_lo, od_hi = p.od_infected_light, p.od_infected_dark
    else:
        od_lo, od_hi = p.od_light, p.od_dark
    od_cell = od_lo + t[..., None] * (od_hi - od_lo)
    spots = _inclusions(rng, p, kind, dx, dy, r)
    od_spot = p.od_pigment if kind == _INFECTED else p.od_dark * 1.4
    if not np.isscalar(spots):
        od_cell = od_cell + np.minimum(spots, 1.5)[..., None] * od_spot
    if p.sparkle_frac and rng.random() < p.sparkle_frac:
        od_cell = od_cell + _sparkle(rng, dx, dy, r)[..., None]
    return od_cell


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


def _white_cell_od(
    rng: np.random.Generator,
    p: _Params,
    dx: np.ndarray,
    dy: np.ndarray,
    r: float,
    rho: np.ndarray,
    tx: np.ndarray,
) -> np.ndarray:
    """OD (h x w x 3) of a white cell: cytoplasm darker towards the edge, mottled nucleus."""
    edge = _unit(rho - 0.75)
    od_cell = p.od_cyto * (0.8 + 0.2 * tx + 0.6 * edge)[..., None]
    nucleus = _nucleus(rng, dx, dy, r)
    chromatin = 0.9 + 0.25 * tx  # clumped chromatin: mottled nucleus
    return od_cell * (1 - nucleus[..., None]) + (nucleus * chromatin)[..., None] * p.od_nucleus
