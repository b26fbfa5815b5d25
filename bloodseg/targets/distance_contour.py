"""``target=distance_contour``: the distance target plus a border channel, learned jointly.

Three sigmoid channels: the foreground and normalised per-cell distance of
``target=distance``, and the border (DCAN's contour head): the rim pixels of
:func:`~bloodseg.targets.contour.contour_target`, by default only where a cell faces
another one. The border head gives the network a second, sharper lesson about exactly the
pixels that separate touching cells; ``postprocess=distance_contour``
(:class:`bloodseg.postprocess.DistanceContourWatershed`) subtracts it from the distance, so
a predicted border also cuts a bridge between two cores.

    >>> t = DistanceContour()                      # width 2, mode "touching"
    >>> t.encode(inst, mask)["target"].shape       # (3, H, W) float32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from bloodseg.targets.contour import CONTOUR_MODES, contour_target
from bloodseg.targets.distance import Distance

__all__ = ["DistanceContour"]


@dataclass(frozen=True)
class DistanceContour(Distance):
    """(foreground, normalised distance, border), all sigmoid; trained with
    ``loss=distance_contour`` (the distance loss + BCE and Dice on the border).
    ``width`` and ``mode`` say which pixels are border, as for ``target=contour``."""

    name: ClassVar[str] = "distance_contour"
    channels: ClassVar[int] = 3
    channel_names: ClassVar[tuple[str, ...]] = ("foreground", "distance", "border")

    width: int = 2
    mode: Literal[CONTOUR_MODES] = "touching"

    def encode(self, instances: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """``{"target": float32 3xHxW}``: the distance target's two maps and the border."""
        border = contour_target(instances, width=self.width, mode=self.mode) == 2
        both = super().encode(instances, mask)["target"]
        return {"target": np.concatenate([both, border[None].astype(np.float32)])}
