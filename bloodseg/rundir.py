"""The run folder: the one place that writes and reads what a run leaves behind.

``bloodseg-train`` / ``bloodseg-evaluate`` write a run folder; ``bloodseg-report`` reads it.
Both sides go through this module, so the schema below is the only list of files::

    <run>/
      meta.json            what ran: model, data, optimizer, epochs, time, status (train)
      metrics.csv          per-step/epoch metrics (bloodseg.loggers.CSVLogger; a resume
                           appends to it)
      test_metrics.json    test metrics + the checkpoint and data that produced them
      per_image.csv        one row per test image: counts, TP/FP/FN, F1, AP
      size_hist.csv        predicted vs true cell-area histogram (common bins)
      tuning.json          post-processing parameters chosen on training images, every
                           value tried and its scores (only with tune)
      postprocess.json     the tuned post-processing, tied to checkpoints/best.ckpt by its
                           sha256 (bloodseg.inference reads it; written by tune and
                           bloodseg-tune, never into a checkpoint)
      samples/             index.json + <name>_{image,mask,prob,instances,truth}.png test
                           samples at native size (truth: the true instances)
      checkpoints/         best.ckpt, last.ckpt
      error.txt            the exception of a failed run (absent when it succeeded)
      .hydra/              the composed config (Hydra)
"""

from __future__ import annotations

import csv
import io
import json
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bloodseg.io import write_png_atomic, write_text_atomic

META = "meta.json"
METRICS = "metrics.csv"
TEST_METRICS = "test_metrics.json"
PER_IMAGE = "per_image.csv"
SIZE_HIST = "size_hist.csv"
SAMPLES = "samples"
ERROR = "error.txt"
TUNING = "tuning.json"
TUNED = "postprocess.json"
SAMPLE_KINDS = ("image", "mask", "prob", "instances")

PER_IMAGE_COLUMNS = [
    "file", "true_count", "pred_count", "count_error", "abs_count_error", "tp", "fp", "fn",
    "precision", "recall", "f1", "ap", "mean_matched_iou",
]


class RunDirError(ValueError):
    """A run folder's file is missing or unreadable; the message names it."""


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[dict | Sequence]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(k, "") for k in header] if isinstance(row, dict) else row)
    return write_text_atomic(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); re-run the step that writes it") from e


# -- writers -------------------------------------------------------------------------------


def write_meta(out: str | Path, meta: dict) -> Path:
    return write_text_atomic(Path(out) / META, json.dumps(meta, indent=2, default=str))


def write_test_metrics(out: str | Path, metrics: dict, ckpt_path: str | Path | None,
                       tta: bool, data_info: dict) -> Path:
    """``test_metrics.json``: the metrics plus what produced them."""
    payload = {"ckpt_path": str(ckpt_path), "tta": tta, **data_info, "metrics": metrics}
    return write_text_atomic(Path(out) / TEST_METRICS, json.dumps(payload, indent=2))


def write_tuning(out: str | Path, tuning: dict) -> Path:
    """``tuning.json``: the post-processing parameters chosen after training and the grid."""
    return write_text_atomic(Path(out) / TUNING, json.dumps(tuning, indent=2, default=str))


def write_per_image(out: str | Path, rows: Sequence[dict]) -> Path:
    return _write_csv(Path(out) / PER_IMAGE, PER_IMAGE_COLUMNS, rows)


def write_size_hist(out: str | Path, pred_areas: np.ndarray, true_areas: np.ndarray,
                    bins: int = 30) -> Path:
    """Histogram of predicted and true cell areas on common bins (every cell falls in one)."""
    edges = np.histogram_bin_edges(np.concatenate([pred_areas, true_areas]), bins)
    counts, _ = np.histogram(pred_areas, edges)
    true_counts, _ = np.histogram(true_areas, edges)
    rows = [(f"{a:.1f}", f"{b:.1f}", c, t)
            for a, b, c, t in zip(edges[:-1], edges[1:], counts, true_counts)]
    return _write_csv(Path(out) / SIZE_HIST, ["bin_start", "bin_end", "pred_cells", "true_cells"],
                      rows)


def write_samples(out: str | Path, samples: Sequence[dict]) -> None:
    """Test samples for the report: dicts with name, image (RGB uint8), mask {0,1}, prob
    (float 0..1), instances (labels), true_count and optionally truth (true labels)."""
    folder = Path(out) / SAMPLES
    index = []
    for s in samples:
        base = folder / s["name"]
        write_png_atomic(f"{base}_image.png", s["image"])
        write_png_atomic(f"{base}_mask.png", s["mask"] * 255)
        write_png_atomic(f"{base}_prob.png", (s["prob"] * 255).round().astype(np.uint8))
        write_png_atomic(f"{base}_instances.png", s["instances"].astype(np.uint16))
        if s.get("truth") is not None:
            write_png_atomic(f"{base}_truth.png", s["truth"].astype(np.uint16))
        index.append({"name": s["name"], "true_count": s["true_count"],
                      "pred_count": int(s["instances"].max())})
    if index:
        write_text_atomic(folder / "index.json", json.dumps(index, indent=2))


def write_error(out: str | Path, error: BaseException) -> Path:
    """Record why a run failed (the full traceback), for SLURM/nohup users and the report."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return write_text_atomic(Path(out) / ERROR, text)


def clear_error(out: str | Path) -> None:
    (Path(out) / ERROR).unlink(missing_ok=True)


# -- readers -------------------------------------------------------------------------------


@dataclass
class SampleFiles:
    """One saved test image: its counts and the four PNGs."""

    name: str
    true_count: int | None
    pred_count: int | None
    files: dict[str, Path]


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise RunDirError(f"{folder}: no {META}; is this a bloodseg-train output folder?")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return meta


def read_test_metrics(folder: str | Path) -> dict[str, float] | None:
    path = Path(folder) / TEST_METRICS
    if not path.is_file():
        return None
    return {k: float(v) for k, v in read_json(path).get("metrics", {}).items()}


def read_error(folder: str | Path) -> str | None:
    """The last line of a failed run's traceback (the exception), or None."""
    path = Path(folder) / ERROR
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "failed"


def read_samples(folder: str | Path) -> tuple[list[SampleFiles], list[str]]:
    """Saved samples and the problems found (a sample whose PNGs are missing is skipped)."""
    folder = Path(folder) / SAMPLES
    index_file = folder / "index.json"
    if not index_file.is_file():
        return [], []
    samples, problems = [], []
    for entry in read_json(index_file):
        name = str(entry["name"])
        files = {k: folder / f"{name}_{k}.png" for k in SAMPLE_KINDS}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            problems.append(f"{folder}: sample {name!r} skipped, missing {', '.join(missing)}")
            continue
        samples.append(SampleFiles(name, entry.get("true_count"), entry.get("pred_count"), files))
    return samples, problems
