"""One synthetic smear: parameters -> cells -> optical density -> instance repair -> RGB image."""

from __future__ import annotations

import math

import cv2
import numpy as np

from bloodseg.data.synthetic.cells import _draw_background_objects, _draw_cell
from bloodseg.data.synthetic.params import (
    DEFAULT_CELL_DIAMETER_FRAC,
    STYLES,
    _Params,
    _sample_params,
)
from bloodseg.data.synthetic.placement import _Cell, _place_cells
from bloodseg.data.synthetic.topology import _sanitize
from bloodseg.labels import GAP_FRAC

_LN10 = math.log(10.0)


def _smooth_noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    """Zero-mean, unit-std noise whose features are ~``scale`` px wide (cubic upsampling)."""
    step = max(1, int(round(scale)))
    small = rng.standard_normal((h // step + 4, w // step + 4)).astype(np.float32)
    dsize = (small.shape[1] * step, small.shape[0] * step)
    big = cv2.resize(small, dsize, interpolation=cv2.INTER_CUBIC)
    out = big[step : step + h, step : step + w]
    return (out - out.mean()) / (out.std() + 1e-6)


def _paint(
    rng: np.random.Generator,
    p: _Params,
    cells: list[_Cell],
    height: int,
    width: int,
    d: float,
    y_stretch: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw haze, cells and debris. Returns ``(od, instances, pixels drawn per instance id)``."""
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
    return od, inst, np.asarray(drawn, np.float64)


def _photograph(rng: np.random.Generator, p: _Params, od: np.ndarray, d: float) -> np.ndarray:
    """Uneven illumination through the stain (Beer-Lambert), defocus blur, sensor noise."""
    height, width = od.shape[:2]
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
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_smear(
    rng: np.random.Generator,
    width: int,
    height: int,
    style: str = "bbbc041",
    cell_diameter_frac: float | None = None,
    y_stretch: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic smear of ``width`` x ``height`` (W x H) pixels.

    Args:
        rng: the only source of randomness; the same generator state gives the same output.
        width, height: image size in pixels (note the order: width first).
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
        :func:`bloodseg.labels.mask_from_instances`. Platelets and debris are not instances.
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
    p = _sample_params(rng, style)
    d = frac * width * p.size_scale

    cells = _place_cells(rng, width, height / y_stretch, d, p)
    od, inst, drawn = _paint(rng, p, cells, height, width, d, y_stretch)
    gap = max(1, int(round(GAP_FRAC * d)))
    inst = _sanitize(inst, drawn, d * math.sqrt(y_stretch), gap)
    image = _photograph(rng, p, od, d)
    return image, inst
