"""Instance-level metrics for counting and separating cells (label images in, numbers out).

Pixel metrics (``dice``, ``iou``, ``pixel_precision``, ...) come from torchmetrics
(:func:`bloodseg.module.pixel_metrics`); this module scores *instances*: one-to-one matching
of true and predicted cells at an IoU threshold, and per-image count errors, aggregated over a
test set. The keys of :meth:`InstanceStats.aggregate` are the metrics' names everywhere:
logged (``test/f1``, ``val/f1_trainres``), written (``test_metrics.json``, ``per_image.csv``,
``tuning.json``) and reported.

Example::

    from bloodseg.metrics import InstanceStats, match_instances

    m = match_instances(true_labels, pred_labels, iou_threshold=0.5)
    print(m.f1, m.ap, m.tp, m.fp, m.fn)
    stats = InstanceStats()
    for name, true_labels, pred_labels in items:
        stats.update(name, true_labels, pred_labels)
    print(stats.aggregate()["count_mae"])

Why not a library: skimage.metrics has a contingency table and ARI/VI but no instance
matching; torchmetrics' PanopticQuality matches only at IoU > 0.5, needs torch tensors and
reports PQ, not F1/AP/count error; StarDist's ``matching`` has all this but pulls in
TensorFlow. Pure numpy/scipy here; no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from bloodseg.boxes import box_agreement
from bloodseg.labels import instance_areas, relabel_sequential

__all__ = [
    "InstanceMatch",
    "InstanceStats",
    "ROW_KEYS",
    "count_error",
    "iou_matrix",
    "match_instances",
    "merges_and_splits",
]


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num) / float(den) if den > 0 else empty


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true instance (rows) with every predicted one (columns).

    The intersections come from one joint histogram of label pairs (``np.bincount`` of
    ``true * (P + 1) + pred``), so cost is O(pixels + N_true * N_pred), not a loop over
    instances. Ids are made contiguous first; row/column k is the k-th smallest id.
    """
    inter, area_t, area_p = _overlaps(true, pred)
    union = area_t[:, None] + area_p[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _overlaps(true: np.ndarray, pred: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intersections (true x pred, px) and the areas of the true and predicted instances,
    ordered by id as in :func:`iou_matrix`."""
    true = np.asarray(true)
    pred = np.asarray(pred)
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {true.shape} vs pred {pred.shape}")
    t, nt = _flat_labels(true)
    p, npred = _flat_labels(pred)
    joint = np.bincount(t * (npred + 1) + p, minlength=(nt + 1) * (npred + 1))
    joint = joint.reshape(nt + 1, npred + 1)
    inter = joint[1:, 1:].astype(np.float64)
    area_t = joint[1:, :].sum(axis=1, dtype=np.float64)
    area_p = joint[:, 1:].sum(axis=0, dtype=np.float64)
    return inter, area_t, area_p


def _ids(labels: np.ndarray) -> np.ndarray:
    """The instance ids present, ascending: row/column k of :func:`iou_matrix` is ids[k]."""
    ids = np.unique(np.asarray(labels))
    return ids[ids > 0]


@dataclass
class InstanceMatch:
    """One-to-one matching result of one image (see :func:`match_instances`)."""

    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    ap: float  # TP / (TP + FP + FN): the DSB-2018 / Cellpose "average precision"
    mean_matched_iou: float
    iou_threshold: float = 0.5
    matched_ious: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    # (true id, predicted id) of each TP, in the label images' own ids (for pictures)
    pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64), repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("matched_ious")
        d.pop("pairs")
        return d


def match_instances(
    true: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5
) -> InstanceMatch:
    """Match true and predicted instances one-to-one and count TP / FP / FN.

    ``true`` and ``pred`` are HxW label images (0 = background). Pairs with IoU >=
    ``iou_threshold`` are TPs, chosen one-to-one by the Hungarian algorithm
    (``scipy.optimize.linear_sum_assignment``) to maximise their number, then their IoU.
    At thresholds >= 0.5 each instance has at most one such partner anyway; the
    assignment keeps lower thresholds correct too. Unmatched predictions are FP,
    unmatched true cells FN.

    Edge cases: both images empty -> precision = recall = f1 = ap = 1 (nothing to find,
    nothing wrongly found); only one empty -> 0. ``mean_matched_iou`` is the mean IoU of
    the TPs (1.0 when both are empty, 0.0 when there is no TP).
    """
    iou = iou_matrix(true, pred)
    n_true, n_pred = iou.shape
    if n_true == 0 and n_pred == 0:
        return InstanceMatch(0, 0, 0, 0, 0, 1.0, 1.0, 1.0, 1.0, 1.0, iou_threshold)
    matched = np.zeros(0)
    pairs = np.zeros((0, 2), np.int64)
    if n_true and n_pred:
        # As in StarDist: first maximise the number of pairs at or above the threshold,
        # then their IoU (the IoU term sums to < 1, so it only breaks ties). Maximising
        # plain IoU could trade one valid pair for two invalid ones.
        valid = (iou >= iou_threshold) & (iou > 0)
        weight = np.where(valid, 1.0 + iou / (2.0 * min(n_true, n_pred)), 0.0)
        rows, cols = linear_sum_assignment(weight, maximize=True)
        keep = valid[rows, cols]
        matched = iou[rows[keep], cols[keep]]
        pairs = np.stack([_ids(true)[rows[keep]], _ids(pred)[cols[keep]]], axis=1)
    tp = int(matched.size)
    fp, fn = n_pred - tp, n_true - tp
    precision = _ratio(tp, n_pred, 0.0)
    recall = _ratio(tp, n_true, 0.0)
    f1 = _ratio(2 * tp, n_true + n_pred, 0.0)
    ap = _ratio(tp, tp + fp + fn, 0.0)
    miou = float(matched.mean()) if tp else 0.0
    return InstanceMatch(n_true, n_pred, tp, fp, fn, precision, recall, f1, ap, miou, iou_threshold,
                         matched, pairs.astype(np.int64))


def merges_and_splits(true: np.ndarray, pred: np.ndarray, inside: float = 0.5,
                      piece: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Counting errors of the watershed, by overlap: (ids of predicted instances that merge
    two or more true cells, ids of true cells split into two or more predicted ones).

    A predicted instance merges the true cells of which at least ``inside`` of the area
    lies in it; a true cell is split by the predictions of which at least ``inside`` of the
    area lies in it and that cover at least ``piece`` of the cell (a speck of debris in a
    cell is not a split). A merge or a split shows as one TP at best and FNs or FPs besides.
    """
    inter, area_t, area_p = _overlaps(true, pred)
    if not inter.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cell_inside = inter >= inside * area_t[:, None]    # [i, j]: most of true i is in pred j
    pred_inside = (inter >= inside * area_p[None, :]) & (inter >= piece * area_t[:, None])
    merged = _ids(pred)[cell_inside.sum(axis=0) >= 2]
    split = _ids(true)[pred_inside.sum(axis=1) >= 2]
    return merged.astype(np.int64), split.astype(np.int64)


def count_error(n_true: int, n_pred: int) -> int:
    """Signed count error, predicted minus true (positive = over-counting)."""
    return int(n_pred) - int(n_true)


AP_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)

#: the columns of :attr:`InstanceStats.rows` (``per_image.csv``), ``file`` first
ROW_KEYS = ("file", "true_count", "pred_count", "count_error", "abs_count_error", "tp", "fp",
            "fn", "precision", "recall", "f1", "ap50", "mean_matched_iou")


@dataclass
class InstanceStats:
    """Accumulate per-image instance metrics and aggregate them over a data set.

    ``aggregate()`` micro-averages detection scores (sums TP/FP/FN over images, so images
    with more cells weigh more; the per-image values in ``rows`` give macro averages, the
    DSB-2018 / Cellpose way), averages count errors and ``mean_matched_iou`` per image.
    Its keys are the metrics' names: ``n_images``, ``true_count_mean``, ``pred_count_mean``,
    ``count_mae``, ``count_bias``, ``count_mape``, ``tp``, ``fp``, ``fn``, ``precision``,
    ``recall``, ``f1``, ``ap50``, ``ap75``, ``map``, ``mean_matched_iou``; each row's are
    :data:`ROW_KEYS`. ``areas`` / ``true_areas`` keep predicted / true instance areas for
    size histograms.

    With ``boxes`` (``{image stem: (N, 4) boxes}``, a second human reference:
    :mod:`bloodseg.boxes`), each image with boxes also gets ``box_tp``/``box_fp``/``box_fn``/
    ``box_count`` in its row, and ``aggregate()`` ``box_f1`` (the cells' bounding boxes
    matched one-to-one at box IoU >= 0.5), ``box_count_mae`` and ``box_count_bias``
    (predicted count minus box count) over those images.
    """

    iou_threshold: float = 0.5
    boxes: dict[str, np.ndarray] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    areas: list[np.ndarray] = field(default_factory=list)
    true_areas: list[np.ndarray] = field(default_factory=list)
    matched_ious: list[np.ndarray] = field(default_factory=list)

    def update(self, name: str, true_labels: np.ndarray, pred_labels: np.ndarray) -> dict:
        m = match_instances(true_labels, pred_labels, self.iou_threshold)
        err = count_error(m.n_true, m.n_pred)
        row = {
            "file": str(name),
            "true_count": m.n_true,
            "pred_count": m.n_pred,
            "count_error": err,
            "abs_count_error": abs(err),
            "tp": m.tp,
            "fp": m.fp,
            "fn": m.fn,
            "precision": m.precision,
            "recall": m.recall,
            "f1": m.f1,
            "ap50": self._ap(m.matched_ious, m.n_true, m.n_pred, 0.5),
            "mean_matched_iou": m.mean_matched_iou,
        }
        stem = Path(str(name)).stem
        if self.boxes is not None and stem in self.boxes:
            row.update(box_agreement(pred_labels, self.boxes[stem]))
        self.rows.append(row)
        self.areas.append(instance_areas(pred_labels))
        self.true_areas.append(instance_areas(true_labels))
        self.matched_ious.append(m.matched_ious)
        return row

    def aggregate(self) -> dict[str, float]:
        n = len(self.rows)
        if n == 0:
            return {"n_images": 0}
        col = {k: np.array([r[k] for r in self.rows], dtype=np.float64) for k in ROW_KEYS[1:]}
        tp, fp, fn = col["tp"].sum(), col["fp"].sum(), col["fn"].sum()
        n_true, n_pred = col["true_count"].sum(), col["pred_count"].sum()
        true_pos = col["true_count"] > 0
        both_empty = n_true == 0 and n_pred == 0
        return {
            "n_images": n,
            "true_count_mean": float(col["true_count"].mean()),
            "pred_count_mean": float(col["pred_count"].mean()),
            "count_mae": float(col["abs_count_error"].mean()),
            "count_bias": float(col["count_error"].mean()),
            # Relative error only over images that have cells (undefined otherwise).
            "count_mape": float(
                (col["abs_count_error"][true_pos] / col["true_count"][true_pos]).mean()
            )
            if true_pos.any()
            else float("nan"),
            "tp": int(tp),
            "fp": int(fp),
            "fn": int(fn),
            "precision": 1.0 if both_empty else _ratio(tp, tp + fp, 0.0),
            "recall": 1.0 if both_empty else _ratio(tp, tp + fn, 0.0),
            "f1": 1.0 if both_empty else _ratio(2 * tp, 2 * tp + fp + fn, 0.0),
            "mean_matched_iou": float(col["mean_matched_iou"].mean()),
            **self.ap_over_thresholds(n_true, n_pred),
            **self._box_aggregate(),
        }

    def _box_aggregate(self) -> dict[str, float]:
        boxed = [r for r in self.rows if "box_tp" in r]
        if not boxed:
            return {}
        tp, fp, fn = (sum(r[k] for r in boxed) for k in ("box_tp", "box_fp", "box_fn"))
        err = np.array([r["pred_count"] - r["box_count"] for r in boxed], np.float64)
        return {"box_f1": _ratio(2 * tp, 2 * tp + fp + fn, 1.0),
                "box_count_mae": float(np.abs(err).mean()), "box_count_bias": float(err.mean()),
                "box_images": len(boxed)}

    def _ap(self, ious: np.ndarray, n_true: float, n_pred: float, t: float) -> float:
        """TP/(TP+FP+FN) at IoU ``t`` of images with ``n_true`` / ``n_pred`` instances whose
        matched pairs have IoUs ``ious`` (1 when both are empty; NaN for ``t`` below
        ``iou_threshold``: pairs under it were never matched).

        At thresholds >= 0.5 a cell has at most one partner, so the pairs matched at
        ``iou_threshold`` (<= 0.5) that reach IoU t are exactly the TPs at t.
        """
        if n_true == 0 and n_pred == 0:
            return 1.0
        if t < self.iou_threshold - 1e-9:
            return float("nan")
        tp = float((np.asarray(ious) >= t - 1e-9).sum())
        return _ratio(tp, n_true + n_pred - tp, 0.0)

    def ap_over_thresholds(self, n_true: float, n_pred: float) -> dict:
        """Pooled AP = TP/(TP+FP+FN) at IoU 0.50, 0.55, ..., 0.95 (``ap50``, ``ap75``, ``map``)."""
        ious = np.concatenate(self.matched_ious) if self.matched_ious else np.zeros(0)
        aps = [self._ap(ious, n_true, n_pred, t) for t in AP_THRESHOLDS]
        return {"ap50": aps[0], "ap75": aps[5], "map": float(np.mean(aps))}

    def area_histogram(
        self, bins: int | np.ndarray = 20, which: str = "pred"
    ) -> tuple[np.ndarray, np.ndarray]:
        """(counts, bin_edges) of instance areas in px ("pred" or "true" instances)."""
        data = self.areas if which == "pred" else self.true_areas
        values = np.concatenate(data) if data else np.zeros(0, np.int64)
        return np.histogram(values, bins=bins)

    def reset(self) -> None:
        self.rows.clear()
        self.areas.clear()
        self.true_areas.clear()
        self.matched_ious.clear()


def _flat_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Flat contiguous ids 0..N (0 = background) and N."""
    flat = relabel_sequential(labels).ravel()
    return flat, int(flat.max()) if flat.size else 0
