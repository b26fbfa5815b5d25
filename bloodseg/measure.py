"""Per-cell measurements and label exports that other tools read.

    >>> rows = cell_rows(labels, file="smear.png", output="smear.png")   # cells.csv rows
    >>> write_geojson("smear.geojson", labels)   # polygons QuPath imports (File > Import objects)
    >>> write_label_tiff("smear.tif", labels)    # label image for napari and Fiji

Measurements come from ``skimage.measure.regionprops_table`` (the reference implementation
that napari and scikit-image users already trust); outlines from OpenCV's contour tracing.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from skimage.measure import regionprops_table

from bloodseg.io import write_bytes_atomic, write_text_atomic

CELL_COLUMNS = ["file", "output", "cell_id", "area_px", "centroid_x", "centroid_y",
                "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "equivalent_diameter_px",
                "eccentricity", "touches_frame", "confidence"]
FORMATS = ("geojson", "tiff")


def cell_rows(labels: np.ndarray, file: str, output: str,
              prob: np.ndarray | None = None) -> list[dict]:
    """One row per cell of ``labels`` (0 = background): area, centroid (x, y), bounding box
    (x0, y0 inclusive; x1, y1 exclusive), equivalent diameter, eccentricity, whether the
    cell touches the image frame (frame-cut cells are smaller than they really are) and,
    given the foreground probability ``prob``, the cell's ``confidence``: its mean foreground
    probability (0..1; a cell drawn where the network was unsure scores low)."""
    if not labels.any():
        return []
    props = regionprops_table(
        labels.astype(np.int32), intensity_image=None if prob is None else prob.astype(
            np.float32), properties=("label", "area", "centroid", "bbox",
                                     "equivalent_diameter_area", "eccentricity",
                                     *(() if prob is None else ("intensity_mean",))))
    h, w = labels.shape
    rows = []
    for i in range(len(props["label"])):
        y0, x0, y1, x1 = (int(props[f"bbox-{k}"][i]) for k in range(4))
        rows.append({
            "file": file, "output": output, "cell_id": int(props["label"][i]),
            "area_px": int(props["area"][i]),
            "centroid_x": round(float(props["centroid-1"][i]), 2),
            "centroid_y": round(float(props["centroid-0"][i]), 2),
            "bbox_x0": x0, "bbox_y0": y0, "bbox_x1": x1, "bbox_y1": y1,
            "equivalent_diameter_px": round(float(props["equivalent_diameter_area"][i]), 2),
            "eccentricity": round(float(props["eccentricity"][i]), 4),
            "touches_frame": bool(y0 == 0 or x0 == 0 or y1 == h or x1 == w),
            "confidence": "" if prob is None else round(float(props["intensity_mean"][i]), 3),
        })
    return rows


def polygons(labels: np.ndarray) -> list[tuple[int, list[list[float]]]]:
    """(cell id, closed outer ring [[x, y], ...]) of every cell, in pixel corner coordinates."""
    out = []
    for cell_id in np.unique(labels):
        if cell_id == 0:
            continue
        ys, xs = np.nonzero(labels == cell_id)
        y0, x0 = int(ys.min()), int(xs.min())
        crop = (labels[y0:ys.max() + 1, x0:xs.max() + 1] == cell_id).astype(np.uint8)
        contours, _ = cv2.findContours(np.pad(crop, 1), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        ring = max(contours, key=cv2.contourArea)[:, 0, :].astype(float)
        ring += (x0 - 1, y0 - 1)  # undo the crop and its padding
        points = ring.tolist()
        out.append((int(cell_id), [*points, points[0]]))
    return out


def write_geojson(path: str | Path, labels: np.ndarray, name: str = "cell") -> Path:
    """Cells as a GeoJSON FeatureCollection of detection polygons (QuPath's import format)."""
    features = [{
        "type": "Feature",
        "id": str(cell_id),
        "geometry": {"type": "Polygon", "coordinates": [ring]},
        "properties": {"objectType": "detection", "classification": {"name": name},
                       "cell_id": cell_id},
    } for cell_id, ring in polygons(labels)]
    return write_text_atomic(path, json.dumps({"type": "FeatureCollection",
                                               "features": features}))


def write_label_tiff(path: str | Path, labels: np.ndarray) -> Path:
    """A 16-bit (32-bit beyond 65535 cells) label TIFF, zlib-compressed."""
    import io

    import tifffile

    dtype = np.uint16 if labels.max(initial=0) < 65536 else np.uint32
    buf = io.BytesIO()
    tifffile.imwrite(buf, labels.astype(dtype), compression="zlib")
    return write_bytes_atomic(path, buf.getvalue())
