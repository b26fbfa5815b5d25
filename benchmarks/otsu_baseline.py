"""Classical baseline on real BBBC041Seg: Otsu foreground, then CC or bloodseg's watershed.

The numbers a network has to beat. Images are JPEG, masks PNG, paired by file stem; the
truth instances are the 8-connected components (> 15 px) of the gap-separated masks.

For each image: ``otsu_foreground`` (gray, blur, Otsu, opening, pale centres filled), then

* ``otsu+cc``: connected components of the Otsu mask (no splitting),
* ``otsu+watershed``: :class:`bloodseg.postprocess.Watershed` with its defaults.

Prints pixel Dice (mean over images, and pooled over all pixels), count MAE / bias and
micro instance precision / recall / F1 / AP at IoU 0.5 for both, and the time per image.
:mod:`bloodseg.baselines` scores them, as it does for ``benchmarks/real_cv.py``
(each cross-validation fold) and ``bloodseg-report --baselines``.

    .venv/bin/python -m benchmarks.otsu_baseline                  # the 10 test images
    .venv/bin/python -m benchmarks.otsu_baseline --split all --per-image --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import cv2
import numpy as np

from bloodseg.baselines import OTSU_CC, OTSU_WATERSHED, otsu_items, score_otsu
from bloodseg.data.bbbc041seg import list_split
from bloodseg.io import write_text_atomic
from bloodseg.rundir import PER_IMAGE_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "bbbc041seg-mini"
METHODS = (OTSU_CC, OTSU_WATERSHED)


def write_rows_csv(path: Path, rows: list[dict]) -> Path:
    """Per-image instance rows as CSV, with the columns of a run's ``per_image.csv``."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, PER_IMAGE_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


def print_row(row: dict) -> None:
    cc, ws = row["methods"]["otsu+cc"], row["methods"]["otsu+watershed"]
    print(
        f"{row['file'][:8]} {row['width']}x{row['height']} dice {row['dice']:.3f} "
        f"true {ws['true_count']:3d}  cc {cc['pred_count']:3d} "
        f"(f1 {cc['f1']:.2f})  watershed {ws['pred_count']:3d} "
        f"(f1 {ws['f1']:.2f})"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=REAL)
    ap.add_argument("--split", choices=["train", "test", "all"], default="test")
    ap.add_argument("--per-image", action="store_true", help="print one line per image")
    ap.add_argument("--csv", type=Path, default=None, help="per-image rows (otsu+watershed)")
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads")
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)

    samples = [x for split in (["train", "test"] if args.split == "all" else [args.split])
               for x in list_split(args.root, split)]
    if not samples:
        raise SystemExit(f"no image/mask pairs under {args.root} ({args.split})")
    items = otsu_items(samples)
    scores = score_otsu(items, on_row=print_row if args.per_image else None)
    stats = scores.stats

    print(
        f"\nOtsu baseline on {args.root.name}/{args.split}: {len(items)} images "
        "(a small sample; quote it as such)"
    )
    print(
        f"pixel Dice: {scores.mean_dice:.4f} mean over images, {scores.pooled_dice:.4f} pooled; "
        f"Otsu {np.median([r['otsu_ms'] for r in scores.rows]):.0f} ms/img, watershed "
        f"{np.median([r['watershed_ms'] for r in scores.rows]):.0f} "
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
            f"{a['f1']:>6.3f} {a['ap50']:>6.3f} {a['mean_matched_iou']:>6.3f}"
        )
    if args.csv:
        write_rows_csv(args.csv, stats["otsu+watershed"].rows)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
