"""Classical baseline on real BBBC041Seg: Otsu foreground, then CC or bloodseg's watershed.

The numbers a network has to beat. Images are JPEG, masks PNG, paired by file stem; the
truth instances are the 8-connected components (> 15 px) of the gap-separated masks.

For each image: ``otsu_foreground`` (gray, blur, Otsu, opening, pale centres filled), then

* ``otsu+cc``: connected components of the Otsu mask (no splitting),
* ``otsu+watershed``: :class:`bloodseg.postprocess.Watershed` with its defaults.

Prints pixel Dice (mean over images, and pooled over all pixels), count MAE / bias and
micro instance precision / recall / F1 / AP at IoU 0.5 for both, and the time per image.

    .venv/bin/python benchmarks/otsu_baseline.py                  # the 10 test images
    .venv/bin/python benchmarks/otsu_baseline.py --split all --per-image --csv out.csv
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bloodseg.labels import MIN_CELL_AREA, instances_from_mask  # noqa: E402
from bloodseg.metrics import InstanceStats  # noqa: E402
from bloodseg.postprocess import Watershed, otsu_foreground  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "bbbc041seg-mini"


def pairs(root: Path, split: str) -> list[tuple[str, Path, Path]]:
    splits = ["train", "test"] if split == "all" else [split]
    out = []
    for s in splits:
        masks = {p.stem: p for p in (root / s / "mask").glob("*.png")}
        for img in sorted((root / s / "original").iterdir()):
            if img.stem in masks and img.suffix.lower() in (".jpg", ".jpeg", ".png"):
                out.append((img.stem, img, masks[img.stem]))
    if not out:
        raise SystemExit(f"no image/mask pairs under {root}/{{{','.join(splits)}}}/")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REAL)
    ap.add_argument("--split", choices=["train", "test", "all"], default="test")
    ap.add_argument("--per-image", action="store_true", help="print one line per image")
    ap.add_argument("--csv", type=Path, default=None, help="per-image rows (otsu+watershed)")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)

    ws = Watershed()
    stats = {"otsu+cc": InstanceStats(), "otsu+watershed": InstanceStats()}
    dices, inter, total = [], 0, 0
    ms = {"otsu": [], "watershed": []}
    items = pairs(args.root, args.split)
    for name, img_path, mask_path in items:
        image = cv2.cvtColor(cv2.imread(str(img_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        truth = instances_from_mask(mask, MIN_CELL_AREA)
        t0 = time.perf_counter()
        fg = otsu_foreground(image)
        t1 = time.perf_counter()
        labels = ws(fg)
        t2 = time.perf_counter()
        ms["otsu"].append((t1 - t0) * 1000)
        ms["watershed"].append((t2 - t1) * 1000)
        i, s = int((fg & mask).sum()), int(fg.sum() + mask.sum())
        dices.append(2 * i / s if s else 1.0)
        inter, total = inter + i, total + s
        row_cc = stats["otsu+cc"].update(name, truth, instances_from_mask(fg, MIN_CELL_AREA))
        row_ws = stats["otsu+watershed"].update(name, truth, labels)
        if args.per_image:
            print(
                f"{name[:8]} {image.shape[1]}x{image.shape[0]} dice {dices[-1]:.3f} "
                f"true {row_ws['true_count']:3d}  cc {row_cc['pred_count']:3d} "
                f"(f1 {row_cc['f1']:.2f})  watershed {row_ws['pred_count']:3d} "
                f"(f1 {row_ws['f1']:.2f})"
            )

    print(
        f"\nOtsu baseline on {args.root.name}/{args.split}: {len(items)} images "
        "(a small sample; quote it as such)"
    )
    print(
        f"pixel Dice: {np.mean(dices):.4f} mean over images, {2 * inter / total:.4f} pooled; "
        f"Otsu {np.median(ms['otsu']):.0f} ms/img, watershed {np.median(ms['watershed']):.0f} "
        f"ms/img (median, {args.threads} thread)"
    )
    true_mean = stats["otsu+cc"].aggregate()["true_count_mean"]
    print(f"true cells per image: {true_mean:.1f}\n")
    header = (
        f"{'method':<15} {'count':>6} {'MAE':>6} {'bias':>7} {'prec':>6} {'recall':>6} "
        f"{'F1@0.5':>6} {'AP@0.5':>6} {'mIoU':>6}"
    )
    print(header)
    print("-" * len(header))
    for method, st in stats.items():
        a = st.aggregate()
        print(
            f"{method:<15} {a['pred_count_mean']:>6.1f} {a['count_mae']:>6.2f} "
            f"{a['count_bias']:>+7.2f} {a['precision']:>6.3f} {a['recall']:>6.3f} "
            f"{a['f1']:>6.3f} {a['ap']:>6.3f} {a['mean_matched_iou']:>6.3f}"
        )
    if args.csv:
        stats["otsu+watershed"].to_csv(args.csv)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
