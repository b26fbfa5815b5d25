"""Lightning callbacks: ``InstanceMetricsCallback`` (cells, counts and instance quality of every
validation batch, during training) and ``RNGState`` (resumable random state).

On validation batches it turns the module's probabilities into instances with the run's
post-processing (whichever the target has: watershed, contour or distance markers) and compares
them with the true instances the batch carries, at the training resolution (fast; the names say
so: ``val/<name>_trainres`` for each name of :meth:`InstanceStats.aggregate`,
``val/count_mae_trainres``, ``val/f1_trainres``, ...).
The test split is scored after training, at native resolution, through the one inference path
(:mod:`bloodseg.evaluation`), not here.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from bloodseg.metrics import InstanceStats
from bloodseg.spec import Postprocess


def gather_stats(stats: InstanceStats, trainer: pl.Trainer) -> InstanceStats:
    """All ranks' rows on every rank (DDP splits the images between ranks)."""
    if trainer.world_size <= 1 or not torch.distributed.is_initialized():
        return stats
    parts: list = [None] * trainer.world_size
    torch.distributed.all_gather_object(
        parts, (stats.rows, stats.areas, stats.true_areas, stats.matched_ious))
    merged = InstanceStats(iou_threshold=stats.iou_threshold)
    for rows, areas, true_areas, matched in parts:
        merged.rows += rows
        merged.areas += areas
        merged.true_areas += true_areas
        merged.matched_ious += matched
    return merged


class InstanceMetricsCallback(pl.Callback):
    """Post-processed instances + count/instance metrics of validation batches
    (``callbacks.instance_metrics``; any target's post-processor, not only the watershed).

    Args:
        postprocess: the run's post-processing config (``cfg.postprocess``, the user's own
            ``conf/postprocess``), built through the registry.
        val_every_n_epochs: post-process validation batches only every n-th epoch (the CPU
            post-processing must not make a fast GPU wait every epoch).
        val_max_images: post-process at most this many validation images per epoch.
    """

    def __init__(self, postprocess: Any = None, val_every_n_epochs: int = 1,
                 val_max_images: int | None = None) -> None:
        super().__init__()
        if val_every_n_epochs < 1:
            raise ValueError(f"val_every_n_epochs must be >= 1, got {val_every_n_epochs}")
        self.val_every_n_epochs = val_every_n_epochs
        self.val_max_images = val_max_images
        if postprocess is None or callable(postprocess):
            self.postprocess = postprocess
        else:
            self.postprocess = Postprocess.from_config(postprocess).build()
        self.stats = InstanceStats()

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.postprocess is None:
            self.postprocess = pl_module.postprocess_spec.build()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx,
                                dataloader_idx=0) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.val_every_n_epochs:
            return
        maps = outputs["outputs"].detach().float().cpu().numpy()
        truth = batch["instances"].cpu().numpy()
        room = len(maps) if self.val_max_images is None else max(
            0, self.val_max_images - len(self.stats.rows))
        for name, t, m in list(zip(batch["name"], truth, maps))[:room]:
            self.stats.update(name, t, self.postprocess(m))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.stats.reset()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        agg = gather_stats(self.stats, trainer).aggregate()
        if agg.get("n_images", 0) == 0:
            return
        for name, value in agg.items():
            # identical on all ranks after the gather: no further sync needed
            pl_module.log(f"val/{name}_trainres", float(value), on_epoch=True,
                          rank_zero_only=True)


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
