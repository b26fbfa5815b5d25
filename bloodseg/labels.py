"""Instance label images: the one home of label logic (numpy/OpenCV, no torch).

A label image is HxW integer, 0 = background, 1..N = cells. BBBC041Seg masks separate
touching cells by thin background gaps, so the 8-connected components of a mask (area >
``MIN_CELL_AREA``) are its cells; :func:`mask_from_instances` goes the other way.

    >>> inst = instances_from_mask(mask)          # gap-separated mask -> int32 labels
    >>> mask = mask_from_instances(inst)          # labels -> uint8 {0,255} with gaps
    >>> areas, (cy, cx) = instance_areas(inst), centroids(inst)
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "GAP_FRAC",
    "MIN_CELL_AREA",
    "CUT_CELL_FRAC",
    "CUT_CELL_GRID",
    "centroids",
    "component_stats",
    "components",
    "cut_cell_grid",
    "drop_cut_cells",
    "instance_areas",
    "instances_from_mask",
    "mask_from_instances",
    "relabel_sequential",
    "typical_area",
]

# BBBC041Seg instances are 8-connected mask components of more than this many px (native size).
MIN_CELL_AREA = 15
# Gap between touching cells in BBBC041Seg masks, as a fraction of the cell diameter
# (2-3 px for ~100 px cells).
GAP_FRAC = 0.025
# BBBC041Seg draws a cell cut by the image frame only when most of it is visible: of the 371
# frame-touching cells in the 40 shared masks, 1% are under 0.35x and 5% under 0.43x the
# typical cell area. The rule is the annotators', not a hard size: the masks also leave out
# some cut cells of 0.4-0.8x (59 of a 12-epoch distance network's 188 false positives over the
# 40 pairs), so where data has a rule, bloodseg.tuning picks the cut-off on each run's own
# training images from CUT_CELL_GRID.
CUT_CELL_FRAC = 0.4
CUT_CELL_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Map the ids present in ``labels`` (0 = background) to 1..N as int32.

    Any non-negative integer ids are accepted (e.g. 16-bit PNGs with holes in the numbering).
    """
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"label images must be integer, got {labels.dtype}")
    if labels.size == 0 or labels.max() <= 0:
        if labels.size and labels.min() < 0:
            raise ValueError("label images must be non-negative (0 = background)")
        return np.zeros(labels.shape, np.int32)
    if labels.min() < 0:
        raise ValueError("label images must be non-negative (0 = background)")
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    n = int(present.sum())
    if n == present.size - 1:  # already 1..N
        return labels.astype(np.int32, copy=False)
    lut = np.zeros(present.size, np.int32)
    lut[present] = np.arange(1, n + 1, dtype=np.int32)
    return np.take(lut, labels)  # 3x faster than lut[labels] on a full frame


def instance_areas(labels: np.ndarray) -> np.ndarray:
    """Pixel areas of the instances present, in id order (ids absent from the image skipped)."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.max() <= 0:
        return np.zeros(0, np.int64)
    counts = np.bincount(labels.ravel())[1:]
    return counts[counts > 0]


def typical_area(areas: np.ndarray, floor: int = 0) -> float:
    """The area of the object a random object pixel lies in: the area-weighted median of the
    ``areas`` above ``floor`` (of all of them if none is; 0.0 if there are none).

    A plain median is taken over by specks wherever they outnumber the cells (a pale smear's
    80 specks of ~60 px beside 30 cells of ~10,000 px: median ~80 px); weighting by area
    lets each object count by the pixels it covers.
    """
    areas = np.asarray(areas)
    big = areas[areas > floor]
    big = np.sort(big if big.size else areas).astype(np.float64)
    if big.size == 0:
        return 0.0
    cum = np.cumsum(big)
    return float(big[np.searchsorted(cum, 0.5 * cum[-1])])


def drop_cut_cells(labels: np.ndarray, cut_cell_frac: float = CUT_CELL_FRAC,
                   typical: float | None = None, areas: np.ndarray | None = None) -> np.ndarray:
    """``labels`` (ids 1..N) without the instances that touch the image frame and cover less
    than ``cut_cell_frac`` x the typical area (:func:`typical_area` of all instances, or
    ``typical``), renumbered 1..M: the cells BBBC041Seg's masks leave out as mostly cut off.
    ``cut_cell_frac=0`` returns ``labels`` unchanged. ``areas``: pixels per id 0..N where the
    caller already counted them (a post-processor does; saves a full-frame pass)."""
    labels = np.asarray(labels)
    if cut_cell_frac <= 0 or labels.size == 0 or labels.max() <= 0:
        return labels
    areas = np.bincount(labels.ravel()) if areas is None else np.array(areas, np.int64)
    areas[0] = 0
    if typical is None:
        typical = typical_area(areas[areas > 0])
    frame = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    cut = frame[(frame > 0) & (areas[frame] < cut_cell_frac * typical)]
    if cut.size == 0:
        return labels
    keep = areas > 0
    keep[cut] = False
    lut = np.zeros(areas.size, np.int32)  # the kept ids, in order, as 1..M: one pass
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return np.take(lut, labels)


def cut_cell_grid(current: float) -> dict[str, list[float]]:
    """The ``cut_cell_frac`` values a post-processor's ``tune_grid()`` adds: none for
    data without a cut rule (``current`` 0), else :data:`CUT_CELL_GRID`."""
    return {"cut_cell_frac": list(CUT_CELL_GRID)} if current > 0 else {}


def centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, cy, cx)`` of the instances present: their ids and centroid rows/columns."""
    lab = np.asarray(labels)
    if lab.size == 0 or lab.max() <= 0:
        empty = np.zeros(0)
        return empty.astype(np.int64), empty, empty
    ys, xs = np.nonzero(lab)
    ids = lab[ys, xs].astype(np.int64)
    n = int(lab.max()) + 1
    counts = np.bincount(ids, minlength=n)
    present = np.flatnonzero(counts[1:]) + 1
    cy = np.bincount(ids, weights=ys, minlength=n)[present] / counts[present]
    cx = np.bincount(ids, weights=xs, minlength=n)[present] / counts[present]
    return present, cy, cx


def component_stats(fg: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """8-connected components of a uint8 {0,1} map, as OpenCV numbers them: (int32 labels,
    ``cv2`` stats row per id, bool per id: area > ``min_area``, never the background 0)."""
    # Grana's algorithm: same labels, about half the time of the default on 1600x1200.
    _, lab, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
        fg, 8, cv2.CV_32S, cv2.CCL_GRANA
    )
    keep = stats[:, cv2.CC_STAT_AREA] > min_area
    keep[0] = False
    return lab, stats, keep


def components(fg: np.ndarray, min_area: int) -> tuple[int, np.ndarray, np.ndarray, int]:
    """8-connected components of a uint8 {0,1} map with area > ``min_area``.

    Returns (n kept, int32 labels 0..n, their ``cv2`` stats rows, n before dropping).
    """
    lab, stats, keep = component_stats(fg, min_area)
    n = keep.size
    if keep[1:].all():
        return n - 1, lab, stats[1:], n - 1
    lut = np.zeros(n, np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return int(keep.sum()), np.take(lut, lab), stats[keep], n - 1  # take: 3x lut[lab]


def instances_from_mask(mask: np.ndarray, min_area: int = MIN_CELL_AREA) -> np.ndarray:
    """Instances of a gap-separated binary mask: its 8-connected components > ``min_area`` px.

    ``mask`` may be HxW or HxWx3 (any nonzero = cell). Returns int32 labels 0..N.
    """
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask.max(axis=2)
    _, lab, _, _ = components((mask > 0).astype(np.uint8), min_area)
    return lab


def mask_from_instances(instances: np.ndarray, gap_px: int | None = None) -> np.ndarray:
    """BBBC041Seg-style mask: 255 on cells, 0 elsewhere, a background gap between touching cells.

    Of two touching instances, the one with the smaller id (drawn earlier, i.e. underneath)
    loses the pixels within ``gap_px`` of the other, so no two remaining foreground pixels of
    different instances are 8-neighbours and the mask's 8-connected components are the
    instances (as long as each instance's remaining part is connected).

    Args:
        instances: ``HxW`` integer labels, 0 = background.
        gap_px: gap width in pixels; ``None`` derives it from the median instance size
            (``GAP_FRAC`` x equivalent diameter, at least 1 px).
    """
    if instances.ndim != 2:
        raise ValueError(f"instances must be HxW, got shape {instances.shape}")
    inst = instances.astype(np.uint16, copy=False)
    if gap_px is None:
        areas = np.bincount(inst.ravel())[1:]
        areas = areas[areas > 0]
        d_eq = 2 * math.sqrt(float(np.median(areas)) / math.pi) if areas.size else 0.0
        gap_px = max(1, int(round(GAP_FRAC * d_eq)))
    if gap_px < 1:
        raise ValueError(f"gap_px must be >= 1, got {gap_px}")
    size = 2 * gap_px + 1
    # A 3x3 ellipse is a cross, which would leave diagonal contacts: use a square then.
    shape = cv2.MORPH_RECT if gap_px == 1 else cv2.MORPH_ELLIPSE
    kernel = cv2.getStructuringElement(shape, (size, size))
    higher = cv2.dilate(inst, kernel) > inst
    fg = inst > 0
    return np.where(fg & ~higher, np.uint8(255), np.uint8(0))
