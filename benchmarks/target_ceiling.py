"""How well a perfect network could count: the true distance targets of real masks, decoded.

Each real pair's instances (the connected components of its gap-drawn mask) give the
``target=distance`` maps (foreground, per-cell normalised distance) at the network's working
scale, made as training makes them (:func:`bloodseg.data.dataset.load_sample`: instances at
native size, then resized without blending). ``postprocess=distance`` decodes them: upsampled
to native size, scored against the native instances, exactly as a recipe's test stage scores a
network's outputs (:mod:`bloodseg.tuning`). Per (scale, blur) it prints

* ``default``: the post-processing as configured (``conf/postprocess/distance.yaml``, frame-cut
  cut-off 0.4 as the benchmark's recipes);
* ``best F1`` / ``best count``: the tuning grid's best point for each metric, chosen on these
  same images (an optimistic ceiling, never a result).

``--blur`` softens the maps with a Gaussian of that many pixels, closer to what a good network
outputs. A network can only approach these numbers: they bound what the target, its scale and
its decoding allow, so a bar above them needs another target, scale or decoder, not more
training.

    python -m benchmarks.target_ceiling                       # 40 shared pairs, scale 0.5
    python -m benchmarks.target_ceiling --scales 0.5,1 --blur 0,1.5

About 7 CPU minutes per (scale, blur) on 40 images of 1600x1200 (the tuning grid's 96 tries).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from bloodseg import tuning
from bloodseg.config import group_config
from bloodseg.cv.folds import list_pairs
from bloodseg.data.bbbc041seg import read_native_instances
from bloodseg.data.dataset import load_sample
from bloodseg.labels import CUT_CELL_FRAC
from bloodseg.spec import Postprocess
from bloodseg.targets import from_config as target_from_config

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT.parent / "shared" / "data" / "bbbc041seg-mini"
DISTANCE = target_from_config({"name": "distance"})  # as training encodes it


def target_items(root: Path, scale: float, blur: float, max_images: int | None = None
                 ) -> list[tuning.TuningItem]:
    """One :class:`~bloodseg.tuning.TuningItem` per pair (the first ``max_images``): its
    true distance maps at ``scale`` (softened by a ``blur``-pixel Gaussian if > 0) and its
    native instances."""
    items = []
    for sample in list_pairs(root)[:max_images]:
        small = load_sample(sample, "gray", scale=scale)
        maps = DISTANCE.encode(small["instances"], small["mask"])["target"]
        if blur > 0:
            maps = np.stack([cv2.GaussianBlur(m, (0, 0), blur) for m in maps])
        items.append(tuning.TuningItem(sample.name, maps, read_native_instances(sample)))
    return items


def ceiling(items: list[tuning.TuningItem]) -> dict[str, dict]:
    """Scores of the default post-processing and of the grid's best point per metric."""
    post = Postprocess.from_config(group_config(
        "postprocess", "distance", cut_cell_frac=CUT_CELL_FRAC)).build()
    rows = tuning.search(post, items).rows
    return {"default": tuning.score(post, items), "best F1": tuning.best_row(rows, "f1"),
            "best count": tuning.best_row(rows, "count_mae")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="a Kaggle-layout folder")
    ap.add_argument("--scales", default="0.5", help="comma-separated working scales")
    ap.add_argument("--blur", default="0", help="comma-separated Gaussian sigmas (px)")
    ap.add_argument("--max-images", type=int, default=None, help="the first N pairs only")
    args = ap.parse_args(argv)
    try:
        scales = [float(s) for s in args.scales.split(",")]
        blurs = [float(b) for b in args.blur.split(",")]
        n = len(list_pairs(args.root)[:args.max_images])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"true distance targets of {n} pairs of {args.root}, decoded by postprocess=distance "
          "and scored at native size (F1/AP at IoU 0.5)")
    print("| scale | blur px | post-processing | F1@0.5 | AP50 | count MAE | count bias | "
          "CPU s |\n|---:|---:|---|---:|---:|---:|---:|---:|")
    for scale in scales:
        for blur in blurs:
            t0 = time.process_time()
            rows = ceiling(target_items(args.root, scale, blur, args.max_images))
            cpu = time.process_time() - t0
            for label, r in rows.items():
                params = ", ".join(f"{k} {r[k]:g}" for k in ("marker_threshold",
                                   "min_marker_area_frac", "cut_cell_frac") if k in r)
                print(f"| {scale:g} | {blur:g} | {label}{f' ({params})' if params else ''} | "
                      f"{r['f1']:.3f} | {r['ap50']:.3f} | {r['count_mae']:.2f} | "
                      f"{r['count_bias']:+.2f} | {cpu:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
