"""Tuning: choose the post-processing's parameters on images with known instances.

Everything about tuning is here: the options (:class:`TuneOptions`, the ``tune`` block of a
config), the images it looks at (:func:`tuning_samples`: training images, never the test
split), the grid search (:func:`search`), the stage that runs a model's network once per image
and searches (:func:`tune_stage`, what ``train.py`` and ``bloodseg-tune`` run) and its record
(:func:`tuning_record`, kept in ``tuning.json`` and in ``postprocess.json`` beside the weights,
which :mod:`bloodseg.modelfile` writes and reads).

How confident a network is at the borders between touching cells depends on how long and on
what it trained, so no fixed marker threshold suits every run (on the real benchmark one
network counted best at 0.7, another at 0.95). As StarDist's ``optimize_thresholds`` does,
the run scores a small grid of values on its own training (or validation) images, at native
resolution, and keeps the best; the test split is never looked at.

    >>> items = [TuningItem(name, outputs, native_labels), ...]   # network outputs (C, h, w)
    >>> result = search(ContourWatershed(), items, {"marker_threshold": [0.7, 0.9]})
    >>> result.best             # {"marker_threshold": 0.9}
    >>> result.postprocess      # ContourWatershed(marker_threshold=0.9, ...)

    >>> options = TuneOptions(metric="f1")
    >>> result = tune_stage(predictor, tuning_samples(root, "train"), options)

A grid search, not an optimiser: one or two parameters with a handful of values each, and
each try is only the post-processing (the network ran once per image).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bloodseg.data.bbbc041seg import Sample, list_split, read_native_instances
from bloodseg.io import DataError
from bloodseg.labels import drop_cut_cells
from bloodseg.metrics import InstanceStats
from bloodseg.options import OptionError
from bloodseg.progress import Eta
from bloodseg.transforms import upsample

if TYPE_CHECKING:  # the stage only calls a Predictor: importing it would pull in torch
    from bloodseg.inference import Predictor
    from bloodseg.spec import Postprocess

log = logging.getLogger(__name__)

METRICS = ("f1", "count_mae")
#: each try's scores in ``tuning.json``: InstanceStats' names, as the test metrics are logged
SCORES = ("f1", "ap50", "count_mae", "count_bias")
SPLITS = ("train", "val")
KEYS = ("split", "metric", "grid", "max_images")


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
            raise OptionError(f"{type(postprocess).__name__} has no parameter {key!r} to tune; "
                             f"it has {sorted(names)}")
        vals = list(values)
        current = getattr(postprocess, key)
        out[key] = vals if current in vals else sorted(vals + [current])
    return out


# Every post-processor drops frame-cut cells as its very last step (labels.drop_cut_cells),
# so one labelling per setting of the other parameters serves every cut-off tried.
LAST_STEP = "cut_cell_frac"


def _labels(postprocess: Any, items: Sequence[TuningItem]) -> list[np.ndarray]:
    return [postprocess(upsample(np.asarray(item.outputs, np.float32), item.truth.shape))
            for item in items]


def _scores(items: Sequence[TuningItem], labels: Sequence[np.ndarray]) -> dict[str, float]:
    stats = InstanceStats()
    for item, lab in zip(items, labels):
        stats.update(item.name, item.truth, lab)
    agg = stats.aggregate()
    return {k: float(agg[k]) for k in SCORES}


def score(postprocess: Any, items: Sequence[TuningItem]) -> dict[str, float]:
    """Micro F1 / AP at IoU 0.5 and count MAE / bias of ``postprocess`` on ``items``, with
    each image's outputs upsampled to its truth's size."""
    return _scores(items, _labels(postprocess, items))


def _rank(row: dict, metric: str) -> tuple:
    if metric == "f1":  # higher F1, then lower count error
        return (row["f1"], -row["count_mae"])
    return (-row["count_mae"], row["f1"])


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
        raise OptionError(f"tuning metric must be one of {METRICS}, got {metric!r}")
    if not items:
        raise DataError("no images to tune the post-processing on")
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
            log.debug("tuning %s: F1 %.3f, count MAE %.2f", tried, row["f1"],
                      row["count_mae"])
            if eta.due(len(rows)):
                best = best_row(rows, metric)
                log.info("tuning %s; best so far F1 %.3f, count MAE %.2f", eta.line(len(rows)),
                         best["f1"], best["count_mae"])
    keys = [*grid, *([LAST_STEP] if cuts else [])]
    chosen = best_row(rows, metric)
    best = {k: chosen[k] for k in keys}
    return TuningResult(best=best, postprocess=dataclasses.replace(postprocess, **best),
                        metric=metric, rows=rows,
                        before={k: getattr(postprocess, k) for k in best})


@dataclass(frozen=True)
class TuneOptions:
    """What the tuning stage does (the ``tune`` block of a config): which images
    (``split``: ``train`` = train + val, or the seeded ``val`` split), the ranking
    (``metric``: :data:`METRICS`), the values tried (``grid``; None = the post-processor's
    ``tune_grid()``) and at most how many images (``max_images``; None = all)."""

    split: str = "train"  # a config's null split means: no tuning (from_config)
    metric: str = "f1"
    grid: dict[str, list] | None = None
    max_images: int | None = 50

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise OptionError(f"tune.split must be one of {', '.join(SPLITS)}, got "
                             f"{self.split!r}")
        if self.metric not in METRICS:
            raise OptionError(f"tune.metric must be one of {', '.join(METRICS)}, got "
                             f"{self.metric!r}")
        if self.max_images is not None and (isinstance(self.max_images, bool) or
                                            not isinstance(self.max_images, int) or
                                            self.max_images < 1):
            raise OptionError(f"tune.max_images must be an integer >= 1 or null, got "
                             f"{self.max_images!r}")
        if self.grid is not None and not isinstance(self.grid, dict):
            raise OptionError(f"tune.grid must be a mapping like {{threshold: [0.4, 0.5]}}, "
                             f"got {self.grid!r}")

    @classmethod
    def from_config(cls, tune: Any) -> TuneOptions | None:
        """The ``tune`` block of a config (None / false / {}: no tuning; true: the defaults;
        a mapping of the fields above). ``conf/train.yaml`` declares every key, so that
        ``tune.max_images=4`` composes, with ``split: null``: off. The other keys are
        checked all the same, so a bad value fails before training."""
        from bloodseg.config import to_plain

        tune = to_plain(tune)
        if not tune:
            return None
        if tune is True:
            tune = {}
        if not isinstance(tune, dict):
            raise OptionError(f"tune must be a mapping of {', '.join(KEYS)}, got {tune!r}")
        unknown = set(tune) - set(KEYS)
        if unknown:
            raise OptionError(f"tune: unknown keys {sorted(unknown)}; it takes "
                             f"{', '.join(KEYS)}")
        if "split" in tune and tune["split"] is None:
            cls(**{**tune, "split": "train"})  # checks the rest
            return None
        return cls(**tune)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- samples ---------------------------------------------------------------------------------


def evenly_spaced(samples: Sequence[Sample], max_images: int | None) -> list[Sample]:
    """At most ``max_images`` samples, evenly spaced in name order (the full Kaggle train
    split is 1169 images; tuning needs a few dozen)."""
    samples = list(samples)
    if max_images is None or len(samples) <= max_images:
        return samples
    picks = np.unique(np.linspace(0, len(samples) - 1, int(max_images)).round())
    return [samples[int(i)] for i in picks]


def tuning_samples(root: str | Path, split: str = "train", max_images: int | None = 50,
                   val_fraction: float = 0.1, seed: int = 42) -> list[Sample]:
    """The images tuning looks at: the training split (``train``: train + val) or the seeded
    validation split (``val``, drawn as the DataModule draws it); never the test split."""
    if split not in SPLITS:
        raise OptionError(f"tune.split must be one of {', '.join(SPLITS)}, got {split!r}")
    samples = list_split(root, "train")
    if split == "val":
        from bloodseg.data.datamodule import BloodCellDataModule

        dm = BloodCellDataModule(root=str(root), val_fraction=val_fraction, seed=seed)
        samples = dm.split_train_val(samples)[1]
    return evenly_spaced(samples, max_images)


# -- the stage ----------------------------------------------------------------------------------




def tuning_items(predictor: Predictor, samples: Sequence[Sample]) -> list[TuningItem]:
    """The network's outputs (float16, network size: 50 native 2-channel maps would take
    0.8 GB) and the native instances of every sample; each try upsamples them as
    :meth:`Predictor.outputs` does."""
    items = []
    eta = Eta(len(samples))
    for k, sample in enumerate(samples, 1):
        out = predictor.network_outputs(predictor.read(sample.image), name=sample.name)
        items.append(TuningItem(sample.name, out.astype(np.float16),
                                       read_native_instances(sample)))
        if eta.due(k):
            log.info("tuning: network outputs %s", eta.line(k))
    return items


def tune_stage(predictor: Predictor, samples: Sequence[Sample], options: TuneOptions
               ) -> TuningResult:
    """Choose the post-processing's parameters on ``samples`` (:func:`search` over
    ``options.grid`` or the post-processor's ``tune_grid()``)."""
    log.info("tuning %s on %d %s image(s) by %s", predictor.spec.postprocess.name,
             len(samples), options.split, options.metric)
    items = tuning_items(predictor, samples)
    result = search(predictor.postprocess, items, options.grid, options.metric)
    log.info("post-processing tuned on %d %s images (%s): %s (was %s)", len(items),
             options.split, options.metric, result.best, result.before)
    return result


def tuning_record(options: TuneOptions, result: TuningResult, n_images: int, tta: str
                  ) -> dict:
    """What ``tuning.json`` and ``postprocess.json`` keep of a tuning; ``tta``: the test-time
    augmentation it was chosen under (averaged maps are smoother: their best marker threshold
    differs, so predict with the TTA you tuned with)."""
    return {**options.to_dict(), "tta": tta, "n_images": n_images, "before": result.before,
            "chosen": result.best, "tried": result.rows}


def tuned_postprocess(result: TuningResult) -> Postprocess:
    """The chosen post-processing as a spec entry (what ``postprocess.json`` stores)."""
    from bloodseg.spec import Postprocess

    return Postprocess.of(result.postprocess)
