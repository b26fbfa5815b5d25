"""Drawing: composite cells into an optical-density (OD) image and claim their pixels.

:func:`_draw_cell` draws one cell on top of everything drawn before, in stages:

1. outline (:func:`_sample_outline`, :meth:`_Outline.radius`): ellipse, low harmonics,
   optional crenation spikes and teardrop tail;
2. stain inside the outline (:mod:`.stain`): red cell or white cell;
3. compositing (:func:`_composite`): partly transparent over the cells below, with a light
   seam at their edges (BBBC041) or a bright defocus halo (BCCD).

:func:`_draw_background_objects` adds platelets and stain specks, which are never instances.
Each stage draws from ``rng`` in a fixed order; the output of a seed depends on that order,
so keep it when editing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from bloodseg.data.synthetic.params import _RBC, _WBC, _Params
from bloodseg.data.synthetic.placement import _Cell
from bloodseg.data.synthetic.stain import _red_cell_od, _unit, _white_cell_od

# Low orders bend the outline, the weak high orders make it slightly ragged.
_HARMONIC_ORDERS = np.array([3.0, 4.0, 5.0, 7.0, 9.0, 12.0], np.float32)
_HARMONIC_WEIGHTS = np.array([1, 1, 1, 0.35, 0.25, 0.15])


@dataclass
class _Outline:
    """Random outline of one cell: its radius, relative to ``r``, as a function of angle."""

    ecc: float  # ellipse
    phi: float
    harm: np.ndarray  # float32 amplitudes of _HARMONIC_ORDERS
    hph: np.ndarray  # float32 phases
    cren: float  # crenation spike amplitude, 0 = none
    n_spikes: int
    cph: float
    cmod: float
    tail: float  # teardrop tail length, 0 = none
    tph: float

    def extent(self, r: float) -> float:
        """Upper bound of the outline's radius in px, plus a 2 px margin."""
        return r * (1 + self.ecc + float(np.abs(self.harm).sum()) + self.cren) * (1 + self.tail) + 2

    def radius(self, r: float, theta: np.ndarray) -> np.ndarray:
        """Outline radius in px (float32) at polar angles ``theta``."""
        rr = 1 + self.ecc * np.cos(2 * (theta - self.phi))
        use = np.abs(self.harm) * r >= 0.05  # sub-pixel harmonics only cost time (small renders)
        if use.any():
            h, ph = self.harm[use, None, None], self.hph[use, None, None]
            k = _HARMONIC_ORDERS[use, None, None]
            rr = rr + (h * np.cos(k * theta[None] - ph)).sum(0)
        if self.cren:
            # max(0, cos)^2 gives short outward bumps (0.25 is its mean, subtracted to keep the
            # area); the slow modulation makes some bumps longer than others, as on echinocytes.
            spikes = np.maximum(np.cos(self.n_spikes * theta + self.cph), 0) ** 2 - 0.25
            rr = rr + self.cren * spikes * (1 + 0.6 * np.cos(2 * theta + self.cmod))
        if self.tail:
            rr = rr * (1 + self.tail * np.maximum(np.cos(theta - self.tph), 0) ** 8)
        return (r * rr).astype(np.float32)


def _sample_outline(rng: np.random.Generator, cell: _Cell, p: _Params) -> _Outline:
    ecc = abs(rng.normal(0, p.ecc_sd)) * (0.4 if cell.kind == _WBC else 1.0)
    phi = rng.uniform(0, 2 * math.pi)
    harm = (rng.normal(0, p.harm_sd, 6) * _HARMONIC_WEIGHTS).astype(np.float32)
    hph = rng.uniform(0, 2 * math.pi, 6).astype(np.float32)
    cren = p.cren_amp if (cell.kind == _RBC and rng.random() < p.cren_frac) else 0.0
    n_spikes = int(rng.integers(12, 23))
    cph, cmod = rng.uniform(0, 2 * math.pi, 2)
    tail = rng.uniform(0.2, 0.5) if (cell.kind == _RBC and rng.random() < p.tail_frac) else 0.0
    tph = rng.uniform(0, 2 * math.pi)
    return _Outline(ecc, phi, harm, hph, cren, n_spikes, cph, cmod, tail, tph)


@dataclass
class _Patch:
    """A cell's bounding box in the image and its pixel grid around the cell centre."""

    box: tuple[slice, slice]  # rows, columns of the image
    dx: np.ndarray  # 1 x w, specimen px
    dy: np.ndarray  # h x 1, specimen px
    dist: np.ndarray
    theta: np.ndarray


def _patch(cell: _Cell, ext: float, y_stretch: float, shape: tuple[int, ...]) -> _Patch | None:
    """The grid within ``ext`` of the cell centre; None if it lies outside the image."""
    height, width = shape
    # Cell geometry lives in specimen coordinates; image rows are y_stretch times denser.
    x0, x1 = max(0, int(cell.x - ext)), min(width, int(cell.x + ext) + 2)
    y0 = max(0, int((cell.y - ext) * y_stretch))
    y1 = min(height, int((cell.y + ext) * y_stretch) + 2)
    if x0 >= x1 or y0 >= y1:
        return None
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cell.x))[None, :]
    rows = np.arange(y0, y1, dtype=np.float32) / np.float32(y_stretch)
    dy = (rows - np.float32(cell.y))[:, None]
    box = (slice(y0, y1), slice(x0, x1))
    return _Patch(box, dx, dy, np.hypot(dx, dy), np.arctan2(dy, dx))


def _composite(
    od: np.ndarray,
    box: tuple[slice, slice],
    sd: np.ndarray,
    od_cell: np.ndarray,
    p: _Params,
    r: float,
    halo_w: float,
) -> None:
    """Lay ``od_cell`` over ``od[box]``; ``sd`` = signed distance to the outline in px."""
    od_cell = np.maximum(od_cell, -0.15)
    alpha = _unit(sd + 0.5)
    under = od[box]
    a = alpha[..., None]
    new = under * (1 - a * (1 - p.through)) + a * od_cell
    if p.seam:
        # Where this cell lies over another one its edge shows as a thin light seam.
        band = alpha * _unit(1 - sd / max(0.03 * r, 0.7))
        below = _unit(under.sum(-1) / (od_cell.mean() * 3 + 1e-3))
        new = new * (1 - p.seam * band * below)[..., None]
    if p.halo:
        new = new - (p.halo * np.exp(-(((sd + halo_w) / halo_w) ** 2)))[..., None]
    od[box] = new


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
    r = cell.r
    outline = _sample_outline(rng, cell, p)
    halo_w = max(0.05 * r, 0.8)
    ext = outline.extent(r)
    ext += 3 * halo_w if p.halo else 0.0
    patch = _patch(cell, ext, y_stretch, inst.shape)
    if patch is None:
        return 0
    radius = outline.radius(r, patch.theta)
    sd = radius - patch.dist  # approximate signed distance to the outline, px
    hard = sd >= 0
    drawn = int(hard.sum())
    if drawn == 0:
        return 0
    rho = patch.dist / np.maximum(radius, 1e-3)
    tx = tex[patch.box]
    if cell.kind == _WBC:
        od_cell = _white_cell_od(rng, p, patch.dx, patch.dy, r, rho, tx)
    else:
        od_cell = _red_cell_od(rng, p, cell.kind, patch.dx, patch.dy, r, rho, tx)
    _composite(od, patch.box, sd, od_cell, p, r, halo_w)
    inst[patch.box][hard] = cell_id
    return drawn


def _platelets(
    rng: np.random.Generator, height: int, width: int, d: float, n_cells: int, p: _Params
) -> np.ndarray:
    """Coverage (uint8) of platelets: each a small irregular clump of granules."""
    layer = np.zeros((height, width), np.uint8)
    n_pl = int(rng.poisson(p.platelet_rate * max(n_cells, 1)))
    for _ in range(n_pl):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        for _ in range(int(rng.integers(2, 6))):
            ox, oy = rng.normal(0, 0.06 * d, 2)
            ax = max(1, int(round(d * rng.uniform(0.04, 0.1))))
            ay = max(1, int(round(ax * rng.uniform(0.6, 1.0))))
            cv2.ellipse(
                layer,
                (int(cx + ox), int(cy + oy)),
                (ax, ay),
                float(rng.uniform(0, 180)),
                0,
                360,
                int(rng.integers(150, 256)),
                -1,
                cv2.LINE_AA,
            )
    return layer


def _specks(rng: np.random.Generator, height: int, width: int, d: float, p: _Params) -> np.ndarray:
    """Coverage (uint8) of stain specks."""
    layer = np.zeros((height, width), np.uint8)
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
            cv2.circle(layer, (int(x), int(y)), int(rad), int(v), -1, cv2.LINE_AA)
    return layer


def _draw_background_objects(
    rng: np.random.Generator, od: np.ndarray, d: float, n_cells: int, p: _Params
) -> None:
    """Platelets and stain specks: painted into the image, never instances."""
    height, width = od.shape[:2]
    layer_platelet = _platelets(rng, height, width, d, n_cells, p)
    layer_speck = _specks(rng, height, width, d, p)
    od += (layer_platelet.astype(np.float32) / 255)[..., None] * p.od_platelet
    od += (layer_speck.astype(np.float32) / 255)[..., None] * p.od_speck
