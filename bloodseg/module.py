"""``SegmentationModule``: the LightningModule that trains any bloodseg network.

The network, optimizer and scheduler arrive as Hydra configs (optimizer/scheduler with
``_partial_: true``) and are instantiated here, so a checkpoint alone rebuilds the
model (:meth:`SegmentationModule.from_checkpoint`). Pixel metrics come from
torchmetrics and are logged per epoch as ``train/...``, ``val/...``, ``test/...``;
losses come from ``segmentation_models_pytorch.losses``.

    >>> module = SegmentationModule(model={"_target_": "bloodseg.models.unet.UNet",
    ...                                    "in_channels": 1}, loss="bce")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from segmentation_models_pytorch.losses import DiceLoss, SoftBCEWithLogitsLoss
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

LOSSES = ("bce", "dice", "bce_dice")
DEFAULT_OPTIMIZER = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4}


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class BCEDiceLoss(nn.Module):
    """BCE + soft Dice: BCE for per-pixel calibration, Dice against the class imbalance."""

    def __init__(self) -> None:
        super().__init__()
        self.bce = SoftBCEWithLogitsLoss()
        self.dice = DiceLoss(mode="binary", from_logits=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.bce(logits, target) + self.dice(logits, target)


def build_loss(name: str) -> nn.Module:
    if name == "bce":
        return SoftBCEWithLogitsLoss()
    if name == "dice":
        return DiceLoss(mode="binary", from_logits=True)
    if name == "bce_dice":
        return BCEDiceLoss()
    raise KeyError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")


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
        loss: ``bce`` (the study's), ``dice`` or ``bce_dice``.
        optimizer: Hydra partial of a ``torch.optim`` class; called with ``params=``.
        scheduler: Hydra partial of an LR scheduler (or None). ``ReduceLROnPlateau``
            monitors ``scheduler_monitor``.
        threshold: probability threshold of the pixel metrics.
        channels_last: use the channels-last memory format (faster convs on GPUs).
        data_info: what the network was trained on (color, image size, source image
            size); filled in at fit start so evaluate/predict can read it back.
    """

    def __init__(
        self,
        model: dict | DictConfig,
        loss: str = "bce",
        optimizer: dict | DictConfig | None = None,
        scheduler: dict | DictConfig | None = None,
        scheduler_monitor: str = "val/loss",
        threshold: float = 0.5,
        channels_last: bool = False,
        data_info: dict | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "model": _plain(model),
                "loss": loss,
                "optimizer": _plain(optimizer) or dict(DEFAULT_OPTIMIZER),
                "scheduler": _plain(scheduler),
                "scheduler_monitor": scheduler_monitor,
                "threshold": threshold,
                "channels_last": channels_last,
                "data_info": data_info,
            }
        )
        self.net: nn.Module = instantiate(self.hparams.model)
        self.criterion = build_loss(loss)
        self.threshold = threshold
        self.tta = False  # flip averaging at val/test/predict; set by evaluate/predict
        self.train_metrics = pixel_metrics("train/", threshold)
        self.val_metrics = pixel_metrics("val/", threshold)
        self.test_metrics = pixel_metrics("test/", threshold)
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu"):
        """Rebuild from a checkpoint without downloading weights (it holds them all)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: checkpoint not found; pass ckpt_path=<run>/checkpoints/best.ckpt")
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
        hp = dict(ckpt.get("hyper_parameters") or {})
        if "model" not in hp:
            raise ValueError(f"{path}: not a bloodseg checkpoint (no model config in it)")
        if "pretrained" in hp["model"]:
            hp["model"] = {**hp["model"], "pretrained": False}
        module = cls(**hp)
        module.load_state_dict(ckpt["state_dict"])
        return module.eval()

    def on_fit_start(self) -> None:
        describe = getattr(self.trainer.datamodule, "describe", None)
        if describe is not None:
            self.hparams["data_info"] = describe()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def predict_probs(self, x: torch.Tensor, tta: bool | None = None) -> torch.Tensor:
        """Foreground probabilities; with ``tta`` the mean over the four flips of ``x``."""
        if not (self.tta if tta is None else tta):
            return torch.sigmoid(self(x).float())
        flips = [(), (-1,), (-2,), (-2, -1)]
        return torch.stack(
            [torch.sigmoid(self(x.flip(d)).float()).flip(d) if d else torch.sigmoid(self(x).float())
             for d in flips]).mean(0)

    def _step(self, batch: dict, metrics: MetricCollection, stage: str) -> dict:
        logits = self(batch["image"])
        target = batch["mask"]
        loss = self.criterion(logits, target)
        if self.tta and stage != "train":
            probs = self.predict_probs(batch["image"])
        else:
            probs = torch.sigmoid(logits.detach().float())
        metrics.update(probs, target.int())
        bs = target.shape[0]
        self.log(f"{stage}/loss", loss, on_step=stage == "train", on_epoch=True,
                 prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train",
                      batch_size=bs)
        return {"loss": loss, "probs": probs}

    def training_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, self.train_metrics, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, self.val_metrics, "val")

    def test_step(self, batch: dict, batch_idx: int) -> dict:
        return self._step(batch, self.test_metrics, "test")

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        return {"probs": self.predict_probs(batch["image"])}

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
