"""Probability maps / masks -> counted cell instances.

``watershed.py``: :class:`Watershed`, the distance-transform watershed for a foreground map.
``markers.py``: :class:`ContourWatershed`, :class:`DistanceWatershed` and
:class:`DistanceContourWatershed`, marker-controlled watersheds for networks trained on
``bloodseg.targets`` (contour classes / distances / distances with a border head).
``baselines.py``: the classical Otsu foreground it is compared against.

    >>> from bloodseg.postprocess import Watershed, otsu_foreground
    >>> labels = Watershed()(prob)               # HxW float in [0, 1] -> int32 0..N
    >>> labels = ContourWatershed()(outputs)     # (3, H, W) softmax -> int32 0..N

Hydra: ``conf/postprocess/<name>.yaml``, named after the target whose outputs each reads:
``binary`` (:class:`Watershed`; called ``watershed`` before), ``contour``, ``distance``,
``distance_contour``.
"""

from bloodseg.postprocess.baselines import fill_holes, otsu_foreground
from bloodseg.postprocess.markers import (
    ContourWatershed,
    DistanceContourWatershed,
    DistanceWatershed,
)
from bloodseg.postprocess.watershed import Watershed

__all__ = ["ContourWatershed", "DistanceContourWatershed", "DistanceWatershed", "Watershed",
           "fill_holes", "otsu_foreground"]
