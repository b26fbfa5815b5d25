"""A second, box-drawn reference: cells' bounding boxes matched one-to-one to annotated boxes.

BBBC041's own annotators boxed every cell of the images that BBBC041Seg later drew masks on
(``../shared/data/bbbc041-boxes/boxes.csv``); BCCD has VOC boxes only. Scoring against them
says how close a count is to the limit set by two human annotations disagreeing. Boxes are
matched by the Hungarian algorithm on box IoU (``scipy.optimize.linear_sum_assignment``) and
kept at IoU >= 0.5, as detection benchmarks (PASCAL VOC) do.

    >>> boxes = read_boxes_csv("bbbc041-boxes/boxes.csv")     # bloodseg.data.boxes
    >>> box_agreement(labels, boxes["0d7bf56f-..."])         # {"box_tp", "box_fp", ...}
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


def instance_boxes(labels: np.ndarray) -> np.ndarray:
    """Bounding boxes (x0, y0, x1, y1, inclusive) of labels 1..N."""
    boxes = [[sx.start, sy.start, sx.stop - 1, sy.stop - 1]
             for sy, sx in filter(None, ndimage.find_objects(labels))]
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of inclusive pixel boxes."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0 + 1, 0, None) * np.clip(y1 - y0 + 1, 0, None)

    def area(r: np.ndarray) -> np.ndarray:
        return (r[:, 2] - r[:, 0] + 1) * (r[:, 3] - r[:, 1] + 1)

    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def box_matches(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> int:
    """One-to-one matches at box IoU >= ``threshold``."""
    if not len(true) or not len(pred):
        return 0
    iou = box_iou(true, pred)
    rows, cols = linear_sum_assignment(-iou)
    return int((iou[rows, cols] >= threshold).sum())


def box_agreement(labels: np.ndarray, boxes: np.ndarray, threshold: float = 0.5) -> dict:
    """An image's instances against its annotated boxes: matches, misses, box count."""
    pred = instance_boxes(labels)
    tp = box_matches(boxes, pred, threshold)
    return {"box_tp": tp, "box_fp": len(pred) - tp, "box_fn": len(boxes) - tp,
            "box_count": len(boxes)}
