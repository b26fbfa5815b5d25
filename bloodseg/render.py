"""Pictures of instance labels: contour overlays with numbers, and colour label maps.

Shared by the instance-metrics callback (W&B images), ``bloodseg-predict`` (overlay PNGs) and
``bloodseg-report`` (test panels), so all three show cells the same way.

    >>> rgb = overlay(image, labels)            # contours + cell numbers, RGB uint8
    >>> rgb = overlay(image, labels, count=labels.max())   # + "87 cells" in the top-left corner
    >>> rgb = colorize(labels)                  # one random colour per instance
"""

from __future__ import annotations

import cv2
import numpy as np

from bloodseg.labels import centroids


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Any HxW / HxWx1 / HxWx3 image (uint8 or float, any range) as RGB uint8 for display."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.dtype != np.uint8:
        img = img.astype(np.float32)
        lo, hi = float(img.min()), float(img.max())
        img = ((img - lo) / (hi - lo if hi > lo else 1.0) * 255).round().astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img.copy()


def colorize(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Random-but-fixed colour per label, black background."""
    n = int(labels.max()) if labels.size else 0
    palette = np.random.default_rng(seed).integers(60, 256, (n + 1, 3), dtype=np.uint8)
    palette[0] = 0
    return palette[labels]


def overlay(image: np.ndarray, labels: np.ndarray, numbers: bool = True,
            color: tuple[int, int, int] = (255, 230, 0), count: int | None = None,
            thickness: int | None = None,
            interval: tuple[int, int] | None = None) -> np.ndarray:
    """Instance contours (and their numbers at the centroids) drawn over ``image``; with
    ``count``, ``"<count> cells"`` in the top-left corner (the total, for pictures that leave
    the report, e.g. predict's overlays), and with ``interval`` its range: ``"77 cells
    (74-80)"``. Contours are ``thickness`` px wide (default: 1 px
    per 400 px of the shorter side)."""
    out = to_rgb_uint8(image)
    if labels.shape != out.shape[:2]:
        raise ValueError(f"labels {labels.shape} and image {out.shape[:2]} differ in size")
    lab = labels.astype(np.int32)
    f, k = lab.astype(np.float32), np.ones((3, 3), np.uint8)
    # a cell pixel is on a contour where its 3x3 neighbourhood holds another label
    edge = ((cv2.dilate(f, k) != f) | (cv2.erode(f, k) != f)) & (lab > 0)
    thick = thickness or max(1, round(min(lab.shape) / 400))
    if thick > 1:
        edge = cv2.dilate(edge.astype(np.uint8), np.ones((thick, thick), np.uint8)) > 0
    out[edge] = color
    if numbers and lab.max() > 0:
        scale = max(0.3, min(lab.shape) / 800)
        for i, y, x in zip(*centroids(lab)):
            org = (int(x) - int(6 * scale), int(y) + int(5 * scale))
            cv2.putText(out, str(i), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                        max(1, int(2 * scale)) + 1, cv2.LINE_AA)
            cv2.putText(out, str(i), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (200, 0, 0),
                        max(1, int(2 * scale)), cv2.LINE_AA)
    if count is not None:
        text = f"{int(count)} cell" + ("" if int(count) == 1 else "s")
        draw_label(out, text + (f" ({interval[0]}-{interval[1]})" if interval else ""))
    return out


def draw_label(rgb: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a dark box in the top-left corner of ``rgb`` (in place), sized
    to the image (~1/30 of its shorter side) so that it reads at any resolution."""
    h, w = rgb.shape[:2]
    scale = max(0.35, min(h, w) / 900)
    thick = max(1, round(2 * scale))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = max(2, round(6 * scale))
    x1, y1 = min(w, tw + 3 * pad), min(h, th + base + 3 * pad)
    # darken rather than cover: the cells under the box stay visible
    rgb[pad // 2:y1, pad // 2:x1] = (rgb[pad // 2:y1, pad // 2:x1] * 0.3).astype(rgb.dtype)
    cv2.putText(rgb, text, (2 * pad, th + 2 * pad), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thick, cv2.LINE_AA)
    return rgb
