"""The distance-transform watershed that splits merged cells in a foreground map.

A segmentation network (or Otsu) gives a foreground in which touching cells often merge;
this splits blobs of roughly round cells without cutting single irregular or elongated
cells in two. Pure numpy/OpenCV/scipy (no torch), ~30 ms on 1600x1200.

    >>> ws = Watershed()                       # sizes adapt to the image scale
    >>> labels = ws(prob)                      # HxW float in [0, 1] -> int32 0..N

Speed and accuracy against scikit-image: ``benchmarks/postprocess.py`` (numbers and tuning
history in ``benchmarks/README.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from bloodseg.labels import component_stats, cut_cell_grid, drop_cut_cells

__all__ = ["Watershed"]


def _foreground(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Binary uint8 {0,1} foreground from a probability map or an already binary mask."""
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"expected an HxW map, got shape {prob.shape}")
    if prob.dtype == bool or np.issubdtype(prob.dtype, np.integer):
        # Integer input is a mask ({0,1} or {0,255}); the float threshold does not apply.
        return (prob > 0).astype(np.uint8)
    return (prob > threshold).astype(np.uint8)


@dataclass
class Watershed:
    """Split merged cells: distance transform -> neck-checked peaks -> ``cv2.watershed``.

    Sizes are fractions of the typical cell radius ``r`` (median inscribed radius of the
    components), so one config works at 256x256 and at 1600x1200. Two distance peaks of one
    component are two cells only if the distance map dips below ``split_ratio`` x the lower
    peak between them (a neck), so round, elongated or crenated single cells stay whole.
    Tuning history and measurements: ``benchmarks/README.md``.

    Parameters
    ----------
    threshold: probability above which a pixel is foreground (bool/int masks: nonzero).
    min_distance: half-size in px of the peak window; ``None`` = ``min_distance_frac * r``.
    split_ratio: neck depth that makes two cells; higher splits more.
    min_peak_frac: peaks lower than this fraction of ``r`` seed nothing.
    min_area: drop components / instances of at most this many px.
    min_area_frac: also drop instances of at most this fraction of ``pi r^2``; 0 disables.
    smooth_sigma_frac: blur of the distance map (sigma = frac * r) against crenated outlines.
    marker_frac: seed disc radius / peak height.
    flood_on: ``prob`` lets dips of a float map steer split lines; ``flat``: geodesic split.
    core_threshold: if set, peaks come from ``prob > core_threshold`` (off by default).
    open_iterations: 3x3 openings of the foreground first.
    remove_border: drop instances that touch the image border.
    cut_cell_frac: drop only those that cover less than this fraction of the typical
        instance area (``labels.drop_cut_cells``; BBBC041Seg's masks leave such cells out:
        0.4); 0 keeps them.
    """

    channels: ClassVar[int] = 1  # a (1, H, W) foreground map (or HxW)

    threshold: float = 0.5
    min_distance: int | None = None
    min_distance_frac: float = 0.4
    split_ratio: float = 0.85
    min_peak_frac: float = 0.3
    min_area: int = 16
    min_area_frac: float = 0.1
    smooth_sigma_frac: float = 0.05
    marker_frac: float = 0.7
    flood_on: str = "prob"
    core_threshold: float | None = None
    open_iterations: int = 0
    remove_border: bool = False
    cut_cell_frac: float = 0.0

    # Peak finding runs on a map downsampled so that r is about this many px.
    _PEAK_SCALE_RADIUS = 12.0

    def __post_init__(self) -> None:
        if self.flood_on not in ("prob", "flat"):
            raise ValueError(f"flood_on must be 'prob' or 'flat', got {self.flood_on!r}")

    def foreground(self, outputs: np.ndarray) -> np.ndarray:
        """The foreground probability of a (1, H, W) output or an HxW map."""
        outputs = np.asarray(outputs)
        if outputs.ndim == 3 and outputs.shape[0] == 1:
            return outputs[0]
        return outputs  # HxW (anything else is refused by __call__)

    def __call__(self, prob: np.ndarray) -> np.ndarray:
        prob = self.foreground(prob)
        fg = _foreground(prob, self.threshold)
        if self.open_iterations > 0:
            fg = cv2.morphologyEx(
                fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8), iterations=self.open_iterations
            )
        # Components keep OpenCV's ids (``ids[i]``: the i-th kept one's): renumbering the
        # frame to drop specks (labels.components) would cost two more full-frame passes.
        cc, stats, kept = component_stats(fg, self.min_area)
        n_all = kept.size
        ids = np.flatnonzero(kept).astype(np.int32)
        n_cc, stats = ids.size, stats[ids]
        if n_cc == 0:
            return np.zeros(fg.shape, np.int32)
        if n_cc < n_all - 1:  # specks: background for the distances
            fg = np.take(kept.view(np.uint8), cc)
        elif n_cc == 1 and stats[0, cv2.CC_STAT_AREA] == fg.size:
            return cc  # no background at all: distances are undefined, nothing to split
        # The 5x5 chamfer mask is within ~2% of the exact EDT at a third of the cost.
        dist = cv2.distanceTransform(fg, cv2.DIST_L2, 5)
        boxes = [_box(stats[i]) for i in range(n_cc)]
        comp_max = np.array(
            [dist[b][cc[b] == ids[i]].max() for i, b in enumerate(boxes)], np.float32
        )
        radius = _typical_radius(comp_max)
        peak_map = dist
        if self.core_threshold is not None and np.issubdtype(prob.dtype, np.floating):
            core = (prob > self.core_threshold).view(np.uint8) & fg
            peak_map = cv2.distanceTransform(core, cv2.DIST_L2, 5)
        groups = self._peak_groups(peak_map, dist, cc, ids, n_all, boxes, radius)
        min_area = max(self.min_area, int(self.min_area_frac * np.pi * radius**2))
        return self._label(prob, cc, ids, n_all, stats, boxes, groups, min_area)

    def tune_grid(self) -> dict[str, list]:
        """The values ``bloodseg.tuning`` tries by default: how deep a neck splits two cells,
        and where the data has a rule for frame-cut cells, its cut-off."""
        cut = {} if self.remove_border else cut_cell_grid(self.cut_cell_frac)
        return {"split_ratio": [0.7, 0.75, 0.8, 0.85, 0.9, 0.95], **cut}

    def batch(self, probs: np.ndarray) -> list[np.ndarray]:
        """Apply to a (B, H, W) stack; returns one int32 label map per item."""
        return [self(p) for p in np.asarray(probs)]

    def at_scale(self, factor: float) -> Watershed:
        """The same post-processing for maps ``factor`` x this size per side: the sizes given
        in pixels (``min_area``, ``min_distance``) scaled; the others are fractions of the
        typical cell radius measured on each image."""
        return replace(self, min_area=max(1, round(self.min_area * factor**2)),
                       min_distance=None if self.min_distance is None else
                       max(1, round(self.min_distance * factor)))

    # -- steps -------------------------------------------------------------------------

    def _peak_groups(
        self,
        peak_map: np.ndarray,
        dist: np.ndarray,
        cc: np.ndarray,
        ids: np.ndarray,
        cc_ids: int,
        boxes: list[tuple[slice, slice]],
        radius: float,
    ) -> list[list[np.ndarray]]:
        """Per component (``cc`` id ``ids[i]``; ``cc_ids``: ids in ``cc``), its cells: each an
        (m, 3) array of peaks (y, x, height) in px."""
        h, w = peak_map.shape
        scale = max(1, int(radius // self._PEAK_SCALE_RADIUS))
        if scale > 1:
            size = (max(1, round(w / scale)), max(1, round(h / scale)))
            small = cv2.resize(peak_map, size, interpolation=cv2.INTER_AREA)
        else:
            small = peak_map
        fy, fx = h / small.shape[0], w / small.shape[1]
        if self.min_distance is not None:
            k = max(1, int(round(self.min_distance / fx)))
        else:
            k = max(1, int(round(self.min_distance_frac * radius / fx)))
        ds = _smooth(small, self.smooth_sigma_frac * radius / fx)
        # A square window is separable in OpenCV (fast); a disc is ~15x slower.
        dil = cv2.dilate(ds, np.ones((2 * k + 1, 2 * k + 1), np.uint8))
        is_peak = ((ds >= dil) & (ds > self.min_peak_frac * radius)).view(np.uint8)
        found = cv2.findNonZero(is_peak)  # ~5x faster than np.nonzero on a full frame
        found = np.zeros((0, 2), np.intp) if found is None else found.reshape(-1, 2)
        sy, sx = _one_per_plateau(
            found[:, 1].astype(np.intp), found[:, 0].astype(np.intp), ds.shape[1]
        )
        ys = np.clip(((sy + 0.5) * fy).astype(np.intp), 0, h - 1)
        xs = np.clip(((sx + 0.5) * fx).astype(np.intp), 0, w - 1)
        index = np.zeros(cc_ids, np.intp)  # cc id -> its kept index + 1 (0: none)
        index[ids] = np.arange(1, ids.size + 1)
        comp = index[cc[ys, xs]] - 1
        inside = comp >= 0  # smoothing can lift a background pixel next to a cell
        sy, sx, comp = sy[inside], sx[inside], comp[inside]
        order = np.argsort(comp, kind="stable")
        sy, sx, comp = sy[order], sx[order], comp[order]
        heights = ds[sy, sx]
        bounds = np.searchsorted(comp, np.arange(len(boxes) + 1))

        groups: list[list[np.ndarray]] = []
        for c, box in enumerate(boxes):
            lo, hi = bounds[c], bounds[c + 1]
            if hi - lo <= 1:
                if hi - lo == 1:
                    y, x = (sy[lo] + 0.5) * fy, (sx[lo] + 0.5) * fx
                    pts = np.array([[y, x, heights[lo]]], np.float32)
                else:
                    # Every component is a cell even if its peak was suppressed (too low,
                    # or shadowed by a bigger neighbour in the window): seed its maximum.
                    sub = np.where(cc[box] == ids[c], dist[box], -1.0)
                    y, x = np.unravel_index(int(np.argmax(sub)), sub.shape)
                    pts = np.array([[y + box[0].start, x + box[1].start, sub[y, x]]], np.float32)
                groups.append([pts])
                continue
            pts = np.stack([sy[lo:hi], sx[lo:hi], heights[lo:hi]], axis=1).astype(np.float32)
            cells = self._merge_peaks(ds, pts, fx)
            for cell in cells:  # small-map -> full-resolution pixel coordinates
                cell[:, 0] = (cell[:, 0] + 0.5) * fy
                cell[:, 1] = (cell[:, 1] + 0.5) * fx
            groups.append(cells)
        return groups

    def _merge_peaks(self, ds: np.ndarray, pts: np.ndarray, px: float) -> list[np.ndarray]:
        """Union peaks (y, x in ``ds`` pixels of ``px`` image pixels; height in image
        pixels) that are not separated by a neck (see ``split_ratio``)."""
        m = len(pts)
        i, j = np.triu_indices(m, 1)
        d = np.hypot(pts[i, 0] - pts[j, 0], pts[i, 1] - pts[j, 1])
        # Only peaks that could lie in one cell are tested; the rest stay separate.
        near = d * px <= 2.0 * (pts[i, 2] + pts[j, 2])
        i, j, d = i[near], j[near], d[near]
        same = np.zeros(i.size, bool)
        if i.size:
            n = np.ceil(d).astype(np.int64) + 1
            pair = np.repeat(np.arange(i.size), n)
            start = np.cumsum(n) - n
            t = (np.arange(int(n.sum())) - start[pair]) / np.maximum(n[pair] - 1, 1)
            yy = np.rint(pts[i, 0][pair] * (1 - t) + pts[j, 0][pair] * t).astype(np.intp)
            xx = np.rint(pts[i, 1][pair] * (1 - t) + pts[j, 1][pair] * t).astype(np.intp)
            saddle = np.minimum.reduceat(ds[yy, xx], start)
            same = saddle >= self.split_ratio * np.minimum(pts[i, 2], pts[j, 2])
        group = _groups(m, i[same], j[same])
        return [pts[group == g] for g in range(int(group.max()) + 1)]

    def _label(
        self,
        prob: np.ndarray,
        cc: np.ndarray,
        ids: np.ndarray,
        cc_ids: int,
        stats: np.ndarray,
        boxes: list[tuple[slice, slice]],
        groups: list[list[np.ndarray]],
        min_area: int,
    ) -> np.ndarray:
        """Final int32 labels 1..N: one-cell components as they are, others flooded; ids in
        component order, a flooded component's pieces in a row."""
        area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
        single = np.array([len(g) == 1 for g in groups])
        count = (single & (area > min_area)).astype(np.int64)  # final ids per component
        floods = {}
        for c in np.flatnonzero(~single):
            inside, got = self._split(prob, cc, boxes[c], int(ids[c]), groups[c])
            areas = np.bincount(got, minlength=len(groups[c]) + 1)
            big = np.flatnonzero(areas[1:] > min_area) + 1
            count[c] = big.size
            floods[c] = (inside, got, big, areas[big])
        first = np.cumsum(count) - count + 1  # each component's first final id
        sizes = np.zeros(int(count.sum()) + 1, np.int64)  # pixels per final id
        whole = np.flatnonzero(single & (count > 0))
        lut = np.zeros(cc_ids, np.int32)
        lut[ids[whole]] = first[whole]
        sizes[first[whole]] = area[whole]
        labels = np.take(lut, cc)  # 3x faster than lut[cc] on a full frame
        for c, (inside, got, big, big_area) in floods.items():
            new = np.zeros(len(groups[c]) + 1, np.int32)
            new[big] = np.arange(first[c], first[c] + big.size, dtype=np.int32)
            sizes[new[big]] = big_area
            labels[boxes[c]][inside] = new[got]
        # remove_border: every frame-touching cell is "cut", whatever its size
        return drop_cut_cells(labels, math.inf if self.remove_border else self.cut_cell_frac,
                              areas=sizes)

    def _split(
        self,
        prob: np.ndarray,
        cc: np.ndarray,
        box: tuple[slice, slice],
        cid: int,
        cells: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Watershed one component: (its pixels in the box, cell index 1..G or 0 per pixel)."""
        comp = np.pad(cc[box] == cid, 1)
        markers = np.zeros(comp.shape, np.int32)
        y0, x0 = box[0].start - 1, box[1].start - 1
        # Big seeds first so that a small neighbour's seed is drawn over them, not hidden.
        order = sorted(range(len(cells)), key=lambda g: -float(cells[g][:, 2].max()))
        for g in order:
            for y, x, h in cells[g]:
                radius = max(1, int(self.marker_frac * h))
                cv2.circle(markers, (int(x) - x0, int(y) - y0), radius, g + 1, -1)
        # Background beyond a 1-px ring is pre-labelled so the flood never visits it; the
        # ring stays open so that cell rims do not become -1 (boundary) pixels.
        ring = cv2.dilate(comp.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
        markers[~comp] = 0
        markers[~ring] = len(cells) + 1
        # cv2.watershed floods in order of the colour difference between neighbours:
        # background (255) next to cells (<= 200) is entered only after every cell pixel
        # was reached from inside the component.
        img = np.full(comp.shape, 255, np.uint8)
        if self.flood_on == "prob" and np.issubdtype(prob.dtype, np.floating):
            val = np.pad(np.clip((1.0 - prob[box]) * 200.0, 0, 200).astype(np.uint8), 1)
            img[comp] = val[comp]
        else:
            img[comp] = 0
        cv2.watershed(cv2.merge([img, img, img]), markers)
        inside = comp[1:-1, 1:-1]
        got = markers[1:-1, 1:-1][inside]
        got[(got < 0) | (got > len(cells))] = 0  # -1 = split line: a thin gap, as in GT
        return inside, got


#: nodes up to which :func:`_groups` unions in Python rather than through scipy.sparse
_SMALL_GRAPH = 64


def _typical_radius(comp_max: np.ndarray) -> float:
    """Median inscribed radius of the components, leaving out specks at most 3 px thick.

    The median ignores a few stain clouds or a dark image corner (huge, but few); the
    3 px floor keeps a sprinkle of debris from setting the scale (a 5x5 speck is 3 px
    thick; cells are >= 4 px thick even at 128x128). An area-weighted median would be
    dragged up by a large cloud or by merged clusters.
    """
    thick = comp_max[comp_max > 3.0]
    return max(float(np.median(thick if thick.size else comp_max)), 1.0)


def _box(stat: np.ndarray) -> tuple[slice, slice]:
    x, y, w, h = (int(v) for v in stat[:4])
    return slice(y, y + h), slice(x, x + w)


def _smooth(dist: np.ndarray, sigma: float) -> np.ndarray:
    """Approximately Gaussian blur (two box passes: 4x cheaper than cv2.GaussianBlur)."""
    if sigma < 0.5:
        return dist
    # Two box filters of width w have variance 2 (w^2 - 1) / 12 = sigma^2.
    w = max(3, int(round(np.sqrt(6.0 * sigma**2 + 1.0))) | 1)
    return cv2.blur(cv2.blur(dist, (w, w)), (w, w))


def _one_per_plateau(ys: np.ndarray, xs: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs) keeping one pixel per 8-connected run of peak pixels (a plateau)."""
    if ys.size < 2:
        return ys, xs
    idx = ys.astype(np.int64) * width + xs
    order = np.argsort(idx)
    idx, ys, xs = idx[order], ys[order], xs[order]
    a_all, b_all = [], []
    # Forward neighbours only (right, and the three below): each pair is seen once.
    for off in (1, width - 1, width, width + 1):
        pos = np.minimum(np.searchsorted(idx, idx + off), idx.size - 1)
        a = np.flatnonzero(idx[pos] == idx + off)
        a_all.append(a)
        b_all.append(pos[a])
    group = _groups(idx.size, np.concatenate(a_all), np.concatenate(b_all))
    _, first = np.unique(group, return_index=True)  # one pixel (the first) per plateau
    keep = np.sort(first)
    return ys[keep], xs[keep]


def _groups(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Group id 0..G-1 of each of ``n`` nodes joined by edges (a, b); groups are numbered in
    order of their lowest node."""
    if n > _SMALL_GRAPH:
        graph = coo_matrix((np.ones(a.size, np.int8), (a, b)), shape=(n, n))
        return connected_components(graph, directed=False)[1]
    # the few peaks of one component: building a sparse graph costs 50x this loop
    root = list(range(n))

    def find(i: int) -> int:
        while root[i] != i:
            root[i] = root[root[i]]
            i = root[i]
        return i

    for i, j in zip(a.tolist(), b.tolist()):
        ri, rj = find(i), find(j)
        if ri != rj:
            root[max(ri, rj)] = min(ri, rj)
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(find(i), len(ids)) for i in range(n)], np.int32)
