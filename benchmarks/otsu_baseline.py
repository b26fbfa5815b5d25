"""Classical baseline on real BBBC041Seg: Otsu foreground, then CC or bloodseg's watershed.

The numbers a network has to beat. Images are JPEG, masks PNG, paired by file stem; the
truth instances are the 8-connected components (> 15 px) of the gap-separated masks.

For each image: ``otsu_foreground`` (gray, blur, Otsu, opening, pale centres filled), then

* ``otsu+cc``: connected components of the Otsu mask (no splitting),
* ``otsu+watershed``: :class:`bloodseg.postprocess.Watershed` with its defaults.

Prints pixel Dice (mean over images, and pooled over all pixels), count MAE / bias and
micro instance precision / recall / F1 / AP at IoU 0.5 for both, and the time per image.
:func:`score_baselines` is the one place that scores them; ``benchmarks/real_cv.py`` calls
it on each cross-validation fold.

    .venv/bin/python benchmarks/otsu_baseline.py                  # the 10 test images
    .venv/bin/python benchmarks/otsu_baseline.py --split all --per-image --csv out.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bloodseg.io import write_text_atomic  # noqa: E402
from bloodseg.labels import MIN_CELL_AREA, instances_from_mask  # noqa: E402
from bloodseg.metrics import InstanceStats  # noqa: E402
from bloodseg.postprocess import Watershed, otsu_foreground  # noqa: E402
from bloodseg.rundir import PER_IMAGE_COLUMNS  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "bbbc041seg-mini"
METHODS = ("otsu+cc", "otsu+watershed")


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


@dataclass
class BaselineScores:
    """Per-method instance stats and one pixel/timing row per image (``rows``).

    A row: ``file``, ``width``, ``height``, ``dice``, ``inter`` / ``total`` (Dice's
    numerator / denominator, for pooling), ``otsu_ms``, ``watershed_ms`` and, under
    ``methods``, each method's :meth:`InstanceStats.update` row (counts, F1, AP...).
    """

    stats: dict[str, InstanceStats] = field(
        default_factory=lambda: {m: InstanceStats() for m in METHODS})
    rows: list[dict] = field(default_factory=list)

    @property
    def mean_dice(self) -> float:
        return float(np.mean([r["dice"] for r in self.rows])) if self.rows else float("nan")

    @property
    def pooled_dice(self) -> float:
        """2 |A ∩ B| / (|A| + |B|) over all pixels of all images."""
        inter, total = sum(r["inter"] for r in self.rows), sum(r["total"] for r in self.rows)
        return 2 * inter / total if total else 1.0


def score_baselines(items: Iterable[tuple[str, Path, Path]], watershed: Watershed | None = None,
                    on_row: Callable[[dict], None] | None = None) -> BaselineScores:
    """Score Otsu + CC and Otsu + watershed on ``(name, image, mask)`` files at native size."""
    ws = watershed or Watershed()
    scores = BaselineScores()
    for name, img_path, mask_path in items:
        image = cv2.cvtColor(cv2.imread(str(img_path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        truth = instances_from_mask(mask, MIN_CELL_AREA)
        t0 = time.perf_counter()
        fg = otsu_foreground(image)
        t1 = time.perf_counter()
        labels = ws(fg)
        t2 = time.perf_counter()
        i, s = int((fg & mask).sum()), int(fg.sum() + mask.sum())
        predicted = {"otsu+cc": instances_from_mask(fg, MIN_CELL_AREA), "otsu+watershed": labels}
        row = {
            "file": name, "width": image.shape[1], "height": image.shape[0],
            "dice": 2 * i / s if s else 1.0, "inter": i, "total": s,
            "otsu_ms": (t1 - t0) * 1000, "watershed_ms": (t2 - t1) * 1000,
            "methods": {m: scores.stats[m].update(name, truth, predicted[m]) for m in METHODS},
        }
        scores.rows.append(row)
        if on_row is not None:
            on_row(row)
    return scores


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

    items = pairs(args.root, args.split)
    scores = score_baselines(items, on_row=print_row if args.per_image else None)
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
            f"{a['f1']:>6.3f} {a['ap']:>6.3f} {a['mean_matched_iou']:>6.3f}"
        )
    if args.csv:
        write_rows_csv(args.csv, stats["otsu+watershed"].rows)
        print(f"\nwrote {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
