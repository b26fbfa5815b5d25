"""``SegmentationModule``: the LightningModule that trains any bloodseg network.

The network arrives as a Hydra config of a registered network (``conf/model``) and is built
through the registry (:class:`bloodseg.spec.Network`); optimizer/scheduler configs
(``_partial_: true``) are instantiated here from the user's own config. Every checkpoint it
writes carries the :class:`~bloodseg.spec.ModelSpec` (network, target, preprocessing,
post-processing, provenance) under ``bloodseg_spec``; models are loaded for use from that
spec alone (:func:`bloodseg.modelfile.load_model`), never from ``hyper_parameters``. Pixel
metrics come from torchmetrics and are logged per epoch as ``train/...`` and ``val/...``; the
loss is a ``conf/loss`` config (:mod:`bloodseg.losses`).

    >>> module = SegmentationModule(model={"_target_": "bloodseg.models.unet.UNet",
    ...                                    "in_channels": 1}, loss="bce")
"""

from __future__ import annotations

import datetime
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

import bloodseg
from bloodseg.config import to_plain
from bloodseg.losses import build_loss
from bloodseg.spec import (
    SPEC_KEY,
    ModelSpec,
    Network,
    Postprocess,
    check_network_fits,
    check_postprocess_fits,
    target_from_dict,
)

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4}


def pixel_metrics(prefix: str, threshold: float = 0.5, **kwargs: Any) -> MetricCollection:
    """The foreground's pixel metrics, named ``<prefix><name>``: ``iou``, ``dice`` (= binary
    F1 over pixels), ``pixel_precision``, ``pixel_recall`` and ``pixel_accuracy`` (prefixed:
    ``precision``, ``recall``, ``f1`` are the instance metrics of
    :class:`bloodseg.metrics.InstanceStats`). ``kwargs`` go to every metric, e.g.
    ``sync_on_compute=False`` for one process's own images."""
    return MetricCollection(
        {
            "iou": BinaryJaccardIndex(threshold=threshold, **kwargs),
            "dice": BinaryF1Score(threshold=threshold, **kwargs),
            "pixel_precision": BinaryPrecision(threshold=threshold, **kwargs),
            "pixel_recall": BinaryRecall(threshold=threshold, **kwargs),
            "pixel_accuracy": BinaryAccuracy(threshold=threshold, **kwargs),
        },
        prefix=prefix,
    )


class SegmentationModule(pl.LightningModule):
    """Segmentation of blood cells for any target (``conf/target``).

    Args:
        model: Hydra config of a registered network (``_target_`` + kwargs), e.g. ``cfg.model``.
            Its ``classes`` (output channels) come from the target when not given.
        loss: Hydra config of the loss (``cfg.loss``) or a ``conf/loss`` name (``bce``, the
            study's; ``dice``; ``bce_dice``); None: the target's own (``conf/loss/<target>``).
        optimizer: Hydra partial of a ``torch.optim`` class; called with ``params=``.
        scheduler: Hydra partial of an LR scheduler (or None). ``ReduceLROnPlateau``
            monitors ``scheduler_monitor``.
        threshold: probability threshold of the pixel metrics.
        channels_last: use the channels-last memory format (faster convs on GPUs).
        data_info: what the network was trained on (``datamodule.describe()``: color, image
            size, scale, contrast, source size); filled in at fit start, it becomes the spec's
            preprocessing.
        target: what the network learns (``conf/target``): ``{"name": "binary" | "contour" |
            "distance" | "distance_contour", <its fields>}`` (:mod:`bloodseg.targets`); the
            network's output channels, decoding and foreground follow it.
        postprocess: the post-processing config trained with (``cfg.postprocess``; None: the
            target's own); the spec carries it until tuning chooses better values
            (``postprocess.json``).
    """

    def __init__(
        self,
        model: dict | DictConfig,
        loss: str | dict | DictConfig | None = None,
        optimizer: dict | DictConfig | None = None,
        scheduler: dict | DictConfig | None = None,
        scheduler_monitor: str = "val/loss",
        threshold: float = 0.5,
        channels_last: bool = False,
        data_info: dict | None = None,
        target: dict | DictConfig | None = None,
        postprocess: dict | DictConfig | None = None,
    ) -> None:
        super().__init__()
        # checked now: a config that cannot make a valid model file fails before the first
        # epoch, not at the first checkpoint
        self.target = target_from_dict(to_plain(target) or {"name": "binary"}, "target config")
        # the network's output channels are the target's (the model configs leave them out)
        model = {"classes": self.target.channels, **to_plain(model)}
        self.save_hyperparameters(
            {
                "model": model,
                "loss": to_plain(loss) or self.target.default_loss,
                "optimizer": to_plain(optimizer) or dict(DEFAULT_OPTIMIZER),
                "scheduler": to_plain(scheduler),
                "scheduler_monitor": scheduler_monitor,
                "threshold": threshold,
                "channels_last": channels_last,
                "data_info": data_info,
                "target": self.target.to_dict(),
                "postprocess": to_plain(postprocess),
            }
        )
        self.network = Network.from_config(self.hparams.model)
        pp = self.hparams.postprocess
        self.postprocess_spec = (Postprocess.from_config(pp) if pp else
                                 Postprocess(self.target.default_postprocess))
        check_network_fits(self.network, self.target, "config")
        check_postprocess_fits(self.postprocess_spec, self.target, "config")
        #: set by the trainer's caller (train.py): config hash, run name...; copied into the spec
        self.provenance: dict[str, Any] = {}
        self.net = self.network.build()
        # the target may replace the configured loss (binary's weight map weights BCE)
        self.criterion = build_loss(self.target.training_loss(self.hparams.loss))
        self.threshold = threshold
        self.train_metrics = pixel_metrics("train/", threshold)
        self.val_metrics = pixel_metrics("val/", threshold)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    # -- the model file ------------------------------------------------------------------

    def model_spec(self) -> ModelSpec:
        """What this network is, for its checkpoints (:mod:`bloodseg.spec`)."""
        info = self.hparams.get("data_info") or {}
        pre = {k: info[k] for k in ("color", "image_size", "scale", "source_size", "contrast",
                                    "cut_cell_frac") if info.get(k) is not None}
        pre.setdefault("color", "gray" if self.network.kwargs.get("in_channels") == 1
                       else "rgb")
        provenance = {
            "bloodseg_version": bloodseg.__version__,
            **self.provenance,
            **{k: info[k] for k in ("data_root", "data_kind") if k in info},
            "saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        if self._trainer is not None:
            provenance["epochs"] = self.trainer.current_epoch
            provenance["global_step"] = self.trainer.global_step
            provenance["metrics"] = {k: round(float(v), 6) for k, v in
                                     self.trainer.callback_metrics.items() if k.startswith("val/")
                                     and v.numel() == 1}
        return ModelSpec.from_dict({
            "version": 1,
            "network": {"name": self.network.name, "kwargs": self.network.kwargs},
            "target": self.target.to_dict(),
            "preprocess": pre,
            "postprocess": {"name": self.postprocess_spec.name,
                            "fields": self.postprocess_spec.fields},
            "provenance": provenance,
        }, "this run's model")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[SPEC_KEY] = self.model_spec().to_dict()

    def on_fit_start(self) -> None:
        describe = getattr(self.trainer.datamodule, "describe", None)
        if describe is not None:
            self.hparams["data_info"] = describe()

    # -- steps ---------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if "weight" in batch:
            return self.criterion(logits, batch["target"], batch["weight"])
        return self.criterion(logits, batch["target"])

    def _step(self, batch: dict, metrics: MetricCollection, stage: str) -> dict:
        """Loss and pixel metrics of a batch; ``outputs``: the target's decoded (B, C, H, W)
        maps (binary: the foreground probability; contour: softmax over
        background/interior/border; distance: foreground, distance)."""
        logits = self(batch["image"])
        outputs = self.target.decode(logits.detach())
        loss = self._loss(logits, batch)
        metrics.update(self.target.foreground(outputs), batch["mask"].int())
        bs = outputs.shape[0]
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True,
                 prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train",
                      batch_size=bs)
        return {"loss": loss, "outputs": outputs}

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, self.val_metrics, "val")

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.scheduler_monitor,
                "interval": "epoch",
            },
        }
