"""``target=distance``: the foreground and each cell's distance to its own boundary.

Two channels (DIST / StarDist ``edt_prob`` style): a sigmoid foreground and the per-cell
Euclidean distance to the cell's own boundary, scaled to [0, 1] per cell, so every cell
peaks at 1.0 at its centre whatever its size. Thresholded distance cores seed the watershed
of ``postprocess=distance`` (:class:`bloodseg.postprocess.DistanceWatershed`).

    >>> dist = distance_target(inst)   # float32 HxW: 0 bg, 1 at each cell's centre

The image edge is never a cell boundary (edge padding, as StarDist's ``edt_prob``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import cv2
import numpy as np

from bloodseg.targets.base import Target, as_labels, boxes

if TYPE_CHECKING:  # torch loads only where a network runs (start-up)
    import torch

__all__ = ["Distance", "distance_target"]


@dataclass(frozen=True)
class Distance(Target):
    """(foreground, normalised distance), both sigmoid; trained with ``loss=distance`` (BCE on
    the foreground + L1 on the distance inside cells)."""

    name: ClassVar[str] = "distance"
    channels: ClassVar[int] = 2
    channel_names: ClassVar[tuple[str, ...]] = ("foreground", "distance")

    def encode(self, instances: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """``{"target": float32 2xHxW}``: the gap-drawn mask and :func:`distance_target`."""
        both = np.stack([mask.astype(np.float32), distance_target(instances).astype(np.float32)])
        return {"target": both}

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid of each channel."""
        import torch

        return torch.sigmoid(logits.float())

    def foreground(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, :1]


def distance_target(inst: np.ndarray) -> np.ndarray:
    """Per-cell Euclidean distance to the cell's own boundary, scaled to [0, 1] per cell.

    For a pixel of cell ``k``: the distance (between pixel centres) to the nearest pixel that
    is not ``k``, divided by the largest such distance in ``k``; so every cell peaks at
    exactly 1.0 at its centre, whatever its size, and a pixel next to a neighbour or to
    background gets ``1 / max``. 0 on background. The image edge is not a boundary; a cell
    that fills the whole image is 1.0 everywhere; a cell in several pieces (e.g. cut by a
    crop) is scaled by its thickest piece. float32 HxW.
    """
    lab = as_labels(inst)
    out = np.zeros(lab.shape, np.float32)
    for k, box in boxes(lab, pad=1):
        m = (lab[box] == k).view(np.uint8)
        # exact EDT; outside the image counts as "not a zero pixel", i.e. not a boundary
        d = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        top = float(d.max())
        if top > 1e18:  # no pixel of the box is outside the cell: no boundary at all
            d[:] = 1.0
            top = 1.0
        sub = out[box]
        sub[m.view(bool)] = d[m.view(bool)] / top
    return out
