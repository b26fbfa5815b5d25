"""Benchmark: bloodseg's Watershed vs the scikit-image recipe on merged 1600x1200 masks.

Each input is a foreground mask in which touching cells are MERGED (as a network or Otsu
tends to predict them), with the exact instances known:

* ``--source real``: the 40 BBBC041Seg masks in ``../shared/data/bbbc041seg-mini``. Truth =
  8-connected components (> 15 px) of the gap-separated mask; input = the mask with its gaps
  closed by a ``--close`` x ``--close`` elliptic closing (0 = keep the gaps).
* ``--source synthetic``: ``bloodseg.data.synthetic.render_smear`` images; truth = its
  instances, input = ``instances > 0`` (no gaps at all).
* ``--source network``: what ``bloodseg-predict`` post-processes: the maps of a model
  (``--weights``, default the shipped ``count_real``) on the 40 real smears (ONNX Runtime);
  truth = the masks' instances. The mask-only methods get the thresholded foreground at native
  size; two more rows are the model's own post-processing (a marker watershed on its distance
  map): ``bloodseg native`` (on the maps resized to the smear) and ``bloodseg predict`` (on the
  network's maps, labels resized into the native foreground: ``predict.postprocess_at=network``,
  bloodseg-predict's default; timed with that resize).

Methods, all on the same masks, one thread:

* ``cc``: connected components (what you get without splitting);
* ``bloodseg``: :class:`bloodseg.postprocess.Watershed` with its defaults;
* ``skimage``: ``scipy.ndimage.distance_transform_edt`` + ``skimage.feature.peak_local_max``
  (per component, ``min_distance`` = the same auto rule as bloodseg: 0.4 x median inscribed
  radius) + ``skimage.segmentation.watershed(-dist, markers, mask)``, followed by the same
  small-instance filter as bloodseg.

Prints per method: ms per image (median over images of the best of ``--repeat`` runs),
count MAE / bias and micro instance F1 / AP at IoU 0.5, then the speed ratio (scikit-image's
time over bloodseg's; with ``--source network``, over ``bloodseg predict``'s).

    .venv/bin/python benchmarks/postprocess.py --source real --close 5
    .venv/bin/python benchmarks/postprocess.py --source synthetic --n 20 --style bbbc041
    .venv/bin/python benchmarks/postprocess.py --source network
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bloodseg.labels import MIN_CELL_AREA, instances_from_mask
from bloodseg.metrics import InstanceStats
from bloodseg.postprocess import Watershed
from bloodseg.postprocess.baselines import skimage_reference

ROOT = Path(__file__).resolve().parents[1]

REAL = ROOT.parent / "shared" / "data" / "bbbc041seg-mini"


Item = tuple[str, np.ndarray, Any]  # name, true instances, input (a mask, or a model's maps)


def real_items(root: Path, close: int, limit: int | None) -> Iterator[Item]:
    files = sorted(root.glob("*/mask/*.png"))
    if not files:
        raise SystemExit(f"no masks under {root}/*/mask/; pass --root")
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close)) if close else None
    for f in files[:limit]:
        mask = (cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        truth = instances_from_mask(mask, MIN_CELL_AREA)
        merged = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel) if close else mask
        yield f.stem, truth, merged


def synthetic_items(n: int, style: str, seed: int, width: int, height: int) -> Iterator[Item]:
    try:
        from bloodseg.data.synthetic import render_smear
    except ImportError as e:  # the generator is another module of the project
        raise SystemExit(f"--source synthetic needs bloodseg.data.synthetic ({e})") from e
    for i in range(n):
        _, inst = render_smear(np.random.default_rng([seed, i]), width, height, style)
        yield f"{style}_{i:03d}", inst.astype(np.int32), (inst > 0).astype(np.uint8)


def network_items(root: Path, predictor: Any, limit: int | None) -> Iterator[Item]:
    """(name, true instances, (network maps, the same resized to the smear)) per real pair."""
    from bloodseg.data.bbbc041seg import list_split, read_native_instances
    from bloodseg.transforms import upsample

    samples = sorted((s for split in ("train", "test") for s in list_split(root, split)),
                     key=lambda s: s.image.name)[:limit]
    if not samples:
        raise SystemExit(f"no pairs under {root}/{{train,test}}/; pass --root")
    for s in samples:
        image = predictor.read(s.image)
        net = predictor.network_outputs(image)
        yield s.name, read_native_instances(s), (net, upsample(net, image.shape[:2]))


def best_ms(fn: Callable, x: Any, repeat: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn(x)
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", choices=["real", "synthetic", "network"], default="real")
    ap.add_argument("--root", type=Path, default=REAL, help="real: the Kaggle-layout folder")
    ap.add_argument("--close", type=int, default=5, help="real: closing size that merges cells")
    ap.add_argument("--limit", type=int, default=None, help="real, network: first N only")
    ap.add_argument("--weights", default="count_real",
                    help="network: a shipped model's name or a model file")
    ap.add_argument("--n", type=int, default=20, help="synthetic: number of images")
    ap.add_argument("--style", default="bbbc041", help="synthetic: bbbc041 or bccd")
    ap.add_argument("--size", default="1600x1200", help="synthetic: WIDTHxHEIGHT")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timing: best of N runs per image")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    ap.add_argument("--ref-min-distance-frac", type=float, default=0.4)
    args = ap.parse_args(argv)

    cv2.setNumThreads(args.threads)
    ws = Watershed()
    mask_methods: dict[str, Callable] = {
        "cc": lambda m: instances_from_mask(m, ws.min_area),
        "bloodseg": ws,
        "skimage": skimage_reference(args.ref_min_distance_frac, ws.min_area_frac),
    }
    methods: dict[str, Callable] = dict(mask_methods)  # each takes an item's input
    fastest = "bloodseg"
    if args.source == "real":
        items = real_items(args.root, args.close, args.limit)
        gaps = f"gaps closed {args.close}x{args.close}" if args.close else "gaps kept"
        what = f"real BBBC041Seg masks ({args.root.name}), {gaps}"
    elif args.source == "network":
        import torch

        from bloodseg.inference import Predictor
        from bloodseg.modelfile import model_file

        torch.set_num_threads(args.threads)
        path = Path(args.weights) if Path(args.weights).is_file() \
            else model_file(weights=args.weights)
        predictor = Predictor.load(path, device="cpu", backend="auto",
                                   postprocess_at="network")
        items = network_items(args.root, predictor, args.limit)
        threshold = predictor.postprocess.threshold

        def on_mask(fn: Callable) -> Callable:
            return lambda maps: fn(predictor.foreground(maps[1]) > threshold)

        methods = {name: on_mask(fn) for name, fn in mask_methods.items()}
        methods["bloodseg native"] = lambda maps: predictor.postprocess(maps[1])
        methods["bloodseg predict"] = lambda maps: predictor.labels(maps[1], maps[0])
        fastest = "bloodseg predict"
        what = (f"{path.name}'s maps ({predictor.backend}) on the real smears of "
                f"{args.root.name}; mask methods on its foreground > {threshold}")
    else:
        w, h = (int(v) for v in args.size.lower().split("x"))
        items = synthetic_items(args.n, args.style, args.seed, w, h)
        what = f"synthetic {args.style} {w}x{h}, instances > 0 (no gaps)"

    stats = {name: InstanceStats() for name in methods}
    times: dict[str, list[float]] = {name: [] for name in methods}
    shapes: set[tuple[int, ...]] = set()
    for name, truth, x in items:
        shapes.add(truth.shape)
        for method, fn in methods.items():
            ms, labels = best_ms(fn, x, args.repeat)
            times[method].append(ms)
            stats[method].update(name, truth, labels)

    n_img = len(times["cc"])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{what}: {n_img} images, shapes {sorted(shapes)}")
    print(
        f"OpenCV threads {args.threads}, best of {args.repeat} runs per image, "
        f"{os.cpu_count()} CPUs, load average {load:.1f} at the end"
    )
    true_mean = stats["cc"].aggregate()["true_count_mean"]
    print(f"true cells per image: {true_mean:.1f}\n")
    header = (
        f"{'method':<16} {'ms/img med':>10} {'ms/img mean':>11} {'count MAE':>9} "
        f"{'bias':>7} {'F1@0.5':>7} {'AP@0.5':>7} {'mIoU':>6}"
    )
    print(header)
    print("-" * len(header))
    for method in methods:
        a = stats[method].aggregate()
        t = np.array(times[method])
        print(
            f"{method:<16} {np.median(t):>10.1f} {t.mean():>11.1f} {a['count_mae']:>9.2f} "
            f"{a['count_bias']:>+7.2f} {a['f1']:>7.3f} {a['ap50']:>7.3f} "
            f"{a['mean_matched_iou']:>6.3f}"
        )
    speed = np.median(times["skimage"]) / np.median(times[fastest])
    print(f"\n{fastest} vs skimage: {speed:.1f}x faster (median ms/img)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
