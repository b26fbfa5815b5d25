"""Annotated boxes of a data set (a second reference beside the masks): read from a CSV.

``data.boxes=<boxes.csv>``, or a ``boxes.csv`` in the data folder itself (columns
``stem,x0,y0,x1,y1``, one row per box, the image's own pixel coordinates, as
``../shared/data/bbbc041-boxes/boxes.csv``), makes the test stage score box agreement too
(:mod:`bloodseg.boxes`, :class:`bloodseg.metrics.InstanceStats`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from bloodseg.io import DataError

#: a data folder's own boxes, beside train/ and test/ (bloodseg-cv links them into each fold)
BOXES_FILE = "boxes.csv"
BOX_COLUMNS = ("stem", "x0", "y0", "x1", "y1")


def read_boxes_csv(path: str | Path) -> dict[str, np.ndarray]:
    """``{image stem: (N, 4) float boxes x0, y0, x1, y1}`` of a ``stem,...,x0,y0,x1,y1``
    CSV (inclusive pixel coordinates; other columns ignored)."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: no column(s) {', '.join(missing)}; a boxes file has "
                                f"the columns {', '.join(BOX_COLUMNS)} (one row per box)")
            out: dict[str, list] = {}
            for row in reader:
                out.setdefault(row["stem"], []).append(
                    [float(row[k]) for k in ("x0", "y0", "x1", "y1")])
    except OSError as err:
        raise DataError(f"{path}: cannot read the boxes file ({err.strerror}); pass "
                        "data.boxes=<boxes.csv> or leave it null") from None
    except ValueError as err:
        raise DataError(f"{path}: a box coordinate is not a number ({err})") from None
    return {k: np.asarray(v, np.float64).reshape(-1, 4) for k, v in out.items()}


def boxes_for(root: str | Path | None, boxes: str | Path | None = None
              ) -> dict[str, np.ndarray] | None:
    """The boxes to score against: ``boxes`` if given, else ``<root>/boxes.csv`` if the data
    folder holds one, else None (no box columns)."""
    if boxes:
        return read_boxes_csv(boxes)
    if root and (Path(root) / BOXES_FILE).is_file():
        return read_boxes_csv(Path(root) / BOXES_FILE)
    return None
