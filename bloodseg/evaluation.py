"""The test stage: a model scored on images with known instances, through the one inference
path (:class:`bloodseg.inference.Predictor`).

``train.py`` runs fit -> tune (:mod:`bloodseg.tuning`) -> :func:`test_stage`;
``bloodseg-evaluate`` runs the same function on any model file, so a run's own
``test_metrics.json`` and ``bloodseg-evaluate`` of its checkpoint agree exactly, and so do the
label images of test scoring and ``bloodseg-predict``.

Scores are taken at each image's native resolution, against its native instances (exact labels
for synthetic data, connected components of the gap-separated masks for BBBC041Seg), and
logged as ``test/<name>``: ``test/interval_coverage`` and ``test/interval_width`` (the share
of images whose true count lies in the model's calibrated interval, and its mean width, when
the model carries one: :mod:`bloodseg.trust`), the names of
:meth:`bloodseg.metrics.InstanceStats.aggregate`
(``test/count_mae``, ``test/f1``, ``test/ap50``, ``test/map``, ...) and of the pixel metrics
(:func:`bloodseg.module.pixel_metrics`: ``test/dice``, ``test/iou``, ``test/pixel_precision``,
...).

    >>> predictor = Predictor.load("run/checkpoints/best.ckpt")   # + its postprocess.json
    >>> scored = test_stage(predictor, list_split(root, "test"), "run/", "best.ckpt")
    >>> scored.metrics["test/f1"]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bloodseg import rundir
from bloodseg.data.bbbc041seg import Sample, read_native_instances
from bloodseg.inference import Predictor
from bloodseg.metrics import InstanceStats
from bloodseg.module import pixel_metrics
from bloodseg.progress import Eta
from bloodseg.render import overlay
from bloodseg.trust import calibration_of

log = logging.getLogger(__name__)


# -- test ------------------------------------------------------------------------------------


@dataclass
class Scored:
    """A model's scores on a set of images and what the report draws from them."""

    metrics: dict[str, float]
    stats: InstanceStats
    pictures: list[dict] = field(default_factory=list)


def score(predictor: Predictor, samples: Sequence[Sample], n_pictures: int = 4,
          prefix: str = "test/", boxes: dict | None = None) -> Scored:
    """Every sample through ``predictor`` at native size, scored against its native
    instances: instance metrics (:meth:`InstanceStats.aggregate`) and pixel metrics of the
    foreground, each named ``<prefix><name>``; with ``boxes``, box agreement too."""
    stats = InstanceStats(boxes=boxes)
    calibration = calibration_of(predictor)
    pixels = pixel_metrics(prefix, sync_on_compute=False)  # rank 0 scores every image
    pictures = []
    eta = Eta(len(samples))
    for i, sample in enumerate(samples, 1):
        image = predictor.read(sample.image)
        truth = read_native_instances(sample)
        outputs, labels = predictor.predict(image, name=sample.name)
        prob = predictor.foreground(outputs)
        stats.update(sample.name, truth, labels)
        if calibration is not None:  # does the model's calibrated interval hold here?
            _, (low, high), _ = calibration.judge(predictor, image, outputs, labels)
            stats.rows[-1].update({"count_low": low, "count_high": high,
                                   "in_interval": int(low <= stats.rows[-1]["true_count"]
                                                      <= high)})
        pixels.update(torch.from_numpy(np.ascontiguousarray(prob)).float(),
                      torch.from_numpy(truth > 0).int())
        if len(pictures) < n_pictures:
            pictures.append({"name": sample.name, "image": image,
                             "mask": (truth > 0).astype(np.uint8), "prob": prob,
                             "instances": labels, "truth": truth,
                             "overlay": overlay(image, labels, count=int(labels.max())),
                             "true_count": int(len(np.unique(truth)) - 1)})
        row = stats.rows[-1]
        log.info("%s %s %s: %d cells (truth %d)", prefix.rstrip("/"), eta.line(i),
                 sample.name, row["pred_count"], row["true_count"])
    metrics = {f"{prefix}{k}": float(v) for k, v in stats.aggregate().items()}
    if calibration is not None:
        rows = stats.rows
        metrics[f"{prefix}interval_coverage"] = float(np.mean([r["in_interval"] for r in rows]))
        metrics[f"{prefix}interval_width"] = float(np.mean([r["count_high"] - r["count_low"]
                                                            for r in rows]))
    metrics.update({k: float(v) for k, v in pixels.compute().items()})
    return Scored(metrics, stats, pictures)


def write_scored(out: str | Path, scored: Scored, weights: str | Path, tta: bool,
                 data_info: dict, n_pictures: int = 4, hist_bins: int = 30) -> None:
    """The test files of a run folder (:mod:`bloodseg.rundir`)."""
    stats = scored.stats
    rundir.write_per_image(out, stats.rows)
    rundir.write_size_hist(out, np.concatenate(stats.areas or [np.zeros(0)]),
                           np.concatenate(stats.true_areas or [np.zeros(0)]), hist_bins)
    rundir.write_samples(out, scored.pictures[:n_pictures])
    rundir.write_test_metrics(out, scored.metrics, weights, tta, data_info)


def test_stage(predictor: Predictor, samples: Sequence[Sample], out: str | Path | None,
               weights: str | Path, data_info: dict | None = None, n_pictures: int = 4,
               boxes: dict | None = None) -> Scored:
    """Score ``samples`` and, with ``out``, write the run folder's test files."""
    if not samples:
        raise ValueError("no test images to score")
    names = ", ".join(Path(w).name for w in weights) if isinstance(weights, list) \
        else Path(weights).name  # a list: an ensemble
    log.info("testing %s on %d image(s) (%s, mode %s, tta %s)", names, len(samples),
             predictor.spec.postprocess.name, predictor.mode, predictor.tta_mode)
    scored = score(predictor, samples, n_pictures, boxes=boxes)
    if out is not None:
        info = {"n_test": len(samples), "tta_mode": predictor.tta_mode, "postprocess": {
            "name": predictor.spec.postprocess.name, **predictor.spec.postprocess.fields},
            **(data_info or {})}
        write_scored(out, scored, weights, predictor.tta, info, n_pictures)
    return scored


test_stage.__test__ = False  # a stage of bloodseg, not a pytest test, wherever it is imported
