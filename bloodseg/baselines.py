"""The classical baselines, scored: Otsu foreground, then connected components, bloodseg's
watershed, or the watershed with its parameters tuned on training images.

The one scorer of the reference rows the networks are compared with: ``bloodseg-report
--baselines``, ``benchmarks/otsu_baseline.py`` and ``bloodseg-cv`` (``bloodseg.cv``) all call it, so
the three report the same numbers for the same images. The per-image algorithms are in
:mod:`bloodseg.postprocess.baselines`; everything here is at each image's native size,
against its native instances (:func:`bloodseg.data.bbbc041seg.read_native_instances`).

    >>> items = otsu_items(list_split(root, "test"))               # Otsu once per image
    >>> scores = score_otsu(items, Watershed(cut_cell_frac=0.4))
    >>> scores.stats[OTSU_WATERSHED].aggregate()["f1"], scores.pooled_dice
    >>> tuned, result = score_tuned(items, otsu_items(list_split(root, "train")), base)

The report imports this module only when asked for baseline rows (``--baselines``): the
package around it runs models, and the report alone must run without torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bloodseg.data.bbbc041seg import Sample, read_native_instances
from bloodseg.io import read_image, read_mask
from bloodseg.labels import instances_from_mask
from bloodseg.metrics import InstanceStats
from bloodseg.postprocess import Watershed, otsu_foreground
from bloodseg.tuning import TuningItem, TuningResult, search

__all__ = ["METHODS", "OTSU_CC", "OTSU_TUNED", "OTSU_WATERSHED", "OtsuScores", "otsu_items",
           "pooled_dice", "score_otsu", "score_tuned"]

OTSU_CC = "otsu+cc"
OTSU_WATERSHED = "otsu+watershed"
OTSU_TUNED = "otsu+watershed-tuned"
METHODS = (OTSU_CC, OTSU_WATERSHED, OTSU_TUNED)


@dataclass
class OtsuItem(TuningItem):
    """One image's Otsu foreground (``outputs[0]``, float32 {0, 1}: what tuning searches on)
    and native instances (``truth``), its size, the Otsu time and the pixel Dice terms
    against its mask file (``mask_inter``, ``mask_total``)."""

    width: int = 0
    height: int = 0
    otsu_s: float = 0.0
    mask_inter: int = 0
    mask_total: int = 0

    @property
    def foreground(self) -> np.ndarray:
        return self.outputs[0] > 0

    def dice_terms(self) -> tuple[int, int]:
        """(|A ∩ B|, |A| + |B|) of the Otsu foreground A and the instances' foreground B
        (the mask without specks under the minimum cell area)."""
        fg, truth = self.foreground, self.truth > 0
        return int((fg & truth).sum()), int(fg.sum() + truth.sum())


def otsu_items(samples: Sequence[Sample],
               on_item: Callable[[OtsuItem], None] | None = None) -> list[OtsuItem]:
    """Every sample's Otsu foreground and native instances (Otsu timed alone)."""
    items = []
    for sample in samples:
        image = read_image(sample.image)
        t0 = time.perf_counter()
        fg = otsu_foreground(image)
        otsu_s = time.perf_counter() - t0
        mask = read_mask(sample.mask)
        item = OtsuItem(sample.name, fg[None].astype(np.float32), read_native_instances(sample),
                        width=image.shape[1], height=image.shape[0], otsu_s=otsu_s,
                        mask_inter=int((fg & mask).sum()), mask_total=int(fg.sum() + mask.sum()))
        items.append(item)
        if on_item is not None:
            on_item(item)
    return items


def pooled_dice(items: Sequence[OtsuItem]) -> float:
    """2 |A ∩ B| / (|A| + |B|) over all pixels of all images (1 when both are empty)."""
    terms = [it.dice_terms() for it in items]
    inter, total = sum(t[0] for t in terms), sum(t[1] for t in terms)
    return 2 * inter / total if total else 1.0


@dataclass
class OtsuScores:
    """Per-method instance stats (:data:`OTSU_CC`, :data:`OTSU_WATERSHED`) and one row per
    image: ``file``, ``width``, ``height``, ``dice``, ``inter`` / ``total`` (Dice's terms, for
    pooling), ``otsu_ms``, ``watershed_ms`` and, under ``methods``, each method's
    :meth:`InstanceStats.update` row (counts, TP/FP/FN, F1, AP...)."""

    stats: dict[str, InstanceStats] = field(
        default_factory=lambda: {m: InstanceStats() for m in (OTSU_CC, OTSU_WATERSHED)})
    rows: list[dict] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        return float(np.mean([r["dice"] for r in self.rows])) if self.rows else float("nan")

    @property
    def pooled_dice(self) -> float:
        inter, total = sum(r["inter"] for r in self.rows), sum(r["total"] for r in self.rows)
        return 2 * inter / total if total else 1.0


def score_otsu(items: Sequence[OtsuItem], watershed: Watershed | None = None,
               on_row: Callable[[dict], None] | None = None,
               boxes: dict | None = None) -> OtsuScores:
    """Otsu + connected components and Otsu + ``watershed`` (default: its defaults); pixel
    Dice against the mask files; with ``boxes``, box agreement too."""
    ws = watershed or Watershed()
    scores = OtsuScores()
    if boxes is not None:
        scores.stats = {m: InstanceStats(boxes=boxes) for m in scores.stats}
    for it in items:
        fg = it.foreground.astype(np.uint8)
        t0 = time.perf_counter()
        labels = ws(fg)
        ws_s = time.perf_counter() - t0
        inter, total = it.mask_inter, it.mask_total
        predicted = {OTSU_CC: instances_from_mask(fg), OTSU_WATERSHED: labels}
        row = {"file": it.name, "width": it.width, "height": it.height,
               "dice": 2 * inter / total if total else 1.0, "inter": inter, "total": total,
               "otsu_ms": it.otsu_s * 1000, "watershed_ms": ws_s * 1000,
               "methods": {m: scores.stats[m].update(it.name, it.truth, predicted[m])
                           for m in predicted}}
        scores.rows.append(row)
        if on_row is not None:
            on_row(row)
    return scores


def score_tuned(test: Sequence[OtsuItem], train: Sequence[OtsuItem],
                watershed: Watershed | None = None, boxes: dict | None = None
                ) -> tuple[InstanceStats, TuningResult]:
    """Otsu + ``watershed`` with its own tuning grid (split depth; the frame-cut cut-off
    where ``watershed`` has one) chosen on ``train`` (:func:`bloodseg.tuning.search`, as
    runs with ``tune`` choose theirs), scored on ``test``."""
    result = search(watershed or Watershed(), list(train))
    stats = InstanceStats(boxes=boxes)
    for it in test:
        stats.update(it.name, it.truth, result.postprocess(it.outputs[0]))
    return stats, result
