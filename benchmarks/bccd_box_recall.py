"""Predicted cell counts on real BCCD smears vs their hand-drawn RBC/WBC boxes.

BCCD has boxes, not masks, so instance quality is judged on boxes: each predicted instance
becomes its bounding box and boxes are matched one-to-one (Hungarian on box IoU, kept at
IoU >= 0.5; :mod:`bloodseg.boxes`). Printed: boxed cells, predicted cells, recall of boxed
cells, and the share of predictions that match a box (a lower bound on precision: BCCD
leaves many cells unboxed).

    bloodseg-predict ckpt_path=... input=../shared/data/bccd-boxes/JPEGImages output=pred \\
        predict.scale=0.2
    python benchmarks/bccd_box_recall.py pred/instances ../shared/data/bccd-boxes/Annotations
"""

from __future__ import annotations

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from bloodseg.boxes import box_matches, instance_boxes

CLASSES = ("RBC", "WBC")


def read_boxes(xml_path: Path, classes=CLASSES) -> np.ndarray:
    """(N, 4) boxes x0, y0, x1, y1 (inclusive pixel coordinates) of the given classes."""
    boxes = []
    for obj in ET.parse(xml_path).getroot().iter("object"):
        if obj.findtext("name") in classes:
            b = obj.find("bndbox")
            boxes.append([float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
    return np.asarray(boxes, np.float64).reshape(-1, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instances", type=Path, help="bloodseg-predict's instances/ folder")
    parser.add_argument("annotations", type=Path, help="BCCD Annotations/ (VOC XML)")
    parser.add_argument("--iou", type=float, default=0.5)
    args = parser.parse_args()

    n_true = n_pred = n_match = n_images = 0
    abs_err = []
    for inst_path in sorted(args.instances.glob("*.png")):
        xml = args.annotations / f"{inst_path.stem}.xml"
        if not xml.is_file():
            continue
        labels = cv2.imread(str(inst_path), cv2.IMREAD_UNCHANGED).astype(np.int32)
        true, pred = read_boxes(xml), instance_boxes(labels)
        n_true += len(true)
        n_pred += len(pred)
        n_match += box_matches(true, pred, args.iou)
        n_images += 1
        abs_err.append(abs(len(pred) - len(true)))
    if not n_images:
        raise SystemExit(f"no instance PNG in {args.instances} has an XML in {args.annotations}")
    print(f"images: {n_images}  boxed RBC+WBC: {n_true}  predicted cells: {n_pred}")
    print(f"mean boxed cells/image: {n_true / n_images:.1f}  "
          f"mean predicted cells/image: {n_pred / n_images:.1f}  "
          f"count MAE vs boxes: {np.mean(abs_err):.1f}")
    print(f"recall of boxed cells at box IoU >= {args.iou}: {n_match / max(n_true, 1):.3f}")
    print(f"predictions matching a box: {n_match / max(n_pred, 1):.3f} "
          "(lower bound on precision: not every cell is boxed)")


if __name__ == "__main__":
    main()
