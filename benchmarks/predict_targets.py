"""Prediction cost per target (every ``conf/target``) against ``binary`` on 1600x1200 images.

What ``bloodseg-predict`` does per image, timed in one run for each target: the network on
tiles at the training scale (same U-Net, only the output channels differ), the outputs
upsampled to native size, and the target's post-processing. Real checkpoints give real output
maps (``--ckpt binary=a.ckpt --ckpt contour=b.ckpt ...``); without them the post-processing
runs on what a good network outputs (the targets of the image's own mask, softened) and the
network is an untrained one of the same shape, which costs the same time.

    .venv/bin/python benchmarks/predict_targets.py                  # the real sample image
    .venv/bin/python benchmarks/predict_targets.py --ckpt contour=run/checkpoints/best.ckpt

Prints seconds per image per stage and the ratio of each target to ``binary``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from bloodseg.config import group_config
from bloodseg.inference import Predictor
from bloodseg.io import read_image, read_mask
from bloodseg.labels import instances_from_mask, mask_from_instances
from bloodseg.module import SegmentationModule
from bloodseg.targets import from_config as target_from_config
from bloodseg.targets import names as target_names
from bloodseg.targets import target_class

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = ROOT.parent / "shared" / "data" / "bbbc041seg-sample"
TARGETS = target_names()


def ideal_outputs(name: str, inst: np.ndarray) -> np.ndarray:
    """What a good network outputs for target ``name``: its true targets (as training encodes
    them), as probability maps, slightly blurred."""
    target = target_from_config({"name": name})
    mask = (mask_from_instances(inst, gap_px=1) > 0).astype(np.uint8)
    encoded = target.encode(inst, mask)["target"]
    if encoded.dtype == np.int64:  # class indices -> one map per class
        encoded = np.stack([encoded == k for k in range(target.channels)])
    return np.stack([cv2.GaussianBlur(m, (0, 0), 1.5) for m in encoded.astype(np.float32)])


def predictor_for(target: str, ckpt: str | None, width: int, scale: float) -> Predictor:
    """The trained network of ``ckpt``, else an untrained U-Net of ``width`` (speed only)."""
    if ckpt:
        return Predictor.load(ckpt, device="cpu")
    torch.manual_seed(0)
    model = group_config("model", "unet", in_channels=1, classes=target_class(target).channels,
                         base_channels=width)
    module = SegmentationModule(model=model, target={"name": target},
                                loss={"binary": "bce"}.get(target, target))
    module.hparams["data_info"] = {"color": "gray", "image_size": [256, 256], "scale": scale}
    return Predictor(module.model_spec(), module.net, device="cpu")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image", type=Path, default=SAMPLE / "original.png")
    ap.add_argument("--mask", type=Path, default=SAMPLE / "mask.png")
    ap.add_argument("--ckpt", action="append", default=[], metavar="TARGET=PATH")
    ap.add_argument("--width", type=int, default=16, help="U-Net width without checkpoints")
    ap.add_argument("--scale", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    ckpts = dict(c.split("=", 1) for c in args.ckpt)
    image = read_image(args.image, color="rgb", strict=False)
    inst = instances_from_mask(read_mask(args.mask))
    rows = {}
    for target in TARGETS:
        predictor = predictor_for(target, ckpts.get(target), args.width, args.scale)
        outputs = None if target in ckpts else ideal_outputs(target, inst)
        net, post, cells = [], [], 0
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            maps = predictor.outputs(image)
            t1 = time.perf_counter()
            labels = predictor.labels(maps if outputs is None else outputs)
            t2 = time.perf_counter()
            net.append(t1 - t0)
            post.append(t2 - t1)
            cells = int(labels.max())
        rows[target] = (float(np.median(net)), float(np.median(post)), cells)
    h, w = image.shape[:2]
    base = sum(rows["binary"][:2])
    print(f"bloodseg-predict cost per {w}x{h} image (median of {args.repeats}, "
          f"{torch.get_num_threads()} torch threads, scale {args.scale}); "
          f"truth: {int(inst.max())} cells")
    print(f"{'target':<16} {'network s':>10} {'post s':>8} {'total s':>8} {'cells':>6} "
          f"{'vs binary':>10}")
    for target, (n, p, cells) in rows.items():
        print(f"{target:<16} {n:>10.2f} {p:>8.3f} {n + p:>8.2f} {cells:>6} "
              f"{(n + p) / base:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
