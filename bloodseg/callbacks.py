"""Lightning callbacks: ``WatershedCallback`` (cells, counts and instance quality from every
evaluated batch) and ``RNGState`` (resumable random state).

On validation and test batches it turns the module's probabilities into
instances (:class:`bloodseg.postprocess.Watershed`) and compares them with the true
instances the batch carries (exact labels for synthetic data, connected components of the
gap-separated masks for BBBC041Seg). Per epoch it logs, under ``val/`` or ``test/``:
``count_mae``, ``count_bias``, ``inst_precision``, ``inst_recall``, ``inst_f1``,
``inst_ap`` (TP/(TP+FP+FN) at IoU >= 0.5), ``mean_matched_iou``, ``pred_count`` and
``true_count``, so they land in ``metrics.csv`` and W&B next to the pixel metrics. After
testing it writes ``per_image.csv``, ``size_hist.csv`` and ``samples/`` (the first
``n_samples`` test images with truth, probability and instances, for the report), and
sends a size histogram and overlays to W&B when a W&B logger is attached.

With ``tune`` it first chooses the post-processing's parameters on the run's own training
(or validation) images, scored at native resolution (:mod:`bloodseg.tuning`), tests with
them, writes ``tuning.json`` and stores them in the tested checkpoint when the run wrote it,
so ``bloodseg-evaluate`` and ``bloodseg-predict`` use them too.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from bloodseg import rundir, tuning
from bloodseg.checkpoint import update_hparams
from bloodseg.config import to_plain
from bloodseg.metrics import InstanceStats
from bloodseg.module import foreground
from bloodseg.postprocess import Watershed
from bloodseg.render import overlay
from bloodseg.transforms import denormalize, upsample

log = logging.getLogger(__name__)

LOGGED = {
    "count_mae": "count_mae",
    "count_bias": "count_bias",
    "precision": "inst_precision",
    "recall": "inst_recall",
    "f1": "inst_f1",
    "ap": "inst_ap",
    "mean_matched_iou": "mean_matched_iou",
    "pred_count_mean": "pred_count",
    "true_count_mean": "true_count",
    "ap50": "ap50",
    "ap75": "ap75",
    "map": "map",
    "native_dice": "native_dice",
}


def build_postprocess(postprocess: Any) -> Any:
    """A post-processor from its config (already built ones pass through: Hydra would turn a
    dataclass instance back into a config)."""
    if postprocess is None:
        return Watershed()
    if callable(postprocess):
        return postprocess
    return instantiate(postprocess)


def _tune_spec(tune: Any) -> dict | None:
    """The ``tune`` option with its defaults filled in (None: no tuning)."""
    tune = to_plain(tune)
    if not tune:
        return None
    unknown = set(tune) - {"split", "metric", "grid", "max_images"}
    if unknown:
        raise ValueError(f"callbacks.watershed.tune: unknown keys {sorted(unknown)}; "
                         "it takes split, metric, grid and max_images")
    spec = {"split": "train", "metric": "f1", "grid": None, "max_images": 50, **tune}
    if spec["max_images"] is not None and int(spec["max_images"]) < 1:
        raise ValueError(f"callbacks.watershed.tune.max_images must be >= 1 or null, "
                         f"got {spec['max_images']}")
    if spec["split"] not in ("train", "val"):
        raise ValueError(f"callbacks.watershed.tune.split must be train or val, "
                         f"got {spec['split']!r}")
    if spec["metric"] not in tuning.METRICS:
        raise ValueError(f"callbacks.watershed.tune.metric must be one of {tuning.METRICS}, "
                         f"got {spec['metric']!r}")
    return spec


def postprocess_config(postprocess: Any) -> dict:
    """The Hydra config (``_target_`` + fields) that rebuilds a post-processor dataclass."""
    cls = type(postprocess)
    return {"_target_": f"{cls.__module__}.{cls.__qualname__}",
            **dataclasses.asdict(postprocess)}


def tuning_items(pl_module, loader) -> list[tuning.TuningItem]:
    """The network's outputs (float16, network size) and true instances of every image of
    ``loader`` (native ones when the batches carry them)."""
    items = []
    training = pl_module.training
    pl_module.eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                out = pl_module.predict_outputs(batch["image"].to(pl_module.device))
                out = out.float().cpu().numpy().astype(np.float16)
                truths = batch.get("native_instances", batch["instances"])
                for name, o, t in zip(batch["name"], out, truths):
                    t = t.cpu().numpy() if torch.is_tensor(t) else np.asarray(t)
                    items.append(tuning.TuningItem(name, o, t))
    finally:
        pl_module.train(training)
    return items


def gather_stats(stats: InstanceStats, pixels: list[int],
                 trainer: pl.Trainer) -> tuple[InstanceStats, list[int]]:
    """All ranks' rows (and pixel sums) on every rank (DDP splits the images between ranks)."""
    if trainer.world_size <= 1 or not torch.distributed.is_initialized():
        return stats, pixels
    parts: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(
        parts, (stats.rows, stats.areas, stats.true_areas, stats.matched_ious, pixels))
    merged = InstanceStats(iou_threshold=stats.iou_threshold)
    total = [0, 0]
    for rows, areas, true_areas, matched, pix in parts:
        merged.rows += rows
        merged.areas += areas
        merged.true_areas += true_areas
        merged.matched_ious += matched
        total = [total[0] + pix[0], total[1] + pix[1]]
    return merged, total


class WatershedCallback(pl.Callback):
    """Watershed instances + count/instance metrics for val and test.

    Args:
        postprocess: a :class:`Watershed` or its Hydra config (``cfg.postprocess``).
        output_dir: where ``per_image.csv``, ``size_hist.csv`` and ``samples/`` go.
        n_samples: test images saved (in test order) for the report's panels.
        wandb_images: overlays sent to W&B after testing.
        hist_bins: bins of the cell-size histogram.
        val_every_n_epochs: post-process validation batches only every n-th epoch (the CPU
            watershed must not make a fast GPU wait every epoch); test is always complete.
        val_max_images: post-process at most this many validation images per epoch.
        tune: None, or ``{split: train | val, metric: f1 | count_mae, grid: {name: [values]}
            | None, max_images: 50}``: before testing, choose the post-processing parameters
            on the ``split`` images (``train`` = train + val; at most ``max_images`` of them,
            evenly spaced, null = all) by ``metric`` over ``grid`` (default: the
            post-processor's ``tune_grid()``). Under DDP every rank tunes on the same images
            (same weights, same result).
    """

    def __init__(self, postprocess: Any = None, output_dir: str | None = None,
                 n_samples: int = 4, wandb_images: int = 4, hist_bins: int = 30,
                 val_every_n_epochs: int = 1, val_max_images: int | None = None,
                 tune: dict | None = None) -> None:
        super().__init__()
        self.tune = _tune_spec(tune)
        self.tuned: dict[str, Any] = {}
        if val_every_n_epochs < 1:
            raise ValueError(f"val_every_n_epochs must be >= 1, got {val_every_n_epochs}")
        self.val_every_n_epochs = val_every_n_epochs
        self.val_max_images = val_max_images
        self.postprocess = build_postprocess(postprocess)
        self.pixels = [0, 0]  # native foreground: intersection, |pred| + |truth|
        self.output_dir = Path(output_dir) if output_dir else None
        self.n_samples = n_samples
        self.wandb_images = wandb_images
        self.hist_bins = hist_bins
        self.stats = {"val": InstanceStats(), "test": InstanceStats()}
        self.samples: list[dict] = []

    # -- per batch -----------------------------------------------------------------------

    def _process(self, stage: str, outputs: Any, batch: dict) -> list[np.ndarray]:
        """Instances at the batch's (training) resolution, scored against its instances."""
        maps = outputs["outputs"].detach().float().cpu().numpy()
        preds = [self.postprocess(m) for m in maps]
        if stage in self.stats and "instances" in batch:
            truth = batch["instances"].cpu().numpy()
            for name, t, p in zip(batch["name"], truth, preds):
                self.stats[stage].update(name, t, p)
        return preds

    def _process_native(self, outputs: Any, batch: dict) -> None:
        """Outputs upsampled to each image's source size, post-processed and scored there
        against the native instances: networks trained at any size compare on one scale."""
        maps = outputs["outputs"].detach().float().cpu().numpy()
        for name, m, native in zip(batch["name"], maps, batch["native_instances"]):
            native = native.cpu().numpy() if torch.is_tensor(native) else np.asarray(native)
            up = upsample(m, native.shape)
            pred = self.postprocess(up)
            self.stats["test"].update(name, native, pred)
            fg = self.postprocess.foreground(up) > self.postprocess.threshold
            truth = native > 0
            self.pixels[0] += int((fg & truth).sum())
            self.pixels[1] += int(fg.sum() + truth.sum())

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.val_every_n_epochs:
            return
        if self.val_max_images is not None:
            room = self.val_max_images - len(self.stats["val"].rows)
            if room <= 0:
                return
            outputs = {"outputs": outputs["outputs"][:room]}
            batch = {k: v[:room] for k, v in batch.items()}
        self._process("val", outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                          dataloader_idx=0) -> None:
        native = "native_instances" in batch
        if native:
            self._process_native(outputs, batch)
        room = max(self.n_samples, self.wandb_images) - len(self.samples)
        if room <= 0 and native:
            return
        # samples (report panels, W&B) are drawn at the training resolution
        preds = self._process("test" if not native else "samples", outputs, batch)
        fg = foreground(outputs["outputs"], pl_module.target)
        for i, pred in enumerate(preds[:max(room, 0)]):
            self.samples.append({
                "name": batch["name"][i],
                "image": denormalize(batch["image"][i]),
                "mask": batch["mask"][i, 0].cpu().numpy().astype(np.uint8),
                "prob": fg[i, 0].float().cpu().numpy(),
                "instances": pred,
                "true_count": int(len(np.unique(batch["instances"][i].cpu().numpy())) - 1),
            })

    # -- tuning --------------------------------------------------------------------------

    def on_test_start(self, trainer, pl_module) -> None:
        if self.tune is None:
            return
        loader_of = getattr(trainer.datamodule, "tuning_dataloader", None)
        if loader_of is None:
            raise ValueError("callbacks.watershed.tune needs a datamodule with "
                             "tuning_dataloader() (bloodseg's BloodCellDataModule)")
        items = tuning_items(pl_module, loader_of(self.tune["split"], self.tune["max_images"]))
        result = tuning.search(self.postprocess, items, self.tune["grid"], self.tune["metric"])
        before = {k: getattr(self.postprocess, k) for k in result.best}
        self.postprocess, self.tuned = result.postprocess, result.best
        config = {**(to_plain(pl_module.hparams.get("postprocess")) or {}),
                  **postprocess_config(result.postprocess)}
        pl_module.hparams["postprocess"] = config
        log.info("post-processing tuned on %d %s images (%s): %s (was %s)", len(items),
                 self.tune["split"], self.tune["metric"], result.best, before)
        if not trainer.is_global_zero or self.output_dir is None:
            return
        updated = None
        ckpt = Path(trainer.ckpt_path) if trainer.ckpt_path else None
        # only a checkpoint this run wrote: never rewrite a file the user passed in
        if ckpt is not None and ckpt.is_file() and ckpt.resolve().is_relative_to(
                self.output_dir.resolve()):
            updated = str(update_hparams(ckpt, {"postprocess": config}))
        rundir.write_tuning(self.output_dir, {
            **self.tune, "n_images": len(items), "before": before, "chosen": result.best,
            "checkpoint_updated": updated, "tried": result.rows})

    # -- per epoch -----------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.stats["val"].reset()

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.stats["test"].reset()
        self.samples = []
        self.pixels = [0, 0]

    def _log(self, stage: str, trainer, pl_module) -> InstanceStats:
        stats, pixels = gather_stats(self.stats[stage], self.pixels, trainer)
        agg = stats.aggregate()
        if agg.get("n_images", 0) == 0:
            return stats
        if stage == "test" and pixels[1] > 0:
            agg["native_dice"] = 2 * pixels[0] / pixels[1]
        # validation is scored at the training resolution (fast); its names say so
        suffix = "_trainres" if stage == "val" else ""
        for key, name in LOGGED.items():
            if key in agg:
                # values are identical on all ranks after the gather: no further sync needed
                pl_module.log(f"{stage}/{name}{suffix}", float(agg[key]), on_epoch=True,
                              rank_zero_only=True)
        if stage == "test":
            for key, value in self.tuned.items():
                pl_module.log(f"test/tuned_{key}", float(value), rank_zero_only=True)
        return stats

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log("val", trainer, pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        stats = self._log("test", trainer, pl_module)
        if not trainer.is_global_zero or not stats.rows:
            return
        if self.output_dir is not None:
            self.write_outputs(stats)
        self.log_wandb(trainer, stats)

    # -- outputs -------------------------------------------------------------------------

    def write_outputs(self, stats: InstanceStats) -> None:
        rundir.write_per_image(self.output_dir, stats.rows)
        rundir.write_size_hist(self.output_dir, np.concatenate(stats.areas or [np.zeros(0)]),
                               np.concatenate(stats.true_areas or [np.zeros(0)]), self.hist_bins)
        rundir.write_samples(self.output_dir, self.samples[: self.n_samples])

    def log_wandb(self, trainer, stats: InstanceStats) -> None:
        from pytorch_lightning.loggers import WandbLogger

        for lg in trainer.loggers:
            if not isinstance(lg, WandbLogger):
                continue
            import wandb

            areas = np.concatenate(stats.areas) if stats.areas else np.zeros(0)
            lg.experiment.log({
                "test/cell_area_px": wandb.Histogram(areas, num_bins=self.hist_bins),
                "test/overlays": [
                    wandb.Image(overlay(s["image"], s["instances"]),
                                caption=f"{s['name']}: {int(s['instances'].max())} cells "
                                        f"(truth {s['true_count']})")
                    for s in self.samples[: self.wandb_images]
                ],
            })


class RNGState(pl.Callback):
    """Checkpoints carry the global RNG states and a resume restores them, so the shuffles
    and flips after a resume are those of the uninterrupted run (Lightning 2 checkpoints no
    RNG state). Exact with ``data.num_workers=0``; persistent loader workers keep RNG states
    of their own, which no checkpoint holds."""

    def state_dict(self) -> dict[str, Any]:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # tensors, not ndarrays: checkpoints load with torch.load(weights_only=True)
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # runs while Lightning restores the checkpoint, before the resumed epoch draws anything
        torch.set_rng_state(state_dict["torch"])
        cuda = state_dict["cuda"]
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, internal, gauss = state_dict["python"]
        random.setstate((version, tuple(internal), gauss))
