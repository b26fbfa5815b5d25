"""Choose post-processing parameters on images with known instances, after training.

How confident a network is at the borders between touching cells depends on how long and on
what it trained, so no fixed marker threshold suits every run (on the real benchmark one
network counted best at 0.7, another at 0.95). As StarDist's ``optimize_thresholds`` does,
the run scores a small grid of values on its own training (or validation) images, at native
resolution, and keeps the best; the test split is never looked at.

    >>> items = [TuningItem(name, outputs, native_labels), ...]   # network outputs (C, h, w)
    >>> result = search(ContourWatershed(), items, {"marker_threshold": [0.7, 0.9]})
    >>> result.best             # {"marker_threshold": 0.9}
    >>> result.postprocess      # ContourWatershed(marker_threshold=0.9, ...)

A grid search, not an optimiser: one or two parameters with a handful of values each, and
each try is only the post-processing (the network ran once per image).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bloodseg.labels import drop_cut_cells
from bloodseg.metrics import InstanceStats
from bloodseg.progress import Eta
from bloodseg.transforms import upsample

log = logging.getLogger(__name__)

METRICS = ("f1", "count_mae")


@dataclass
class TuningItem:
    """One image: the network's (C, h, w) outputs at any size, and its true instances."""

    name: str
    outputs: np.ndarray
    truth: np.ndarray


@dataclass
class TuningResult:
    """The chosen parameters, the post-processor built with them and every try's scores."""

    best: dict[str, Any]
    postprocess: Any
    metric: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, Any] = field(default_factory=dict)  # the values the search started from


def default_grid(postprocess: Any) -> dict[str, list]:
    """The post-processor's own grid (``tune_grid()``), or an error naming the fix."""
    if not hasattr(postprocess, "tune_grid"):
        raise TypeError(f"{type(postprocess).__name__} has no tune_grid(); pass a grid, "
                        "e.g. tune.grid={threshold:[0.4,0.5,0.6]}")
    return postprocess.tune_grid()


def _with_current(postprocess: Any, grid: dict[str, Sequence]) -> dict[str, list]:
    """The grid plus each parameter's current value, so tuning never loses to not tuning
    on the images it sees."""
    names = {f.name for f in dataclasses.fields(postprocess)}
    out = {}
    for key, values in grid.items():
        if key not in names:
            raise ValueError(f"{type(postprocess).__name__} has no parameter {key!r} to tune; "
                             f"it has {sorted(names)}")
        vals = list(values)
        current = getattr(postprocess, key)
        out[key] = vals if current in vals else sorted(vals + [current])
    return out


# Every post-processor drops frame-cut cells as its very last step (labels.drop_cut_cells),
# so one labelling per setting of the other parameters serves every cut-off tried.
LAST_STEP = "min_cut_area_frac"


def _labels(postprocess: Any, items: Sequence[TuningItem]) -> list[np.ndarray]:
    return [postprocess(upsample(np.asarray(item.outputs, np.float32), item.truth.shape))
            for item in items]


def _scores(items: Sequence[TuningItem], labels: Sequence[np.ndarray]) -> dict[str, float]:
    stats = InstanceStats()
    for item, lab in zip(items, labels):
        stats.update(item.name, item.truth, lab)
    agg = stats.aggregate()
    # the names of the logged test metrics (bloodseg.evaluation.LOGGED), minus "test/"
    return {"inst_f1": float(agg["f1"]), "inst_ap50": float(agg["ap50"]),
            "count_mae": float(agg["count_mae"]), "count_bias": float(agg["count_bias"])}


def score(postprocess: Any, items: Sequence[TuningItem]) -> dict[str, float]:
    """Micro F1 / AP at IoU 0.5 and count MAE / bias of ``postprocess`` on ``items``, with
    each image's outputs upsampled to its truth's size."""
    return _scores(items, _labels(postprocess, items))


def _rank(row: dict, metric: str) -> tuple:
    if metric == "f1":  # higher F1, then lower count error
        return (row["inst_f1"], -row["count_mae"])
    return (-row["count_mae"], row["inst_f1"])


def best_row(rows: Sequence[dict], metric: str) -> dict:
    """The best of :func:`search`'s ``rows`` by ``metric`` (``f1``: highest F1@0.5, ties to
    the lower count MAE; ``count_mae``: the reverse)."""
    return max(rows, key=lambda r: _rank(r, metric))


def search(postprocess: Any, items: Sequence[TuningItem], grid: dict[str, Sequence] | None = None,
           metric: str = "f1") -> TuningResult:
    """Try every combination of ``grid`` (default: the post-processor's ``tune_grid()``,
    always with the current values) on ``items``; keep the best by ``metric`` (``f1``:
    highest F1@0.5, ties to the lower count MAE; ``count_mae``: the reverse)."""
    if metric not in METRICS:
        raise ValueError(f"tuning metric must be one of {METRICS}, got {metric!r}")
    if not items:
        raise ValueError("no images to tune the post-processing on")
    grid = _with_current(postprocess, grid if grid else default_grid(postprocess))
    cuts = grid.pop(LAST_STEP, None)
    rows = []
    # about ten INFO lines with k/N and an ETA, whatever the grid's size; each try at DEBUG
    n_cuts = len(cuts) if cuts else 1
    eta = Eta(n_cuts * int(np.prod([len(v) for v in grid.values()])))
    log.info("tuning the post-processing on %d images: %d tries", len(items), eta.total)
    for values in itertools.product(*grid.values()):
        params = dict(zip(grid, values))
        raw = _labels(dataclasses.replace(postprocess, **params, **{LAST_STEP: 0.0}), items)
        for cut in cuts or [getattr(postprocess, LAST_STEP)]:
            tried = {**params, LAST_STEP: cut} if cuts else params
            row = {**tried, **_scores(items, [drop_cut_cells(lab, cut) for lab in raw])}
            rows.append(row)
            log.debug("tuning %s: F1 %.3f, count MAE %.2f", tried, row["inst_f1"],
                      row["count_mae"])
            if eta.due(len(rows)):
                best = best_row(rows, metric)
                log.info("tuning %s; best so far F1 %.3f, count MAE %.2f", eta.line(len(rows)),
                         best["inst_f1"], best["count_mae"])
    keys = [*grid, *([LAST_STEP] if cuts else [])]
    chosen = best_row(rows, metric)
    best = {k: chosen[k] for k in keys}
    return TuningResult(best=best, postprocess=dataclasses.replace(postprocess, **best),
                        metric=metric, rows=rows,
                        before={k: getattr(postprocess, k) for k in best})
