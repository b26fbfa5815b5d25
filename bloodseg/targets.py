"""Instance-aware training targets from instance labels (numpy/OpenCV/scipy, no torch).

A network that only learns "cell or not" merges touching cells; these targets teach it where
one cell ends and the next begins (DCAN / DIST / U-Net style). Each takes ``inst``, an HxW
integer label image (0 = background, 1..N = cells) that is already resized or cropped with
nearest-neighbour sampling, and returns an HxW array of the same size:

    >>> classes = contour_target(inst, width=2)         # uint8: 0 bg, 1 interior, 2 border
    >>> dist = distance_target(inst)                    # float32: 0 bg, 1 at each cell's centre
    >>> weight = unet_weight_map(inst, w0=10, sigma=5)  # float32 per-pixel loss weights

The image edge is never a cell boundary: a cell cut by the edge of the image (or of a crop)
continues beyond it, as in StarDist's ``edt_prob`` with edge padding.
``bloodseg.postprocess.markers`` turns network outputs trained on these back into instances.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

__all__ = ["contour_target", "distance_target", "unet_weight_map"]

CONTOUR_MODES = ("all", "touching")
# unet_weight_map ignores cells further than this many sigmas from a pixel: the border term
# it drops is below w0 * exp(-8) = 3.4e-4 * w0.
_WEIGHT_CUTOFF_SIGMAS = 4.0


def contour_target(inst: np.ndarray, width: int = 2, mode: str = "all") -> np.ndarray:
    """Three-class map: 0 background, 1 cell interior, 2 cell border (uint8 HxW).

    Distances here are chessboard distances (a ``(2d+1) x (2d+1)`` square window), and only
    pixels inside the image count (the image edge is not a border).

    - ``mode="all"``: a pixel of cell ``k`` is border iff some pixel within ``width`` px of
      it is not ``k`` (background or another cell): the outer ``width`` px of every cell.
    - ``mode="touching"``: a pixel of cell ``k`` is border iff it is an ``"all"`` border pixel
      AND some pixel of another cell ``j`` (``j != k``, ``j > 0``) lies within
      ``2 * width + 1`` px of it. So where a neighbour shares the boundary or lies across a
      gap of at most ``width + 1`` px (BBBC041Seg gaps are 1-3 px), the whole rim is
      border; rim pixels further than ``2 * width + 1`` px from every other cell (the far
      sides of a cell, a lone cell) are interior.
    """
    lab = _as_labels(inst)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if mode not in CONTOUR_MODES:
        raise ValueError(f"mode must be one of {CONTOUR_MODES}, got {mode!r}")
    out = (lab > 0).astype(np.uint8)
    if not out.any():
        return out
    work, big = _morph_labels(lab)
    fg = lab > 0
    # cv2 ignores pixels outside the image for erode/dilate (border value +-inf).
    rim = _window_max(work, width) != work
    rim |= _window_min(work, width) != work
    rim &= fg
    if mode == "touching":
        reach = 2 * width + 1
        others = _window_max(work, reach) != work  # a higher id nearby
        nobg = np.where(fg, work, work.dtype.type(big))
        others |= _window_min(nobg, reach) != work  # a lower nonzero id nearby
        rim &= others
    out[rim] = 2
    return out


def distance_target(inst: np.ndarray) -> np.ndarray:
    """Per-cell Euclidean distance to the cell's own boundary, scaled to [0, 1] per cell.

    For a pixel of cell ``k``: the distance (between pixel centres) to the nearest pixel that
    is not ``k``, divided by the largest such distance in ``k``; so every cell peaks at
    exactly 1.0 at its centre, whatever its size, and a pixel next to a neighbour or to
    background gets ``1 / max``. 0 on background. The image edge is not a boundary; a cell
    that fills the whole image is 1.0 everywhere; a cell in several pieces (e.g. cut by a
    crop) is scaled by its thickest piece. float32 HxW.
    """
    lab = _as_labels(inst)
    out = np.zeros(lab.shape, np.float32)
    for k, box in _boxes(lab, pad=1):
        m = (lab[box] == k).view(np.uint8)
        # exact EDT; outside the image counts as "not a zero pixel", i.e. not a boundary
        d = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        top = float(d.max())
        if top > 1e18:  # no pixel of the box is outside the cell: no boundary at all
            d[:] = 1.0
            top = 1.0
        sub = out[box]
        sub[m.view(bool)] = d[m.view(bool)] / top
    return out


def unet_weight_map(
    inst: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True
) -> np.ndarray:
    """Per-pixel loss weights of the U-Net paper (Ronneberger et al. 2015, eq. 2), float32 HxW.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` on background pixels and
    ``w(x) = w_c(x)`` on cell pixels, where ``d1`` / ``d2`` are the Euclidean distances (px,
    between pixel centres) to the nearest and second-nearest cell: large in the narrow gaps
    between touching cells, so the loss insists on them. Cells further than
    ``4 sigma`` from a pixel are ignored (a change below ``3.4e-4 * w0``), which keeps this to
    one small EDT per cell.

    ``w_c``: with ``class_balance``, ``N / (K * N_c)`` for a pixel of class ``c`` (cell or
    background) with ``N_c`` pixels, ``N`` pixels in all and ``K`` classes present, so both
    classes carry the same total weight and ``w_c`` averages 1; an image with one class only
    (e.g. no cells) gets ``w_c = 1``. Without ``class_balance``, ``w_c = 1``.
    """
    lab = _as_labels(inst)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    fg = lab > 0
    n_fg = int(np.count_nonzero(fg))
    n = lab.size
    out = np.ones(lab.shape, np.float32)
    if class_balance and 0 < n_fg < n:
        out[fg] = n / (2.0 * n_fg)
        out[~fg] = n / (2.0 * (n - n_fg))
    if n_fg == 0 or w0 == 0:
        return out
    reach = int(math.ceil(_WEIGHT_CUTOFF_SIGMAS * sigma))
    d1 = np.full(lab.shape, np.inf, np.float32)
    d2 = np.full(lab.shape, np.inf, np.float32)
    for k, box in _boxes(lab, pad=reach):
        notk = (lab[box] != k).view(np.uint8)
        d = cv2.distanceTransform(notk, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        b1, b2 = d1[box], d2[box]
        np.minimum(b2, np.maximum(b1, d), out=b2)  # keep the two smallest per pixel
        np.minimum(b1, d, out=b1)
    near = ~fg & np.isfinite(d2)
    s = d1[near] + d2[near]
    out[near] += np.float32(w0) * np.exp(-(s * s) / np.float32(2.0 * sigma * sigma))
    return out


# -- helpers -----------------------------------------------------------------------------


def _as_labels(inst: np.ndarray) -> np.ndarray:
    lab = np.asarray(inst)
    if lab.ndim != 2:
        raise ValueError(f"instance labels must be HxW, got shape {lab.shape}")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise TypeError(f"instance labels must be integer, got {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError("instance labels must be non-negative (0 = background)")
    return lab.view(np.uint8) if lab.dtype == bool else lab


def _morph_labels(lab: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels in a dtype cv2 can erode/dilate exactly, and a value above every id."""
    top = int(lab.max())
    if top < np.iinfo(np.uint16).max:
        return lab.astype(np.uint16), int(np.iinfo(np.uint16).max)
    if top < 2**24:  # float32 holds every integer up to 2^24 exactly
        return lab.astype(np.float32), 2**24
    raise ValueError(f"too many instances for contour_target: {top}")


def _window_max(img: np.ndarray, r: int) -> np.ndarray:
    """Maximum over the (2r+1)x(2r+1) window (pixels outside the image ignored)."""
    return cv2.dilate(img, np.ones((2 * r + 1, 2 * r + 1), np.uint8))


def _window_min(img: np.ndarray, r: int) -> np.ndarray:
    """Minimum over the (2r+1)x(2r+1) window (pixels outside the image ignored)."""
    return cv2.erode(img, np.ones((2 * r + 1, 2 * r + 1), np.uint8))


def _boxes(lab: np.ndarray, pad: int):
    """``(id, box)`` of each instance present: its bounding box grown by ``pad`` px, clipped
    to the image."""
    h, w = lab.shape
    for i, sl in enumerate(ndimage.find_objects(lab)):
        if sl is None:
            continue
        ys, xs = sl
        box = (
            slice(max(ys.start - pad, 0), min(ys.stop + pad, h)),
            slice(max(xs.start - pad, 0), min(xs.stop + pad, w)),
        )
        yield i + 1, box
