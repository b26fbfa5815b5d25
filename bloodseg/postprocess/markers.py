"""Marker-controlled watersheds for networks trained on instance-aware targets.

A network trained on ``bloodseg.targets`` says more than "cell or not": which pixels are deep
inside a cell (contour classes) or how far each pixel is from its cell's edge (normalised
distance). Confident cores become the seeds (markers) of a watershed constrained to the
foreground, so touching cells come apart where the network saw a border. Pure
numpy/OpenCV/scipy/scikit-image (no torch).

    >>> cw = ContourWatershed()        # outputs: (3, H, W) softmax of (bg, interior, border)
    >>> labels = cw(outputs)           # -> int32 labels 0..N
    >>> dw = DistanceWatershed()       # outputs: (2, H, W) = (sigmoid fg, distance in [0, 1])
    >>> prob = dw.foreground(outputs)  # HxW foreground probability (pixel Dice, mask PNGs)
    >>> mask = prob > dw.threshold
    >>> dcw = DistanceContourWatershed()  # (3, H, W) = (fg, distance, border), all sigmoid

Sizes are fractions of typical sizes measured on each image (median marker / instance area),
so one config works at 256 px and at 1600x1200.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import cv2
import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from bloodseg.labels import cut_cell_grid, drop_cut_cells, typical_area

__all__ = ["ContourWatershed", "DistanceContourWatershed", "DistanceWatershed"]

MARKER_MODES = ("threshold", "hmaxima")
_SQUARE = np.ones((3, 3), np.uint8)


class _MarkerWatershed:
    """The shared steps; subclasses say what the foreground, markers and relief are.

    Every foreground component is one cell unless it holds two or more markers; those are
    flooded from their markers (the others cost nothing). Only a few full-frame passes
    remain: OpenCV's connected-component *stats* alone would cost 15 ms on 1600x1200, so
    areas come from ``np.bincount`` and boxes from ``ndimage.find_objects`` instead.
    """

    channels: ClassVar[int]
    threshold: float
    min_marker_area_frac: float
    min_area: int
    min_area_frac: float
    watershed_line: bool
    cut_cell_frac: float

    def foreground(self, outputs: np.ndarray) -> np.ndarray:
        """HxW float foreground probability of one image's (C, H, W) outputs."""
        raise NotImplementedError

    def tune_grid(self) -> dict[str, list]:
        """The values ``bloodseg.tuning`` tries by default: the marker threshold, which sets
        how deep a border must be to split two cells (the network's confidence varies with
        how long and on what it trained; 0.7 suits one net, 0.95 another), and where the data
        has a rule for frame-cut cells, its cut-off (``labels.cut_cell_grid``)."""
        return {"marker_threshold": [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95],
                **cut_cell_grid(self.cut_cell_frac)}

    def __call__(self, outputs: np.ndarray) -> np.ndarray:
        out = self._check(outputs)
        fg = (self.foreground(out) > self.threshold).view(np.uint8)
        n_cc, cc = _components(fg)
        if n_cc == 0:
            return np.zeros(fg.shape, np.int32)
        cc_area = np.bincount(cc.ravel(), minlength=n_cc + 1)
        n_mk, mk = _components(self._cores(out, fg, cc_area))
        # marker id -> its component id (a marker lies inside one component), and its area
        comp_of = np.zeros(n_mk + 1, np.int32)
        mk_area = np.zeros(n_mk + 1, np.int64)
        if n_mk:
            sel = mk > 0
            mk_ids = mk[sel]
            comp_of[mk_ids] = cc[sel]
            mk_area = np.bincount(mk_ids, minlength=n_mk + 1)
        comp_of[~self._keep_markers(mk_area)] = 0
        labels, areas = self._flood(out, cc, cc_area, mk, comp_of)
        return drop_cut_cells(labels, self.cut_cell_frac, areas=areas)

    def batch(self, outputs: np.ndarray) -> list[np.ndarray]:
        """Apply to a (B, C, H, W) stack; returns one int32 label map per item."""
        return [self(o) for o in np.asarray(outputs)]

    def at_scale(self, factor: float) -> _MarkerWatershed:
        """The same post-processing for maps ``factor`` x this size per side: the one size
        given in pixels (``min_area``) scaled; the others are fractions of sizes measured on
        each image."""
        return replace(self, min_area=max(1, round(self.min_area * factor**2)))

    # -- steps -------------------------------------------------------------------------

    def _check(self, outputs: np.ndarray) -> np.ndarray:
        out = np.asarray(outputs)
        if out.ndim != 3 or out.shape[0] != self.channels:
            raise ValueError(
                f"{type(self).__name__} expects ({self.channels}, H, W) network outputs, "
                f"got shape {out.shape}"
            )
        if not np.issubdtype(out.dtype, np.floating):
            raise TypeError(f"network outputs must be float, got {out.dtype}")
        return out

    def _cores(self, out: np.ndarray, fg: np.ndarray, cc_area: np.ndarray) -> np.ndarray:
        """uint8 {0, 1} map whose 8-connected components are the candidate markers, inside
        the uint8 foreground ``fg``; ``cc_area``: pixels per foreground component id."""
        raise NotImplementedError

    def _relief(self, out: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
        """The map flooded from the markers (low = cell core) in ``box``."""
        raise NotImplementedError

    def _keep_markers(self, mk_area: np.ndarray) -> np.ndarray:
        """Bool per marker id (0 = background, never kept): the markers not smaller than
        ``min_marker_area_frac`` x the typical marker area (the median area of the markers
        larger than ``min_area`` px, or of all markers if none is)."""
        keep = np.ones(mk_area.size, bool)
        keep[0] = False
        if mk_area.size > 1 and self.min_marker_area_frac > 0:
            areas = mk_area[1:]
            big = areas[areas > self.min_area]
            typical = float(np.median(big if big.size else areas))
            keep[1:] = areas >= self.min_marker_area_frac * typical
        return keep

    def _flood(
        self,
        out: np.ndarray,
        cc: np.ndarray,
        cc_area: np.ndarray,
        mk: np.ndarray,
        comp_of: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(int32 labels 1..N, pixels per id 0..N): a component with at most one kept marker
        (``comp_of``: marker id -> component id, 0 = not kept) is one cell (a cell nobody
        seeded is still a cell); one with several is flooded from them. Then drop instances
        of at most ``max(min_area, min_area_frac x typical area)`` px (typical: median area
        of the instances larger than ``min_area``)."""
        n_cc, n_mk = cc_area.size - 1, comp_of.size - 1
        keep_mk = comp_of > 0
        per_comp = np.bincount(comp_of, minlength=n_cc + 1)
        per_comp[0] = 0
        single = np.flatnonzero(per_comp[1:] <= 1) + 1
        multi = np.flatnonzero(per_comp >= 2)

        floods = []  # (box, component pixels in it, their marker ids; 0 = split line)
        boxes = ndimage.find_objects(cc) if multi.size else []
        for c in multi:
            box = boxes[c - 1]
            comp = cc[box] == c
            seeds = mk[box]
            seeds = np.where(comp & keep_mk[seeds], seeds, 0)
            # skimage, though cv2.watershed is faster (full 1600x1200 frame: 16 vs 30 ms): cv2
            # floods by the colour difference between neighbours, not by height, so on a flat
            # border band the first marker in takes its neighbours' rims (mean IoU 0.91 vs
            # 0.999 on perfect targets). connectivity=2 reaches pixels joined to the rest
            # diagonally only (components are 8-connected); skimage's own watershed_line never
            # returns with connectivity=2 on some inputs (0.26), hence the line drawn below.
            # Marker pixels whose 8 neighbours are all marker pixels (of the same marker) can
            # push nothing: keeping them out of the flood's heap is 2-10x faster, same labels.
            core = cv2.erode((seeds > 0).view(np.uint8), _SQUARE).view(bool)
            got = watershed(
                self._relief(out, box), np.where(core, 0, seeds), mask=comp & ~core,
                connectivity=2,
            )
            got[core] = seeds[core]
            if self.watershed_line:
                # As labels.mask_from_instances(gap_px=1): of two 8-neighbours with different
                # ids the lower one becomes background, so no two cells touch.
                got[cv2.dilate(got.astype(np.float32), _SQUARE) > got] = 0
            floods.append((box, comp, got[comp]))

        # Drop small instances, then number the rest 1..N (singles first, in component order).
        piece_area = np.zeros(n_mk + 1, np.int64)
        if floods:
            piece_area = np.bincount(np.concatenate([f[2] for f in floods]), minlength=n_mk + 1)
        piece_area[0] = 0
        pieces = np.flatnonzero(piece_area)
        areas = np.concatenate([cc_area[single], piece_area[pieces]])
        limit = self.min_area
        if areas.size and self.min_area_frac > 0:
            typical = typical_area(areas, self.min_area)
            limit = max(limit, self.min_area_frac * typical)
        keep_single = single[cc_area[single] > limit]
        keep_piece = pieces[piece_area[pieces] > limit]
        cc_lut = np.zeros(n_cc + 1, np.int32)
        cc_lut[keep_single] = np.arange(1, keep_single.size + 1, dtype=np.int32)
        labels = np.take(cc_lut, cc)  # faster than cc_lut[cc]
        mk_lut = np.zeros(n_mk + 1, np.int32)
        first = keep_single.size + 1
        mk_lut[keep_piece] = np.arange(first, first + keep_piece.size, dtype=np.int32)
        for box, comp, ids in floods:
            labels[box][comp] = mk_lut[ids]
        return labels, np.concatenate([[0], cc_area[keep_single], piece_area[keep_piece]])


@dataclass
class ContourWatershed(_MarkerWatershed):
    """Instances from (background, interior, border) softmax probabilities, shape (3, H, W).

    foreground = ``p_interior + p_border > threshold``; markers = 8-connected components of
    ``p_interior > marker_threshold`` inside the foreground, minus those smaller than
    ``min_marker_area_frac`` x the typical marker area (every interior blob as a marker
    over-splits; confidence AND size filtering is what works); then a watershed on
    ``1 - p_interior`` from the markers, constrained to the foreground. A foreground component
    with no marker is one cell. Trained with ``bloodseg.targets.contour_target``.

    Parameters
    ----------
    threshold: foreground = ``p_interior + p_border > threshold``.
    marker_threshold: markers come from ``p_interior > marker_threshold`` (0.7-0.85 works).
    min_marker_area_frac: drop markers below this fraction of the typical marker area
        (median area of the markers larger than ``min_area``); 0 keeps all.
    min_area: drop instances of at most this many px (absolute floor).
    min_area_frac: also drop instances of at most this fraction of the typical instance area
        (median area of the instances larger than ``min_area``); 0 disables.
    watershed_line: leave a 1-px background line between flooded neighbours, like the gaps
        of BBBC041Seg masks (so ``labels > 0`` is a gap-separated mask again).
    cut_cell_frac: drop instances that touch the image frame and cover less than this
        fraction of the typical instance area (``labels.drop_cut_cells``; BBBC041Seg's masks
        leave such cells out: 0.4); 0 keeps them.
    """

    channels: ClassVar[int] = 3

    threshold: float = 0.5
    marker_threshold: float = 0.7
    min_marker_area_frac: float = 0.2
    min_area: int = 16
    min_area_frac: float = 0.1
    watershed_line: bool = True
    cut_cell_frac: float = 0.0

    def foreground(self, outputs: np.ndarray) -> np.ndarray:
        out = self._check(outputs)
        return out[1] + out[2]

    def _cores(self, out: np.ndarray, fg: np.ndarray, cc_area: np.ndarray) -> np.ndarray:
        return (out[1] > self.marker_threshold).view(np.uint8) & fg

    def _relief(self, out: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
        return 1.0 - out[1][box]


@dataclass
class DistanceWatershed(_MarkerWatershed):
    """Instances from (foreground probability, normalised distance) outputs, shape (2, H, W).

    foreground = ``p_fg > threshold``; markers (inside the foreground) are either
    ``markers="threshold"``: 8-connected components of ``distance > marker_threshold``, minus
    those smaller than ``min_marker_area_frac`` x the typical marker area, or
    ``markers="hmaxima"``: the h-maxima of the distance (peaks that rise at least ``h`` above
    the highest saddle to any higher peak, whatever their height); then a watershed on
    ``-distance`` from the markers, constrained to the foreground. A foreground component
    with no marker is one cell. Trained with ``bloodseg.targets.distance_target`` (each cell
    peaks at 1.0 at its centre).

    Parameters
    ----------
    threshold: foreground = ``p_fg > threshold``.
    markers: ``threshold`` or ``hmaxima`` (see above).
    marker_threshold: ``threshold`` markers: ``distance > marker_threshold``.
    h: ``hmaxima`` markers: minimum peak prominence (distance units, [0, 1]).
    min_marker_area_frac: ``threshold`` markers below this fraction of the typical marker
        area are dropped; 0 keeps all (h-maxima are not size-filtered).
    min_area: drop instances of at most this many px (absolute floor).
    min_area_frac: also drop instances of at most this fraction of the typical instance area;
        0 disables.
    watershed_line: leave a 1-px background line between flooded neighbours.
    cut_cell_frac: drop instances that touch the image frame and cover less than this
        fraction of the typical instance area (``labels.drop_cut_cells``; BBBC041Seg's masks
        leave such cells out: 0.4); 0 keeps them.
    """

    channels: ClassVar[int] = 2
    # h-maxima are found on a map shrunk so that the typical cell radius is about this many px.
    _HMAX_RADIUS: ClassVar[float] = 10.0

    threshold: float = 0.5
    markers: str = "threshold"
    marker_threshold: float = 0.5
    h: float = 0.1
    min_marker_area_frac: float = 0.2
    min_area: int = 16
    min_area_frac: float = 0.1
    watershed_line: bool = True
    cut_cell_frac: float = 0.0

    def __post_init__(self) -> None:
        if self.markers not in MARKER_MODES:
            raise ValueError(f"markers must be one of {MARKER_MODES}, got {self.markers!r}")
        if self.markers == "hmaxima" and not self.h > 0:
            raise ValueError(f"h must be > 0, got {self.h}")

    def foreground(self, outputs: np.ndarray) -> np.ndarray:
        return self._check(outputs)[0]

    def _distance(self, out: np.ndarray, box: tuple[slice, slice] | None = None) -> np.ndarray:
        """The distance map markers and flood read (in ``box``, or the whole image)."""
        return out[1] if box is None else out[1][box]

    def _cores(self, out: np.ndarray, fg: np.ndarray, cc_area: np.ndarray) -> np.ndarray:
        dist = self._distance(out)
        if self.markers == "threshold":
            return (dist > self.marker_threshold).view(np.uint8) & fg
        # skimage.morphology.h_maxima on a full 1600x1200 map takes ~1 s (uint8; float32 ran
        # past 14 GB here); distance peaks are smooth, so a map shrunk to r ~ 10 px suffices.
        typical = typical_area(cc_area[1:], self.min_area)
        scale = max(1, int(np.sqrt(typical / np.pi) // self._HMAX_RADIUS))
        return _h_maxima(dist, fg, self.h, scale)

    def tune_grid(self) -> dict[str, list]:
        cut = cut_cell_grid(self.cut_cell_frac)
        if self.markers == "hmaxima":
            return {"h": [0.05, 0.1, 0.15, 0.2, 0.3], **cut}
        # the size filter too: over-split cells leave small second cores behind
        return {"marker_threshold": [0.3, 0.4, 0.5, 0.6],
                "min_marker_area_frac": [0.2, 0.3, 0.4, 0.5], **cut}

    def _keep_markers(self, mk_area: np.ndarray) -> np.ndarray:
        if self.markers == "threshold":
            return super()._keep_markers(mk_area)
        keep = np.ones(mk_area.size, bool)  # h-maxima caps are small by nature: keep all
        keep[0] = False
        return keep

    def _relief(self, out: np.ndarray, box: tuple[slice, slice]) -> np.ndarray:
        return 1.0 - self._distance(out, box)


@dataclass
class DistanceContourWatershed(DistanceWatershed):
    """Instances from (foreground, normalised distance, border) outputs, shape (3, H, W):
    :class:`DistanceWatershed` on ``(p_fg, clip(distance - border_weight x p_border, 0, 1))``,
    so a border the network sees between two cells also cuts the bridge between their
    cores, and the flood stops at it. Trained with ``target=distance_contour``.

    Parameters
    ----------
    border_weight: how much of the border probability is taken off the distance; 0 reads
        the outputs exactly as :class:`DistanceWatershed` reads the first two channels.
    The rest: as :class:`DistanceWatershed`.
    """

    channels: ClassVar[int] = 3

    border_weight: float = 1.0

    def _distance(self, out: np.ndarray, box: tuple[slice, slice] | None = None) -> np.ndarray:
        dist, border = (out[1], out[2]) if box is None else (out[1][box], out[2][box])
        fused = np.clip(dist - np.float32(self.border_weight) * border, 0.0, 1.0)
        return fused.astype(dist.dtype, copy=False)


def _components(binary: np.ndarray) -> tuple[int, np.ndarray]:
    """(n, int32 labels 0..n): 8-connected components of a uint8 {0, 1} map."""
    n, lab = cv2.connectedComponentsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)
    return n - 1, lab


def _h_maxima(dist: np.ndarray, fg: np.ndarray, h: float, scale: int) -> np.ndarray:
    """uint8 {0, 1} seeds: the h-maxima of ``dist`` inside ``fg`` (peaks that rise at least
    ``h`` above the highest saddle to any higher peak), each grown to its cap (the pixels
    within ``h`` of the peak, where the reconstruction is flat). Found on ``dist`` shrunk
    ``scale`` times, then drawn back at full size.

    The peaks of ``skimage.morphology.h_maxima``, except that its tops sharing one cap (a
    ridge with dips shallower than ``h``) are one seed here; the reconstruction by dilation
    of ``dist - h`` under ``dist`` iterates 3x3 geodesic dilations (OpenCV) to convergence.
    """
    f = np.where(fg.view(bool), dist, 0).astype(np.float32)
    full_h, full_w = f.shape
    if scale > 1:
        size = (max(1, full_w // scale), max(1, full_h // scale))
        f = cv2.resize(f, size, interpolation=cv2.INTER_AREA)
    rec = f - np.float32(h)
    while True:  # rec only rises, bounded by f: it converges
        prev = rec
        for _ in range(4):
            rec = np.minimum(cv2.dilate(rec, _SQUARE), f)
        if np.array_equal(rec, prev):
            break
    inside = f > 0
    tops = (f - rec >= np.float32(h) * 0.999) & inside
    # A cap is a flat plateau of rec that no neighbour rises above; two tops of one cap (a
    # ridge with a dip shallower than h) are one seed.
    flat = (rec >= cv2.dilate(rec, _SQUARE)) & inside
    n, plateaus = cv2.connectedComponents(flat.view(np.uint8), connectivity=8)
    seeded = np.zeros(n, bool)
    seeded[plateaus[tops]] = True
    seeded[0] = False
    caps = seeded[plateaus].view(np.uint8)
    if scale > 1:
        caps = cv2.resize(caps, (full_w, full_h), interpolation=cv2.INTER_NEAREST)
    return caps & fg
