"""Timing a training step: the one step timer, module builder and hand-written step that the
throughput benchmarks share (``benchmarks/train_step.py``, ``benchmarks/gpu_check.py``).

A step is forward, BCE loss, backward, Adam step and the torchmetrics update, timed after
warm-up steps and synchronised with the device only at both ends, once inside a Lightning
``Trainer`` (:class:`StepTimer`) and once as a plain loop (:func:`plain_step_s`), so the two
are comparable.

    >>> module = make_module("unet", width=16)
    >>> timer = StepTimer(warmup=5, steps=20)     # a callback of a Trainer(max_steps=25)
    >>> plain_step_s(make_module("unet", 16), dm, "cpu", "32-true", warmup=5, steps=20)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

import pytorch_lightning as pl
import torch

from bloodseg.config import group_config
from bloodseg.module import SegmentationModule

__all__ = ["ADAM", "PhaseTimer", "StepTimer", "endless", "loader_s_per_batch", "make_module",
           "model_config", "plain_step_s", "sync"]

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4}


def sync(device: torch.device | str) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Wall time of ``steps`` training steps after ``warmup``; syncs only at both ends, so
    Lightning, like the plain loop, may queue GPU work ahead."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.start = self.end = 0.0
        self.done = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.warmup + self.steps and not self.end:
            sync(pl_module.device)
            self.end = time.perf_counter()
            self.done = trainer.global_step - self.warmup

    def seconds_per_step(self) -> float:
        if self.done <= 0:
            raise RuntimeError("no timed steps ran (dataset too small?)")
        return (self.end - self.start) / self.done


class PhaseTimer(pl.Callback):
    """Train and validation time of one epoch (synced at the phase boundaries)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def _mark(self, key: str, pl_module) -> None:
        sync(pl_module.device)
        self.t[key] = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark("train_start", pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._mark("val_start", pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._mark("val_end", pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._mark("train_end", pl_module)

    def phases(self) -> tuple[float, float]:
        t = self.t
        train_end = min(t["train_end"], t.get("val_start", t["train_end"]))
        val = t["val_end"] - t["val_start"] if "val_start" in t and "val_end" in t else 0.0
        return train_end - t["train_start"], val


def model_config(name: str, width: int | None) -> dict:
    """``conf/model/<name>.yaml`` for one gray channel, ``base_channels=width`` where the
    model has that option."""
    kwargs = {"in_channels": 1}
    if width and "base_channels" in group_config("model", name):
        kwargs["base_channels"] = width
    return group_config("model", name, **kwargs)


def make_module(name: str, width: int | None, channels_last: bool = False
                ) -> SegmentationModule:
    """A seeded SegmentationModule of ``name`` (BCE loss, Adam at :data:`ADAM`'s rate)."""
    torch.manual_seed(0)
    return SegmentationModule(model=model_config(name, width), loss="bce", optimizer=ADAM,
                              channels_last=channels_last)


def endless(loader: Iterable) -> Iterator:
    while True:
        yield from loader


def plain_step_s(module: SegmentationModule, dm, device: torch.device | str, precision: str,
                 warmup: int, steps: int, channels_last: bool = False) -> float:
    """Seconds per step of the same step by hand: forward, BCE, backward, Adam,
    torchmetrics update."""
    device = torch.device(device)
    module.to(device).train()
    net, criterion, metrics = module.net, module.criterion, module.train_metrics
    opt = torch.optim.Adam(net.parameters(), lr=ADAM["lr"])
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    batches = endless(dm.train_dataloader())
    start = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        batch = next(batches)
        x = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        # the loss's target (the binary mask, or the module's training target where batches
        # carry one); the pixel metrics compare the foreground with the mask
        y = batch["target"].to(device, non_blocking=True) if "target" in batch else mask
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(x)
            loss = criterion(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        metrics.update(torch.sigmoid(logits[:, :1].detach().float()), mask.int())
    sync(device)
    metrics.reset()
    return (time.perf_counter() - start) / steps


def loader_s_per_batch(dm, batches: int, warmup: int = 1) -> float:
    """Seconds per batch of ``dm``'s training loader alone, after ``warmup`` batches."""
    it = endless(dm.train_dataloader())
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches
