"""``target=contour``: three classes per pixel, background / cell interior / cell border.

A network that only learns "cell or not" merges touching cells; this target (DCAN style)
teaches it where one cell ends and the next begins. Its outputs are a softmax over the three
classes; confident interiors seed the watershed of ``postprocess=contour``
(:class:`bloodseg.postprocess.ContourWatershed`), so touching cells are seeded one by one.

    >>> classes = contour_target(inst, width=2)   # uint8 HxW: 0 bg, 1 interior, 2 border

The image edge is never a cell boundary: a cell cut by the edge of the image (or of a crop)
continues beyond it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import cv2
import numpy as np

from bloodseg.targets.base import Target, as_labels

if TYPE_CHECKING:  # torch loads only where a network runs (start-up)
    import torch

__all__ = ["CONTOUR_MODES", "Contour", "contour_target"]

CONTOUR_MODES = ("all", "touching")


@dataclass(frozen=True)
class Contour(Target):
    """Background / interior / border classes (softmax; trained with ``loss=contour``, CE +
    Dice). ``width``: border = the outer ``width`` px of a cell; ``mode``: ``all`` (every
    cell's rim) or ``touching`` (only where it faces another cell); see
    :func:`contour_target`."""

    name: ClassVar[str] = "contour"
    channels: ClassVar[int] = 3
    channel_names: ClassVar[tuple[str, ...]] = ("background", "interior", "border")

    width: int = 2
    mode: Literal[CONTOUR_MODES] = "all"  # the modes contour_target takes

    def encode(self, instances: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """``{"target": int64 HxW class indices}`` (what cross-entropy takes)."""
        classes = contour_target(instances, width=self.width, mode=self.mode)
        return {"target": classes.astype(np.int64)}

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax over the three classes."""
        import torch

        return torch.softmax(logits.float(), dim=1)

    def foreground(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, 1:2] + outputs[:, 2:3]  # interior + border


def contour_target(inst: np.ndarray, width: int = 2, mode: str = "all") -> np.ndarray:
    """Three-class map: 0 background, 1 cell interior, 2 cell border (uint8 HxW).

    Distances here are chessboard distances (a ``(2d+1) x (2d+1)`` square window), and only
    pixels inside the image count (the image edge is not a border).

    - ``mode="all"``: a pixel of cell ``k`` is border iff some pixel within ``width`` px of
      it is not ``k`` (background or another cell): the outer ``width`` px of every cell.
    - ``mode="touching"``: a pixel of cell ``k`` is border iff it is an ``"all"`` border pixel
      AND some pixel of another cell ``j`` (``j != k``, ``j > 0``) lies within
      ``2 * width + 1`` px of it. So where a neighbour shares the boundary or lies across a
      gap of at most ``width + 1`` px (BBBC041Seg gaps are 1-3 px), the whole rim is
      border; rim pixels further than ``2 * width + 1`` px from every other cell (the far
      sides of a cell, a lone cell) are interior.
    """
    lab = as_labels(inst)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if mode not in CONTOUR_MODES:
        raise ValueError(f"mode must be one of {CONTOUR_MODES}, got {mode!r}")
    out = (lab > 0).astype(np.uint8)
    if not out.any():
        return out
    work, big = _morph_labels(lab)
    fg = lab > 0
    # cv2 ignores pixels outside the image for erode/dilate (border value +-inf).
    rim = _window_max(work, width) != work
    rim |= _window_min(work, width) != work
    rim &= fg
    if mode == "touching":
        reach = 2 * width + 1
        others = _window_max(work, reach) != work  # a higher id nearby
        nobg = np.where(fg, work, work.dtype.type(big))
        others |= _window_min(nobg, reach) != work  # a lower nonzero id nearby
        rim &= others
    out[rim] = 2
    return out


def _morph_labels(lab: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels in a dtype cv2 can erode/dilate exactly, and a value above every id."""
    top = int(lab.max())
    if top < np.iinfo(np.uint16).max:
        return lab.astype(np.uint16), int(np.iinfo(np.uint16).max)
    if top < 2**24:  # float32 holds every integer up to 2^24 exactly
        return lab.astype(np.float32), 2**24
    raise ValueError(f"too many instances for contour_target: {top}")


def _window_max(img: np.ndarray, r: int) -> np.ndarray:
    """Maximum over the (2r+1)x(2r+1) window (pixels outside the image ignored)."""
    return cv2.dilate(img, np.ones((2 * r + 1, 2 * r + 1), np.uint8))


def _window_min(img: np.ndarray, r: int) -> np.ndarray:
    """Minimum over the (2r+1)x(2r+1) window (pixels outside the image ignored)."""
    return cv2.erode(img, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
