"""Repair of a drawn instance map so that every cell is annotatable and survives gapping.

Occlusion can cut an under-cell into pieces or leave only a sliver of it, and the background
gap of :func:`bloodseg.labels.mask_from_instances` can split a thin cell in two.
:func:`_sanitize` merges such pieces into the neighbour covering them until every instance is
one 4-connected region and one mask component of more than ``MIN_CELL_AREA`` px.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage as ndi

from bloodseg.labels import MIN_CELL_AREA, mask_from_instances

# A visible remnant smaller than this fraction of the drawn cell is not annotatable as a cell;
# it is merged into the cell lying on top of it.
_MIN_VISIBLE_FRAC = 0.3

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


def _regions(inst: np.ndarray):
    """``(id, box grown by 1 px, id's pixels in the box)`` for each instance; the boxes are
    found once, the pixels read as the caller reaches them (callers relabel as they go)."""
    for i, sl in enumerate(ndi.find_objects(inst), start=1):
        if sl is not None:
            sl = _expand(sl, inst.shape)
            yield i, sl, inst[sl] == i


def _fix_geometry(inst: np.ndarray, min_area: np.ndarray) -> bool:
    """One pass: slivers and occlusion fragments go to the cell on top. Returns True if changed."""
    changed = False
    for i, sl, region in _regions(inst):
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
    for i, sl, region in _regions(inst):
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
