"""What gpu_check's sections share: Trainers, FLOP counts, loader timing (the step timer and
module builder are :mod:`benchmarks.steptime`), and synthetic data generated in the background."""

from __future__ import annotations

import contextlib
import gc
import json
import math
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytorch_lightning as pl
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import steptime
from benchmarks.steptime import (
    StepTimer,
    model_config,
)
from bloodseg.data.synthetic import write_dataset
from bloodseg.models import build_model

from .settings import (
    Settings,
)

# -- shared pieces: Trainers, FLOPs, loaders -------------------------------------------


def make_trainer(s: Settings, precision: str, callbacks: list, **kwargs) -> pl.Trainer:
    accel, devices = ("cpu", 1)
    if s.cuda:
        index = torch.device(s.device).index
        accel, devices = "gpu", [index] if index is not None else 1
    options = dict(
        accelerator=accel, devices=devices, precision=precision, callbacks=callbacks,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(s.work),
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def release(s: Settings) -> None:
    """Drop finished Trainers (reference cycles hold their loader workers) and GPU memory."""
    gc.collect()
    if s.cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()


def lightning_step_s(s: Settings, module, dm, precision: str, warmup: int, steps: int) -> float:
    timer = StepTimer(warmup, steps)
    trainer = make_trainer(s, precision, [timer], max_steps=warmup + steps,
                           limit_val_batches=0)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    return timer.seconds_per_step()


def count_train_flops(name: str, width: int | None, batch: int, size: int,
                      device: str) -> int:
    """FLOPs of one fp32 forward + BCE + backward, counted by FlopCounterMode (not guessed)."""
    torch.manual_seed(0)
    net = build_model(name, **{k: v for k, v in model_config(name, width).items()
                               if k != "_target_"}).to(device)
    x = torch.randn(batch, 1, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
    flops = counter.get_total_flops()
    del net, x, y, loss
    return int(flops)


# -- synthetic data ------------------------------------------------------------------------


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Workers need only ``write_dataset``; unless ``__main__`` is hidden while they start,
    multiprocessing makes each of them re-import this script (torch, Lightning: seconds)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__.pop(k) for k in ("__file__",) if main and k in main.__dict__}
    spec = getattr(main, "__spec__", None)
    if main is not None:
        main.__spec__ = None
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)
            main.__spec__ = spec


class Generation:
    """``write_dataset`` split into chunks over a process pool (running in the background
    from construction on), merged into one Kaggle-layout folder by :meth:`wait`; a folder
    that already holds the same dataset is reused."""

    def __init__(self, out: Path, n_train: int, n_test: int, size: tuple[int, int],
                 style: str, seed: int, procs: int) -> None:
        self.out, self.pool, self.error = out, None, None
        self.spec = {"n_train": n_train, "n_test": n_test, "size": list(size),
                     "style": style, "seed": seed}
        self.info: dict | None = None
        marker = out / ".gpu_check.json"
        if marker.is_file():
            info = json.loads(marker.read_text())
            if info.get("spec") == self.spec:
                self.info = {**info, "reused": True}
                return
        shutil.rmtree(out, ignore_errors=True)
        self.parts = out.parent / f".{out.name}.parts"
        shutil.rmtree(self.parts, ignore_errors=True)
        chunk = max(1, math.ceil((n_train + n_test) / (procs * 3)))
        self.tasks = []
        for split, n in (("train", n_train), ("test", n_test)):
            for first in range(0, n, chunk):
                k = min(chunk, n - first)
                i = len(self.tasks)
                self.tasks.append((self.parts / f"{i:04d}", k if split == "train" else 0,
                                   k if split == "test" else 0, tuple(size),
                                   seed * 100_000 + i, style))
        self.procs = min(procs, len(self.tasks))
        self.start, self.end = time.perf_counter(), None
        # forkserver: no fork of this process (CUDA, OpenCV thread pools), and a server that
        # imports only the generator, so workers start in milliseconds; one OpenCV thread each
        mp = multiprocessing.get_context("forkserver")
        mp.set_forkserver_preload(["bloodseg.data.synthetic"])
        with main_module_hidden():
            self.pool = mp.Pool(self.procs, initializer=cv2.setNumThreads, initargs=(1,))
        self.result = self.pool.starmap_async(write_dataset, self.tasks, chunksize=1,
                                              callback=self._finished)

    def _finished(self, _) -> None:
        self.end = time.perf_counter()

    def wait(self) -> dict:
        """The dataset's info once it is complete (raises the workers' error, every call)."""
        if self.info is not None:
            return self.info
        if self.error is not None:
            raise self.error
        try:
            self.result.get()
        except Exception as err:
            self.error = err
            self.cancel()
            raise
        self.pool.close()
        self.pool.join()
        self.pool = None
        out = self.out
        for split in ("train", "test"):
            for kind in ("original", "mask", "instances"):
                (out / split / kind).mkdir(parents=True, exist_ok=True)
        for i, task in enumerate(self.tasks):
            for src in task[0].glob("*/*/*.png"):
                split, kind = src.parent.parent.name, src.parent.name
                os.replace(src, out / split / kind / f"{i:04d}-{src.name}")
        shutil.rmtree(self.parts, ignore_errors=True)
        info = {"spec": self.spec, "seconds": round((self.end or time.perf_counter())
                                                    - self.start, 1),
                "procs": self.procs, "images": self.spec["n_train"] + self.spec["n_test"]}
        (out / ".gpu_check.json").write_text(json.dumps(info))
        self.info = {**info, "reused": False}
        return self.info

    def cancel(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


def generate(out: Path, n_train: int, n_test: int, size: tuple[int, int], style: str,
             seed: int, procs: int) -> dict:
    return Generation(out, n_train, n_test, size, style, seed, procs).wait()


def replicated_dataset(root: Path, size: int, n_unique: int, n_total: int) -> Path:
    """``n_total`` training pairs of ``size``² made of ``n_unique`` generated ones (symlinks),
    so the timed steps of one fit stay inside one epoch."""
    spec = {"size": size, "n_unique": n_unique, "n_total": n_total}
    marker = root / ".gpu_check.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    shutil.rmtree(root, ignore_errors=True)
    src = write_dataset(root.parent / f".{root.name}.src", n_unique, 1, size=(size, size),
                        seed=0, overwrite=True)
    stems = sorted(p.stem for p in (src / "train" / "original").glob("*.png"))
    for split, n in (("train", n_total), ("test", 0)):
        for kind in ("original", "mask", "instances"):
            d = root / split / kind
            d.mkdir(parents=True)
            for j in range(n):
                stem = stems[j % len(stems)]
                os.symlink(src / "train" / kind / f"{stem}.png", d / f"{j:05d}-{stem}.png")
    marker.write_text(json.dumps(spec))
    return root


def plain_step_s(s: Settings, module, dm, precision: str, channels_last: bool) -> float:
    """:func:`benchmarks.steptime.plain_step_s` with the run's device, warm-up and steps."""
    return steptime.plain_step_s(module, dm, s.device, precision, s.warmup, s.steps,
                                 channels_last)
