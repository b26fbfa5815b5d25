"""``SegmentationModule``: the LightningModule that trains any bloodseg network.

The network, optimizer and scheduler arrive as Hydra configs (optimizer/scheduler with
``_partial_: true``) and are instantiated here, so a checkpoint alone rebuilds the
model (:meth:`SegmentationModule.from_checkpoint`). Pixel metrics come from
torchmetrics and are logged per epoch as ``train/...``, ``val/...``, ``test/...``;
the loss is a ``conf/loss`` config (:mod:`bloodseg.losses`).

    >>> module = SegmentationModule(model={"_target_": "bloodseg.models.unet.UNet",
    ...                                    "in_channels": 1}, loss="bce")
    >>> module = SegmentationModule.from_checkpoint("run/checkpoints/best.ckpt", tta=True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

from bloodseg.checkpoint import load_checkpoint
from bloodseg.config import group_config, to_plain
from bloodseg.losses import WeightedBCELoss, build_loss

DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4}


TARGET_CHANNELS = {"binary": 1, "contour": 3, "distance": 2}


def to_outputs(logits: torch.Tensor, target: str) -> torch.Tensor:
    """Logits -> the target's probability maps (float32)."""
    logits = logits.float()
    return torch.softmax(logits, dim=1) if target == "contour" else torch.sigmoid(logits)


def foreground(outputs: torch.Tensor, target: str) -> torch.Tensor:
    """(B, 1, H, W) foreground probability from the target's probability maps."""
    if target == "contour":
        return outputs[:, 1:2] + outputs[:, 2:3]  # interior + border
    return outputs[:, :1]


def pixel_metrics(prefix: str, threshold: float = 0.5) -> MetricCollection:
    """IoU, Dice (= binary F1 over pixels), precision, recall and pixel accuracy."""
    return MetricCollection(
        {
            "iou": BinaryJaccardIndex(threshold=threshold),
            "dice": BinaryF1Score(threshold=threshold),
            "precision": BinaryPrecision(threshold=threshold),
            "recall": BinaryRecall(threshold=threshold),
            "accuracy": BinaryAccuracy(threshold=threshold),
        },
        prefix=prefix,
    )


class SegmentationModule(pl.LightningModule):
    """Binary segmentation of blood cells with one logit channel.

    Args:
        model: Hydra config of the network (``_target_`` + kwargs), e.g. ``cfg.model``.
        loss: Hydra config of the loss (``cfg.loss``) or a ``conf/loss`` name (``bce``, the
            study's; ``dice``; ``bce_dice``).
        optimizer: Hydra partial of a ``torch.optim`` class; called with ``params=``.
        scheduler: Hydra partial of an LR scheduler (or None). ``ReduceLROnPlateau``
            monitors ``scheduler_monitor``.
        threshold: probability threshold of the pixel metrics.
        channels_last: use the channels-last memory format (faster convs on GPUs).
        data_info: what the network was trained on (color, image size, source image
            size); filled in at fit start so evaluate/predict can read it back.
        target: what the network learns (``conf/target``): ``{"name": "binary" | "contour" |
            "distance", ...}``; the output channels follow it.
        postprocess: the post-processing config trained with (``cfg.postprocess``), saved so
            evaluate/predict use the same one unless told otherwise.
        tta: at validation/test, average the predictions over the four flips (an evaluation
            choice, not saved with the model).
    """

    def __init__(
        self,
        model: dict | DictConfig,
        loss: str | dict | DictConfig = "bce",
        optimizer: dict | DictConfig | None = None,
        scheduler: dict | DictConfig | None = None,
        scheduler_monitor: str = "val/loss",
        threshold: float = 0.5,
        channels_last: bool = False,
        data_info: dict | None = None,
        target: dict | DictConfig | None = None,
        postprocess: dict | DictConfig | None = None,
        tta: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {  # tta is left out: how to evaluate is not part of the model
                "model": to_plain(model),
                "loss": to_plain(loss),
                "optimizer": to_plain(optimizer) or dict(DEFAULT_OPTIMIZER),
                "scheduler": to_plain(scheduler),
                "scheduler_monitor": scheduler_monitor,
                "threshold": threshold,
                "channels_last": channels_last,
                "data_info": data_info,
                "target": to_plain(target) or {"name": "binary", "channels": 1},
                "postprocess": to_plain(postprocess),
            }
        )
        self.target = self.hparams.target["name"]
        if self.target not in TARGET_CHANNELS:
            raise ValueError(f"target {self.target!r} unknown; valid: {', '.join(TARGET_CHANNELS)}")
        self.net: nn.Module = instantiate(self.hparams.model)
        # the U-Net paper's weight map weights its loss, BCE, pixel by pixel
        weighted = self.hparams.target.get("weight_map")
        self.criterion = WeightedBCELoss() if weighted else build_loss(self.hparams.loss)
        self.threshold = threshold
        self.tta = tta
        self.train_metrics = pixel_metrics("train/", threshold)
        self.val_metrics = pixel_metrics("val/", threshold)
        self.test_metrics = pixel_metrics("test/", threshold)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu",
                        tta: bool = False) -> SegmentationModule:
        """Rebuild from a checkpoint alone (no weight download); safe on untrusted files."""
        ckpt = load_checkpoint(path, map_location)
        hp = dict(ckpt.get("hyper_parameters") or {})
        if "model" not in hp or "state_dict" not in ckpt:
            raise ValueError(f"{path}: not a bloodseg checkpoint (no model config or weights "
                             "in it); pass ckpt_path=<run>/checkpoints/best.ckpt")
        if "pretrained" in hp["model"]:
            hp["model"] = {**hp["model"], "pretrained": False}
        module = cls(**hp, tta=tta)
        module.load_state_dict(ckpt["state_dict"])
        return module.eval()

    def postprocess_config(self) -> dict:
        """The post-processing the network was trained with (binary default: the watershed)."""
        if self.hparams.get("postprocess"):
            return dict(self.hparams.postprocess)
        return group_config("postprocess", {"binary": "watershed"}.get(self.target, self.target))

    def on_fit_start(self) -> None:
        describe = getattr(self.trainer.datamodule, "describe", None)
        if describe is not None:
            self.hparams["data_info"] = describe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def _logits_and_outputs(self, x: torch.Tensor, tta: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of ``x`` and the target's probability maps (with ``tta``, averaged over the
        four flips; the identity flip's logits are the ones returned): four passes, not five."""
        logits = self(x)
        outputs = to_outputs(logits.detach(), self.target)
        if tta:
            flipped = [to_outputs(self(x.flip(d)), self.target).flip(d)
                       for d in ((-1,), (-2,), (-2, -1))]
            outputs = torch.stack([outputs, *flipped]).mean(0)
        return logits, outputs

    def predict_outputs(self, x: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """(B, C, H, W) probability maps of the target (binary: the foreground probability;
        contour: softmax over background/interior/border; distance: foreground, distance)."""
        return self._logits_and_outputs(x, self.tta if tta is None else tta)[1]

    def _loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if "weight" in batch:
            return self.criterion(logits, batch["target"], batch["weight"])
        return self.criterion(logits, batch["target"])

    def _step(self, batch: dict, metrics: MetricCollection, stage: str) -> dict:
        logits, outputs = self._logits_and_outputs(batch["image"],
                                                   self.tta and stage != "train")
        loss = self._loss(logits, batch)
        metrics.update(foreground(outputs, self.target), batch["mask"].int())
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

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, self.test_metrics, "test")

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
