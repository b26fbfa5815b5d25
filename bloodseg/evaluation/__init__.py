"""The test and tuning stages: a model scored, or its post-processing chosen, on images with
known instances, through the one inference path (:class:`bloodseg.inference.Predictor`).

``train.py`` runs fit -> :func:`tune_stage` -> :func:`test_stage`; ``bloodseg-tune`` and
``bloodseg-evaluate`` run the same two functions on any model file, so a run's own
``test_metrics.json`` and ``bloodseg-evaluate`` of its checkpoint agree exactly, and so do the
label images of test scoring and ``bloodseg-predict``.

Scores are taken at each image's native resolution, against its native instances (exact labels
for synthetic data, connected components of the gap-separated masks for BBBC041Seg), and
logged as ``test/count_mae``, ``test/inst_f1``, ``test/inst_ap50``, ``test/dice``, ... (one
scheme: instance metrics are ``inst_*``; :data:`bloodseg.rundir.METRIC_ALIASES` reads the names
of older runs).

Also here: :mod:`bloodseg.evaluation.folds` (cross-validation folds of a data folder) and
:mod:`bloodseg.evaluation.baselines` (the Otsu baselines, scored).

    >>> predictor = Predictor.load("run/checkpoints/best.ckpt")
    >>> result = tune_stage(predictor, "data/BCCD Dataset with mask", {"metric": "f1"})
    >>> predictor = predictor.with_postprocess(tuned_postprocess(result))  # or postprocess.json
    >>> metrics = test_stage(predictor, list_split(root, "test"), out="run/")
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bloodseg import rundir, tuning
from bloodseg.config import to_plain
from bloodseg.data.bbbc041seg import Sample, list_split, read_native_instances
from bloodseg.inference import Predictor
from bloodseg.metrics import InstanceStats
from bloodseg.module import pixel_metrics
from bloodseg.progress import Eta
from bloodseg.spec import Postprocess

log = logging.getLogger(__name__)

#: InstanceStats.aggregate() key -> logged name (``test/<name>``, ``val/<name>_trainres``)
LOGGED = {
    "count_mae": "count_mae",
    "count_bias": "count_bias",
    "precision": "inst_precision",
    "recall": "inst_recall",
    "f1": "inst_f1",
    "ap50": "inst_ap50",  # InstanceStats' "ap" is the same number (AP at IoU 0.5)
    "ap75": "inst_ap75",
    "map": "inst_map",
    "mean_matched_iou": "inst_mean_iou",
    "pred_count_mean": "pred_count",
    "true_count_mean": "true_count",
}
TUNE_KEYS = ("split", "metric", "grid", "max_images")
TUNE_DEFAULTS = {"split": "train", "metric": "f1", "grid": None, "max_images": 50}


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
    if split not in ("train", "val"):
        raise ValueError(f"tune.split must be train or val, got {split!r}")
    samples = list_split(root, "train")
    if split == "val":
        from bloodseg.data.datamodule import BloodCellDataModule

        dm = BloodCellDataModule(root=str(root), val_fraction=val_fraction, seed=seed)
        samples = dm.split_train_val(samples)[1]
    return evenly_spaced(samples, max_images)


# -- test ------------------------------------------------------------------------------------


@dataclass
class Scored:
    """A model's scores on a set of images and what the report draws from them."""

    metrics: dict[str, float]
    stats: InstanceStats
    pictures: list[dict] = field(default_factory=list)


def score(predictor: Predictor, samples: Sequence[Sample], n_pictures: int = 4,
          prefix: str = "test/") -> Scored:
    """Every sample through ``predictor`` at native size, scored against its native
    instances: instance metrics (:data:`LOGGED`) and pixel metrics of the foreground."""
    stats = InstanceStats()
    pixels = pixel_metrics(prefix, sync_on_compute=False)  # rank 0 scores every image
    pictures = []
    eta = Eta(len(samples))
    for i, sample in enumerate(samples, 1):
        image = predictor.read(sample.image)
        truth = read_native_instances(sample)
        outputs = predictor.outputs(image, name=sample.name)
        labels = predictor.labels(outputs)
        prob = predictor.foreground(outputs)
        stats.update(sample.name, truth, labels)
        pixels.update(torch.from_numpy(np.ascontiguousarray(prob)).float(),
                      torch.from_numpy(truth > 0).int())
        if len(pictures) < n_pictures:
            pictures.append({"name": sample.name, "image": image,
                             "mask": (truth > 0).astype(np.uint8), "prob": prob,
                             "instances": labels, "truth": truth,
                             "true_count": int(len(np.unique(truth)) - 1)})
        row = stats.rows[-1]
        log.info("%s %s %s: %d cells (truth %d)", prefix.rstrip("/"), eta.line(i),
                 sample.name, row["pred_count"], row["true_count"])
    agg = stats.aggregate()
    metrics = {f"{prefix}{name}": float(agg[key]) for key, name in LOGGED.items() if key in agg}
    metrics.update({k: float(v) for k, v in pixels.compute().items()})
    metrics[f"{prefix}native_dice"] = metrics[f"{prefix}dice"]  # the report's older name
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
               weights: str | Path, data_info: dict | None = None, n_pictures: int = 4
               ) -> Scored:
    """Score ``samples`` and, with ``out``, write the run folder's test files."""
    if not samples:
        raise ValueError("no test images to score")
    names = ", ".join(Path(w).name for w in weights) if isinstance(weights, list) \
        else Path(weights).name  # a list: an ensemble
    log.info("testing %s on %d image(s) (%s, mode %s, tta %s)", names, len(samples),
             predictor.spec.postprocess.name, predictor.mode, predictor.tta_mode)
    scored = score(predictor, samples, n_pictures)
    if out is not None:
        info = {"n_test": len(samples), "tta_mode": predictor.tta_mode, "postprocess": {
            "name": predictor.spec.postprocess.name, **predictor.spec.postprocess.fields},
            **(data_info or {})}
        write_scored(out, scored, weights, predictor.tta, info, n_pictures)
    return scored


test_stage.__test__ = False  # a stage of bloodseg, not a pytest test, wherever it is imported


# -- tuning ----------------------------------------------------------------------------------


def tune_spec(tune: Any) -> dict | None:
    """The ``tune`` option with its defaults filled in (None: no tuning). Off: null, ``{}``,
    or a block whose ``split`` is null (``conf/train.yaml`` declares every key so that
    ``tune.max_images=4`` composes, with ``split: null``); its other keys are checked all the
    same, so a bad value fails before training."""
    tune = to_plain(tune)
    if not tune:
        return None
    if tune is True:
        tune = {}
    unknown = set(tune) - set(TUNE_KEYS)
    if unknown:
        raise ValueError(f"tune: unknown keys {sorted(unknown)}; it takes "
                         f"{', '.join(TUNE_KEYS)}")
    spec = {**TUNE_DEFAULTS, **tune}
    if spec["max_images"] is not None and int(spec["max_images"]) < 1:
        raise ValueError(f"tune.max_images must be >= 1 or null, got {spec['max_images']}")
    if spec["metric"] not in tuning.METRICS:
        raise ValueError(f"tune.metric must be one of {tuning.METRICS}, got {spec['metric']!r}")
    if spec["split"] is None:
        return None
    if spec["split"] not in ("train", "val"):
        raise ValueError(f"tune.split must be train or val, got {spec['split']!r}")
    return spec


def tuning_items(predictor: Predictor, samples: Sequence[Sample]) -> list[tuning.TuningItem]:
    """The network's outputs (float16, network size: 50 native 2-channel maps would take
    0.8 GB) and the native instances of every sample; each try upsamples them as
    :meth:`Predictor.outputs` does."""
    items = []
    eta = Eta(len(samples))
    for k, sample in enumerate(samples, 1):
        out = predictor.network_outputs(predictor.read(sample.image), name=sample.name)
        items.append(tuning.TuningItem(sample.name, out.astype(np.float16),
                                       read_native_instances(sample)))
        if eta.due(k):
            log.info("tuning: network outputs %s", eta.line(k))
    return items


def tune_stage(predictor: Predictor, samples: Sequence[Sample], spec: dict
               ) -> tuning.TuningResult:
    """Choose the post-processing's parameters on ``samples`` (:func:`bloodseg.tuning.search`
    over ``spec["grid"]`` or the post-processor's ``tune_grid()``)."""
    log.info("tuning %s on %d %s image(s) by %s", predictor.spec.postprocess.name,
             len(samples), spec["split"], spec["metric"])
    items = tuning_items(predictor, samples)
    result = tuning.search(predictor.postprocess, items, spec["grid"], spec["metric"])
    log.info("post-processing tuned on %d %s images (%s): %s (was %s)", len(items),
             spec["split"], spec["metric"], result.best, result.before)
    return result


def tuning_record(spec: dict, result: tuning.TuningResult, n_images: int, tta: str) -> dict:
    """What ``tuning.json`` and ``postprocess.json`` keep of a tuning; ``tta``: the test-time
    augmentation it was chosen under (averaged maps are smoother: their best marker threshold
    differs, so predict with the TTA you tuned with)."""
    return {**spec, "tta": tta, "n_images": n_images, "before": result.before,
            "chosen": result.best, "tried": result.rows}


def tuned_postprocess(result: tuning.TuningResult) -> Postprocess:
    return Postprocess.of(result.postprocess)
