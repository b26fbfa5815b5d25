"""Training-step overhead of Lightning vs a plain PyTorch loop, and loader throughput.

The same network, batch size, data and per-step work (forward, BCE loss, backward, Adam
step, torchmetrics update) run (a) as ``SegmentationModule`` inside a Lightning
``Trainer`` and (b) as a hand-written loop; (c) the cached DataLoader runs alone. All
three are measured in this one process after warm-up steps, and printed with their ratios.

    python benchmarks/train_step.py                          # CPU, narrow U-Net, 128 px
    python benchmarks/train_step.py --device cuda --base-channels 64 --size 256 --steps 100

Goals: Lightning step time <= 1.05x the plain loop's; loader >= 10x the model's images/s.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytorch_lightning as pl
import torch

from benchmarks.steptime import StepTimer, loader_s_per_batch, make_module, plain_step_s
from bloodseg.data.datamodule import BloodCellDataModule
from bloodseg.data.synthetic import write_dataset


def lightning_time(args, dm) -> float:
    timer = StepTimer(args.warmup, args.steps)
    trainer = pl.Trainer(
        accelerator="gpu" if args.device.startswith("cuda") else "cpu",
        devices=1,
        max_steps=args.warmup + args.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        precision=args.precision,
        num_sanity_val_steps=0,
    )
    trainer.fit(make_module("unet", args.base_channels), train_dataloaders=dm.train_dataloader())
    return timer.seconds_per_step()


def plain_time(args, dm) -> float:
    return plain_step_s(make_module("unet", args.base_channels), dm, args.device,
                        args.precision, args.warmup, args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--repeats", type=int, default=2, help="alternate a/b this many times")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(
            Path(tmp) / "data", n_train=48, n_test=2, size=(args.size, args.size), seed=0
        )
        dm = BloodCellDataModule(
            str(root),
            color="gray",
            image_size=args.size,
            batch_size=args.batch_size,
            num_workers=args.workers,
            synthetic={"n_train": 48},
        )
        dm.setup("fit")
        # alternate the two so drifting machine load hits both alike; keep the best of each
        light, plain = [], []
        for _ in range(args.repeats):
            light.append(lightning_time(args, dm))
            plain.append(plain_time(args, dm))
        t_light, t_plain, t_load = (min(light), min(plain),
                                    loader_s_per_batch(dm, args.steps, args.warmup))

    bs = args.batch_size
    print(
        f"device={args.device} size={args.size} batch={bs} unet base={args.base_channels} "
        f"steps={args.steps} (+{args.warmup} warm-up) precision={args.precision} "
        f"threads={torch.get_num_threads()}"
    )
    print(f"{'':24}{'ms/step':>10}{'images/s':>12}")
    for name, t in (
        ("(a) Lightning Trainer", t_light),
        ("(b) plain PyTorch loop", t_plain),
        ("(c) DataLoader alone", t_load),
    ):
        print(f"{name:24}{t * 1e3:>10.1f}{bs / t:>12.1f}")
    print(f"Lightning / plain step time: {t_light / t_plain:.3f}  (goal <= 1.05)")
    print(f"loader / model images/s:     {t_plain / t_load:.1f}x  (goal >= 10)")


if __name__ == "__main__":
    main()
