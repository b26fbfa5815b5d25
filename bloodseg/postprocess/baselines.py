"""Classical baselines: Otsu foreground (then connected components or the watershed).

    >>> fg = otsu_foreground(image_rgb)          # HxW uint8 {0,1}
    >>> labels = Watershed()(fg)                 # Otsu + bloodseg watershed
    >>> labels = instances_from_mask(fg)         # Otsu + connected components
    >>> labels = skimage_reference(0.4, 0.3)(fg) # scikit-image's textbook watershed

Scored (every image of a folder, tuned on training images): :mod:`bloodseg.baselines`;
the numbers on real data: ``benchmarks/otsu_baseline.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import remove_small_objects

__all__ = ["fill_holes", "otsu_foreground", "skimage_reference"]


def otsu_foreground(
    image: np.ndarray,
    blur_frac: float = 0.0015,
    open_frac: float = 0.004,
    max_hole_frac: float = 0.01,
) -> np.ndarray:
    """Classical baseline foreground: gray -> Gaussian blur -> Otsu -> open -> fill holes.

    Red cells are darker than the background in gray in both BBBC041 (blue-gray cells on
    a near-white field) and BCCD (pink cells, gray ~168 vs background ~205), so the
    darker Otsu class is foreground. Sizes scale with the image: ``blur_frac`` and
    ``open_frac`` are fractions of min(H, W) (sigma 1.8 px and a 5 px disc at
    1600x1200). Holes smaller than ``max_hole_frac`` of the image (the pale centres of
    red cells) are filled; larger enclosed background stays background.

    ``image``: HxWx3 RGB uint8 (or HxW gray). Returns HxW uint8 {0, 1}.
    """
    image = np.asarray(image)
    if image.ndim == 3:
        gray = cv2.cvtColor(image[:, :, :3], cv2.COLOR_RGB2GRAY)
    else:
        gray = image
    if gray.dtype != np.uint8:
        gray = cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    side = min(gray.shape)
    sigma = max(0.5, blur_frac * side)
    gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    _, fg = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    k = max(3, int(round(open_frac * side)) | 1)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return fill_holes(fg, int(max_hole_frac * gray.size))


def fill_holes(mask: np.ndarray, max_area: int | None = None) -> np.ndarray:
    """Fill background regions not connected to the image border (optionally only those of
    at most ``max_area`` px, 4-connected). uint8 {0,1} in and out."""
    mask = np.asarray(mask) > 0
    holes = ndi.binary_fill_holes(mask) & ~mask
    if max_area is not None:
        holes &= ~remove_small_objects(holes, max_size=max_area, connectivity=1)
    return (mask | holes).astype(np.uint8)


def skimage_reference(min_distance_frac: float, min_area_frac: float) -> Callable:
    """The textbook scikit-image recipe, given the same scale rules as bloodseg."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    def run(mask: np.ndarray) -> np.ndarray:
        mask = mask > 0
        cc, n = ndi.label(mask, structure=np.ones((3, 3)))
        if n == 0:
            return np.zeros(mask.shape, np.int32)
        dist = ndi.distance_transform_edt(mask)
        # Per-component max over bounding boxes (ndi.maximum is ~50x slower here).
        boxes = ndi.find_objects(cc)
        radius = float(np.median([dist[b][cc[b] == i].max() for i, b in enumerate(boxes, 1)]))
        k = max(1, int(round(min_distance_frac * radius)))
        peaks = peak_local_max(dist, min_distance=k, labels=cc, exclude_border=False)
        markers = np.zeros(mask.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        labels = watershed(-dist, markers, mask=mask)
        areas = np.bincount(labels.ravel())
        keep = areas > max(16, int(min_area_frac * np.pi * radius**2))
        keep[0] = False
        lut = np.zeros(areas.size, np.int32)
        lut[keep] = np.arange(1, int(keep.sum()) + 1)
        return lut[labels]

    return run
