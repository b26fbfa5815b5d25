"""``bloodseg-report``: figures and a results table from the run folders of a sweep.

Reproduces the study's per-experiment pictures (IoU and loss curves, train vs validation
per epoch, and test-image panels) and adds what the study lacked: one results table over
all experiments, predicted-vs-true cell counts and, optionally, a README section that
links everything. It only reads files, so it runs anywhere matplotlib does (no torch)::

    bloodseg-report experiments/runs/multirun/2024-06-01_12-00-00 --out experiments/figures
    bloodseg-report experiments/demo/runs --out experiments/demo/figures --readme README.md

A run folder is any folder holding ``meta.json`` (written by ``bloodseg-train``) next to
``metrics.csv``; ``test_metrics.json``, ``per_image.csv``, ``size_hist.csv`` and
``samples/`` are used when present. Written into ``--out`` (each file atomically):

- ``<name>_iou.png``, ``<name>_loss.png``: train vs validation per epoch, with the best
  epoch (lowest validation loss) and the early-stopping epoch marked;
- ``<name>_panel.png``: input | ground truth | probability | watershed instances;
- ``results.csv``, ``results.md``: one row per experiment (test metrics, epochs, time);
- ``counts.png``: predicted vs true cells per test image; ``comparison.png``: bars.

Every figure names its experiment and the data it came from (synthetic demo or real
BBBC041Seg), so a synthetic smoke-test picture is never mistaken for a result. From Python::

    run = load_run("experiments/runs/Unet_grayscale/2024-06-01_12-00-00")
    run.history[["train/iou", "val/iou"]]     # one row per epoch
    plot_curves(run, Path("figures"))
    table = results_table([run])
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import numpy as np
import pandas as pd
from matplotlib import colormaps, patheffects
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import offset_copy

from bloodseg.io import (
    DataError,
    decode,
    read_image,
    read_instances,
    read_mask,
    to_uint8,
    write_bytes_atomic,
    write_text_atomic,
)
from bloodseg.render import overlay, to_rgb_uint8

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"


def markers(section: str) -> tuple[str, str]:
    """README markers of a section: ``results`` (make reproduce) or ``demo`` (make demo)."""
    return f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
SAMPLE_KINDS = ("image", "mask", "prob", "instances")
TRAIN, VAL = "#1f77b4", "#ff7f0e"
BEST, STOP = "#2ca02c", "#d62728"
DPI = 120
# Panels of tiny (e.g. 64x64 test) images are upscaled so the contours stay smooth lines.
MIN_PANEL_SIDE = 320
NUMBER_COLOR = (200 / 255, 0.0, 0.0)  # render.overlay's number colour, as matplotlib RGB

# (results.csv column, results.md header) in table order
COLUMNS = [
    ("experiment", "experiment"),
    ("model", "model"),
    ("color", "color"),
    ("data_kind", "data"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("count_mae", "count MAE"),
    ("count_bias", "count bias"),
    ("inst_f1", "inst. F1@0.5"),
    ("inst_ap", "AP@0.5"),
    ("epochs_run", "epochs run"),
    ("stopped_epoch", "stopped epoch"),
    ("train_time_s", "train time (s)"),
    ("params_m", "params (M)"),
]
TEST_KEYS = {
    "dice": "test/dice", "iou": "test/iou", "precision": "test/precision",
    "recall": "test/recall", "count_mae": "test/count_mae", "count_bias": "test/count_bias",
    "inst_f1": "test/inst_f1", "inst_ap": "test/inst_ap",
}
# results.csv only: what the README needs for the study's "Epoch : 100, Batch : 4, ..." line
EXTRA_COLUMNS = ["optimizer", "lr", "scheduler", "batch_size", "max_epochs", "loss", "run_dir"]


def data_caption(kind: str | None) -> str:
    """How figures name their data: the demo data must never pass for the real dataset."""
    kind = kind if isinstance(kind, str) and kind else "unknown"
    return {"synthetic": "synthetic data (demo)", "real": "real BBBC041Seg"}.get(
        kind, f"{kind} data")


def _short_target(spec: Any) -> str | None:
    """``torch.optim.lr_scheduler.StepLR`` -> ``StepLR`` (configs or plain strings)."""
    target = spec.get("_target_") if isinstance(spec, dict) else spec
    return str(target).rsplit(".", 1)[-1] if target else None


def _join(*parts: Any) -> str:
    return " · ".join(str(p) for p in parts if p)


def safe_stem(label: str) -> str:
    """A file-name-safe form of an experiment label (README links must not need escaping)."""
    return re.sub(r"[^\w.+-]+", "_", label).strip("_") or "run"


# -- loading ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One saved test image: its counts and the four PNGs the watershed callback wrote."""

    name: str
    true_count: int | None
    pred_count: int | None
    files: dict[str, Path]


@dataclass
class Run:
    """Everything one run folder holds, as plain Python / pandas objects.

    ``history`` has one row per epoch (index ``epoch``, Lightning's 0-based count) and
    the logged columns (``train/loss``, ``train/iou``, ``val/loss``, ``val/iou``, ``lr-*``,
    ...); ``test`` maps ``test/...`` names to values. ``label`` is ``meta["name"]`` unless
    that is shared with another run of the report (see :func:`assign_labels`).
    """

    path: Path
    meta: dict
    history: pd.DataFrame
    test: dict[str, float]
    per_image: pd.DataFrame | None = None
    size_hist: pd.DataFrame | None = None
    samples: list[Sample] = field(default_factory=list)
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def stem(self) -> str:
        return safe_stem(self.label)

    @property
    def data_kind(self) -> str | None:
        return self.meta.get("data_kind")

    @property
    def caption(self) -> str:
        return data_caption(self.data_kind)

    @property
    def stopped_epoch(self) -> int | None:
        # Lightning reports 0 when early stopping never fired
        value = self.meta.get("stopped_epoch")
        return int(value) if value else None

    @property
    def best_epoch(self) -> int | None:
        if "val/loss" not in self.history or self.history["val/loss"].isna().all():
            return None
        return int(self.history["val/loss"].idxmin())

    def setup_line(self) -> str:
        """Model, colour and training setup, like the study's "Training History" line."""
        m = self.meta
        opt = m.get("optimizer") or {}
        parts = [m.get("model") and _short_target(m["model"]), m.get("color")]
        if m.get("batch_size"):
            parts.append(f"batch {m['batch_size']}")
        if opt:
            lr = opt.get("lr") if isinstance(opt, dict) else None
            parts.append(f"{_short_target(opt)}" + (f" lr {lr:g}" if lr is not None else ""))
        if "scheduler" in m:
            parts.append(_short_target(m["scheduler"]) or "no scheduler")
        return _join(*parts)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); re-run the step that writes it") from e


def load_history(path: str | Path) -> pd.DataFrame:
    """Per-epoch metrics from a Lightning CSVLogger ``metrics.csv``.

    The logger writes sparse rows: train and validation epoch metrics land on different
    rows of the same epoch, step-level losses on their own rows, and LearningRateMonitor
    rows carry a step but no epoch. Test metrics are left out (see :attr:`Run.test`).
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raw = pd.DataFrame()
    if raw.empty or "epoch" not in raw:
        return pd.DataFrame(index=pd.Index([], dtype=int, name="epoch"))
    raw = raw.drop(columns=[c for c in raw if c.startswith("test/")])
    # LR rows are logged as an epoch starts, so they belong to the epoch of the next row
    raw["epoch"] = raw["epoch"].bfill().ffill()
    raw = raw.dropna(subset=["epoch"])
    epochs = raw.groupby("epoch")
    hist = epochs.last().drop(columns=["step", "train/loss_step"], errors="ignore")
    # one train-loss column however it was logged (on_epoch only, on_step + on_epoch, ...)
    if "train/loss" not in hist:
        if "train/loss_epoch" in hist:
            hist["train/loss"] = hist["train/loss_epoch"]
        elif "train/loss_step" in raw:
            hist["train/loss"] = epochs["train/loss_step"].mean()
    hist = hist.dropna(how="all")  # e.g. the epoch the test row was logged at
    hist.index = hist.index.astype(int)
    return hist


def _test_from_csv(path: Path) -> dict[str, float]:
    """Fallback when ``test_metrics.json`` is missing: the last test row of metrics.csv."""
    try:
        raw = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return {}
    cols = [c for c in raw if c.startswith("test/")]
    return {c: float(raw[c].dropna().iloc[-1]) for c in cols if raw[c].notna().any()}


def _load_samples(folder: Path) -> list[Sample]:
    index_file = folder / "index.json"
    if not index_file.is_file():
        return []
    samples = []
    for entry in _read_json(index_file):
        name = str(entry["name"])
        files = {k: folder / f"{name}_{k}.png" for k in SAMPLE_KINDS}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            warn(f"{folder}: sample {name!r} skipped, missing {', '.join(missing)}")
            continue
        samples.append(Sample(name, entry.get("true_count"), entry.get("pred_count"), files))
    return samples


def load_run(path: str | Path) -> Run:
    """Load a run folder (or its ``meta.json``); raises ValueError naming a bad file."""
    path = Path(path)
    folder = path.parent if path.name == "meta.json" else path
    meta_file, metrics_file = folder / "meta.json", folder / "metrics.csv"
    if not meta_file.is_file():
        raise ValueError(f"{folder}: no meta.json; is this a bloodseg-train output folder?")
    if not metrics_file.is_file():
        raise ValueError(f"{folder}: no metrics.csv; train with logger=csv (the default "
                         "logs it next to W&B) to get training curves")
    meta = _read_json(meta_file)
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_file}: expected a JSON object")
    test_file = folder / "test_metrics.json"
    if test_file.is_file():
        test = {k: float(v) for k, v in _read_json(test_file).get("metrics", {}).items()}
    else:
        test = _test_from_csv(metrics_file)
    per_image = folder / "per_image.csv"
    sizes = folder / "size_hist.csv"
    return Run(
        path=folder,
        meta=meta,
        history=load_history(metrics_file),
        test=test,
        per_image=pd.read_csv(per_image) if per_image.is_file() else None,
        size_hist=pd.read_csv(sizes) if sizes.is_file() else None,
        samples=_load_samples(folder / "samples"),
    )


def assign_labels(runs: Sequence[Run]) -> None:
    """Give runs that share a name distinct labels, so their figure files do not collide."""
    names = Counter(r.name for r in runs)
    for r in runs:
        r.label = r.name
        if names[r.name] > 1:
            exp = r.meta.get("experiment")
            r.label = f"{r.name}_{exp}" if exp and exp != r.name else f"{r.name}_{r.path.name}"
    seen: Counter[str] = Counter()
    for r in runs:
        seen[r.label] += 1
        if seen[r.label] > 1:
            r.label = f"{r.label}_{seen[r.label]}"


def find_runs(dirs: Sequence[str | Path]) -> list[Path]:
    """Run folders (holding ``meta.json``) under ``dirs``; without metrics.csv: warned, skipped."""
    found: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        metas = [d] if d.name == "meta.json" and d.is_file() else sorted(d.rglob("meta.json"))
        for meta in metas:
            folder = meta.parent.resolve()
            if folder in found:
                continue
            if not (folder / "metrics.csv").is_file():
                warn(f"{folder}: skipped, no metrics.csv (a run without the CSV logger?)")
                continue
            found[folder] = None
    return list(found)


def warn(message: str) -> None:
    print(f"bloodseg-report: warning: {message}", file=sys.stderr)


# -- figures ------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> Path:
    # render into memory first, so a crash mid-way never leaves a truncated PNG behind
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.15,
                metadata={"Software": None})
    return write_bytes_atomic(path, buf.getvalue())


def _titles(fig: Figure, title: str, subtitle: str) -> None:
    """Bold title over a grey line naming the data and setup, above all axes.

    Placed just above the figure's top edge, in points: constrained layout leaves them
    alone and ``bbox_inches="tight"`` grows the saved image to include them.
    """
    for text, dy, style in ((subtitle, 4, {"fontsize": 9, "color": "0.35"}),
                            (title, 20, {"fontsize": 13, "fontweight": "bold"})):
        fig.text(0.5, 1.0, text, ha="center", va="bottom",
                 transform=offset_copy(fig.transFigure, fig=fig, y=dy, units="points"),
                 **style)


def _curve_figure(run: Run, metric: str, ylabel: str) -> Figure:
    hist = run.history
    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    drawn = False
    values = []
    for split, label, color in (("train", "train", TRAIN), ("val", "validation", VAL)):
        col = f"{split}/{metric}"
        series = hist[col].dropna() if col in hist else pd.Series(dtype=float)
        if series.empty:
            continue
        ax.plot(series.index, series.to_numpy(), color=color, lw=1.8, label=label,
                marker="o" if len(series) <= 30 else None, ms=3.5)
        values.append(series.to_numpy())
        drawn = True
    if metric == "loss" and values:
        v = np.concatenate(values)
        if v.min() > 0 and v.max() / v.min() > 50:
            # one huge early loss (e.g. BatchNorm statistics in epoch 0) would flatten the rest
            ax.set_yscale("log")
    if not drawn:
        ax.text(0.5, 0.5, f"no {ylabel} logged in metrics.csv", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
    best, stop = run.best_epoch, run.stopped_epoch
    if best is not None:
        val = f"val/{metric}"
        extra = f", val loss {hist['val/loss'][best]:.3f}" if metric == "loss" else ""
        ax.axvline(best, color=BEST, ls=":", lw=1.6, label=f"best epoch {best}{extra}")
        if val in hist and pd.notna(hist[val].get(best)):
            ax.plot([best], [hist[val][best]], marker="*", ms=13, color=BEST, zorder=5,
                    mec="white", mew=0.8)
    if stop is not None:
        ax.axvline(stop, color=STOP, ls="--", lw=1.6, label=f"early stop (epoch {stop})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if len(hist) and hist.index.max() - hist.index.min() < 2:
        # a 1-2 epoch run (fast_dev_run) would otherwise get fractional epoch ticks
        ax.set_xlim(hist.index.min() - 1, hist.index.max() + 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="best", framealpha=0.9, fontsize=9)
    return fig


def plot_curves(run: Run, out: str | Path) -> list[Path]:
    """``<name>_iou.png`` and ``<name>_loss.png``: train vs validation per epoch."""
    out = Path(out)
    loss_name = str(run.meta.get("loss") or "").upper()
    written = []
    for metric, ylabel, title in (("iou", "IoU", "IoU"), ("loss", f"{loss_name} loss".strip(),
                                                         "loss")):
        fig = _curve_figure(run, metric, ylabel)
        _titles(fig, f"{run.label} — {title} per epoch", _join(run.caption, run.setup_line()))
        written.append(_save(fig, out / f"{run.stem}_{metric}.png"))
    return written


def _panel_images(sample: Sample) -> dict[str, np.ndarray]:
    image = read_image(sample.files["image"], color="rgb", strict=False)
    mask = read_mask(sample.files["mask"])
    prob = to_uint8(decode(sample.files["prob"]))
    prob = prob[:, :, 0] if prob.ndim == 3 else prob
    labels = read_instances(sample.files["instances"])
    h, w = labels.shape
    if image.shape[:2] != (h, w):  # keep the overlay exact: bring the image to the labels
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    k = max(1, math.ceil(MIN_PANEL_SIDE / min(h, w)))
    if k > 1:
        image = cv2.resize(image, (w * k, h * k), interpolation=cv2.INTER_CUBIC)
        labels = cv2.resize(labels, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
    return {"image": image, "mask": mask, "prob": prob.astype(np.float32) / 255.0,
            "labels": labels}


def _number_cells(ax: Any, labels: np.ndarray) -> None:
    """Cell numbers as figure text: legible at any image size, unlike pixels drawn in."""
    n = int(labels.max())
    if n == 0:
        return
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    area = np.bincount(ids, minlength=n + 1)
    cx = np.bincount(ids, weights=xs, minlength=n + 1)
    cy = np.bincount(ids, weights=ys, minlength=n + 1)
    size = 7.5 if n <= 40 else 6 if n <= 120 else 4.5
    outline = [patheffects.withStroke(linewidth=2, foreground="white")]
    for i in np.flatnonzero(area[1:]) + 1:
        ax.text(cx[i] / area[i], cy[i] / area[i], str(i), fontsize=size, color=NUMBER_COLOR,
                ha="center", va="center", fontweight="bold", path_effects=outline)


def plot_panel(run: Run, out: str | Path, max_samples: int = 4) -> Path | None:
    """``<name>_panel.png``: per sample input | truth | probability | instances overlay.

    Returns None (and writes nothing) when the run saved no test samples.
    """
    rows = []
    for s in run.samples[:max_samples]:
        try:
            rows.append((s, _panel_images(s)))
        except (DataError, ValueError) as e:
            warn(f"{run.path}: sample {s.name!r} left out of the panel: {e}")
    if not rows:
        return None
    h, w = rows[0][1]["labels"].shape
    fig = Figure(figsize=(13.0, len(rows) * (3.1 * h / w + 0.4) + 0.2), layout="constrained")
    axes = fig.subplots(len(rows), 4, squeeze=False)
    for (s, img), ax in zip(rows, axes, strict=True):
        labels = img["labels"]
        pred = s.pred_count if s.pred_count is not None else int(labels.max())
        truth = f"truth {s.true_count}" if s.true_count is not None else "truth unknown"
        name = s.name if len(s.name) <= 22 else s.name[:10] + "…" + s.name[-8:]
        ax[0].imshow(to_rgb_uint8(img["image"]))
        ax[0].set_title(f"input · {name}", fontsize=10)
        ax[1].imshow(img["mask"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax[1].set_title("ground truth mask", fontsize=10)
        ax[2].imshow(img["prob"], cmap="gray", vmin=0, vmax=1)
        ax[2].set_title("predicted probability", fontsize=10)
        ax[3].imshow(overlay(img["image"], labels, numbers=False))
        _number_cells(ax[3], labels)
        ax[3].set_title(f"{pred} cells ({truth})", fontsize=10, fontweight="bold")
        for a in ax:
            # no ticks rather than set_axis_off: the same look, but layout need not measure
            # hidden tick labels (several times faster for a 4x4 grid)
            a.set(xticks=[], yticks=[])
            a.spines[:].set_visible(False)
    _titles(fig, f"{run.label} — test images",
            _join(run.caption, "watershed instances on the best checkpoint", run.setup_line()))
    return _save(fig, Path(out) / f"{run.stem}_panel.png")


def _runs_caption(runs: Sequence[Run]) -> str:
    kinds = sorted({str(r.data_kind) for r in runs})
    if len(kinds) == 1:
        return data_caption(runs[0].data_kind)
    return "mixed data: " + ", ".join(data_caption(k) for k in kinds)


def _run_names(runs: Sequence[Run]) -> list[str]:
    """Labels for shared figures; with mixed data each also says which data it is."""
    if len({str(r.data_kind) for r in runs}) == 1:
        return [r.label for r in runs]
    return [f"{r.label} [{r.data_kind}]" for r in runs]


def _colors(n: int) -> list:
    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_counts(runs: Sequence[Run], out: str | Path) -> Path | None:
    """``counts.png``: predicted vs true cells per test image, one colour per experiment."""
    runs = [r for r in runs if r.per_image is not None and not r.per_image.empty]
    if not runs:
        return None
    fig = Figure(figsize=(7.0, 6.6), layout="constrained")
    ax = fig.add_subplot()
    hi = 1.0
    markers = "osD^vP*Xph"
    for i, (r, name, color) in enumerate(zip(runs, _run_names(runs), _colors(len(runs)),
                                             strict=True)):
        df = r.per_image
        mae = float((df["pred_count"] - df["true_count"]).abs().mean())
        # experiments share the test images (same x): distinct markers keep overlaps visible
        ax.scatter(df["true_count"], df["pred_count"], s=46, alpha=0.7, color=color,
                   marker=markers[i % len(markers)], edgecolors="white", linewidths=0.6,
                   label=f"{name} (MAE {mae:.2f})")
        hi = max(hi, float(df["true_count"].max()), float(df["pred_count"].max()))
    hi *= 1.06
    ax.plot([0, hi], [0, hi], ls="--", color="0.45", lw=1.2, label="y = x (exact count)")
    # a little room below 0 so "no cells found" points are not hidden by the axis
    ax.set(xlim=(-0.03 * hi, hi), ylim=(-0.03 * hi, hi), xlabel="true cells per test image",
           ylabel="predicted cells (watershed)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    _titles(fig, "Cell counts: predicted vs true", f"{_runs_caption(runs)} · one point per "
            "test image")
    return _save(fig, Path(out) / "counts.png")


def plot_comparison(runs: Sequence[Run], out: str | Path) -> Path | None:
    """``comparison.png``: test Dice, IoU and instance F1@0.5 per experiment."""
    metrics = [("test/dice", "Dice"), ("test/iou", "IoU"), ("test/inst_f1", "instance F1@0.5")]
    runs = [r for r in runs if any(k in r.test for k, _ in metrics)]
    if not runs:
        return None
    n = len(runs)
    fig = Figure(figsize=(max(7.0, 1.3 * n + 2.5), 4.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(n)
    width = 0.8 / len(metrics)
    for i, ((key, label), color) in enumerate(zip(metrics, _colors(len(metrics)), strict=True)):
        values = np.array([r.test.get(key, np.nan) for r in runs], dtype=float)
        bars = ax.bar(x + (i - (len(metrics) - 1) / 2) * width, np.nan_to_num(values), width,
                      label=label, color=color)
        ax.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in values],
                     fontsize=7.5, padding=1.5)
    ax.set_xticks(x, _run_names(runs), rotation=20 if n > 3 else 0,
                  ha="right" if n > 3 else "center")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("test score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", ncols=len(metrics), fontsize=9, framealpha=0.9)
    _titles(fig, "Test metrics per experiment", f"{_runs_caption(runs)} · best checkpoint, "
            "pixel Dice/IoU and watershed instance F1 at IoU 0.5")
    return _save(fig, Path(out) / "comparison.png")


# -- tables -------------------------------------------------------------------------------


def results_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per experiment, sorted by name: the :data:`COLUMNS` plus setup columns."""
    rows = []
    for r in runs:
        m = r.meta
        opt = m.get("optimizer") if isinstance(m.get("optimizer"), dict) else {}
        row: dict[str, Any] = {
            "experiment": r.label,
            "model": _short_target(m.get("model")),
            "color": m.get("color"),
            "data_kind": m.get("data_kind"),
            **{col: r.test.get(key, np.nan) for col, key in TEST_KEYS.items()},
            "epochs_run": m.get("epochs_run"),
            "stopped_epoch": r.stopped_epoch,
            "train_time_s": m.get("train_time_s"),
            "params_m": m["params"] / 1e6 if m.get("params") is not None else np.nan,
            "optimizer": _short_target(opt),
            "lr": opt.get("lr"),
            "scheduler": _short_target(m.get("scheduler")),
            "batch_size": m.get("batch_size"),
            "max_epochs": m.get("max_epochs"),
            "loss": m.get("loss"),
            "run_dir": str(r.path),
        }
        rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c, _ in COLUMNS] + EXTRA_COLUMNS)
    for col in ("epochs_run", "stopped_epoch", "batch_size", "max_epochs"):
        table[col] = pd.to_numeric(table[col]).astype("Int64")
    order = table["experiment"].str.lower().argsort(kind="stable")
    return table.iloc[order].reset_index(drop=True)


def _fmt(col: str, value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if col == "data_kind":
        return "real BBBC041Seg" if value == "real" else str(value)
    if col in ("count_mae",):
        return f"{value:.2f}"
    if col == "count_bias":
        return f"{value:+.2f}"
    if col in ("epochs_run", "stopped_epoch"):
        return str(int(value))
    if col == "train_time_s":
        return f"{value:.0f}"
    if col == "params_m":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def results_markdown(table: pd.DataFrame) -> str:
    """The results table as GitHub markdown (no tabulate dependency)."""
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |",
             "|" + "|".join("---" if c in ("experiment", "model", "color", "data_kind")
                            else "---:" for c, _ in COLUMNS) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(c, row.get(c)) for c, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def _kinds_caption(kinds: set[str]) -> str:
    if kinds == {"synthetic"}:
        return "**Synthetic demo data — not results on BBBC041Seg.**"
    if kinds == {"real"}:
        return "**Real BBBC041Seg data** (test split, best checkpoint of each run)."
    return ("**Mixed data: synthetic demo runs and real BBBC041Seg runs** — check the data "
            "column; synthetic rows are not results on BBBC041Seg.")


def _link(target: Path, base: Path, alt: str) -> str:
    rel = Path(os.path.relpath(target.resolve(), base.resolve())).as_posix()
    return f"![{alt}]({quote(rel)})"


def readme_section(readme_dir: Path, figures_dir: Path, results_md: str) -> str:
    """Markdown for the README's results section (figure links relative to ``readme_dir``)."""
    figures_dir = Path(figures_dir)
    csv = figures_dir / "results.csv"
    table = pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["experiment"])
    kinds = {str(k) for k in table.get("data_kind", pd.Series(dtype=str)).dropna()}
    rel_dir = Path(os.path.relpath(figures_dir.resolve(), Path(readme_dir).resolve())).as_posix()
    parts = [f"{_kinds_caption(kinds)} Generated by `bloodseg-report` into `{rel_dir}/`.", "",
             results_md.strip(), ""]
    overview = [_link(figures_dir / f, readme_dir, alt) for f, alt in
                (("counts.png", "Predicted vs true cell counts"),
                 ("comparison.png", "Test metrics per experiment"))
                if (figures_dir / f).is_file()]
    if overview:
        parts += ["|".join(overview), "---|" * (len(overview) - 1) + "---", ""]
    for _, row in table.iterrows():
        label, stem = str(row["experiment"]), safe_stem(str(row["experiment"]))
        parts += [f"### {label}", ""]
        setup = [f"data: {data_caption(row.get('data_kind'))}"]
        if pd.notna(row.get("epochs_run")):
            setup.append(f"epochs run: {int(row['epochs_run'])}")
        if pd.notna(row.get("stopped_epoch")):
            setup.append(f"early stop at epoch {int(row['stopped_epoch'])}")
        if pd.notna(row.get("batch_size")):
            setup.append(f"batch: {int(row['batch_size'])}")
        if pd.notna(row.get("optimizer")):
            lr = f", lr = {row['lr']:g}" if pd.notna(row.get("lr")) else ""
            setup.append(f"optimizer: {row['optimizer']}{lr}")
        setup.append(f"scheduler: {row['scheduler'] if pd.notna(row.get('scheduler')) else '—'}")
        parts += [" · ".join(setup), ""]
        curves = [_link(figures_dir / f"{stem}_{m}.png", readme_dir, f"{title} {label}")
                  for m, title in (("iou", "IoU"), ("loss", "Loss"))
                  if (figures_dir / f"{stem}_{m}.png").is_file()]
        if curves:
            parts += ["|".join(curves), "---|" * (len(curves) - 1) + "---", ""]
        panel = figures_dir / f"{stem}_panel.png"
        if panel.is_file():
            parts += [_link(panel, readme_dir, f"Test images {label}"), ""]
    return "\n".join(parts).rstrip("\n") + "\n"


def _section(readme: Path, begin: str = BEGIN, end: str = END) -> tuple[str, int, int]:
    """The README text and where its markers are; ValueError naming the README if absent."""
    if not readme.is_file():
        raise ValueError(f"{readme}: no such README")
    text = readme.read_text()
    i = text.find(begin)
    j = text.find(end, i + len(begin)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ValueError(f"{readme}: results markers not found; add a line {begin!r} and, "
                         f"below it, a line {end!r} where the results should go")
    return text, i, j


def update_readme(readme: str | Path, figures_dir: str | Path, results_md: str,
                  begin: str = BEGIN, end: str = END) -> Path:
    """Rewrite the README part between ``begin`` and ``end`` (markers kept), atomically.

    The section gets a caption naming the data kind, ``results_md`` and, per experiment of
    ``figures_dir/results.csv``, its IoU/loss curves side by side and its test panel.
    """
    readme = Path(readme)
    text, i, j = _section(readme, begin, end)
    body = readme_section(readme.parent, Path(figures_dir), results_md)
    new = text[: i + len(begin)] + "\n" + body + text[j:]
    mode = readme.stat().st_mode & 0o7777
    write_text_atomic(readme, new)
    os.chmod(readme, mode)  # the atomic temp file is 0600; a README stays as it was
    return readme


# -- CLI ----------------------------------------------------------------------------------


def build_report(runs: Sequence[Run], out: str | Path) -> list[Path]:
    """Every figure and table for ``runs`` into ``out``; returns the files written."""
    out = Path(out)
    runs = sorted(runs, key=lambda r: r.label.lower())
    written: list[Path] = []
    for r in runs:
        written += plot_curves(r, out)
        panel = plot_panel(r, out)
        if panel is not None:
            written.append(panel)
    written += [p for p in (plot_counts(runs, out), plot_comparison(runs, out)) if p]
    table = results_table(runs)
    buf = io.StringIO()
    table.to_csv(buf, index=False)
    written.append(write_text_atomic(out / "results.csv", buf.getvalue()))
    md = f"# Results\n\n{_kinds_caption({str(r.data_kind) for r in runs})}\n\n"
    written.append(write_text_atomic(out / "results.md", md + results_markdown(table)))
    return written


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bloodseg-report",
        description="Figures (curves, test panels, counts) and a results table from the run "
                    "folders (meta.json + metrics.csv) found under RUN_DIR.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folder(s) or folders to search recursively for meta.json")
    p.add_argument("--out", default="experiments/figures", type=Path,
                   help="where figures and results.{csv,md} go (default: %(default)s)")
    p.add_argument("--readme", type=Path, default=None,
                   help=f"also rewrite this README between {BEGIN} and {END}")
    p.add_argument("--section", default="results",
                   help="README section to rewrite: <!-- SECTION:begin/end --> "
                        "(results for real data, demo for the synthetic demo)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for d in args.run_dirs:
        if not Path(d).exists():
            print(f"bloodseg-report: error: {d}: no such folder", file=sys.stderr)
            return 2
    runs = []
    for folder in find_runs(args.run_dirs):
        try:
            runs.append(load_run(folder))
        except ValueError as e:
            warn(f"skipped: {e}")
    if not runs:
        print(f"bloodseg-report: error: no run folder (meta.json + metrics.csv) under "
              f"{', '.join(map(str, args.run_dirs))}; pass the output folder of "
              "bloodseg-train (or a sweep folder above it)", file=sys.stderr)
        return 1
    if args.readme is not None:
        try:  # before any figure is drawn: a wrong --readme should cost no time
            _section(args.readme, *markers(args.section))
        except ValueError as e:
            print(f"bloodseg-report: error: {e}", file=sys.stderr)
            return 1
    assign_labels(runs)
    written = build_report(runs, args.out)
    if args.readme is not None:
        table_md = results_markdown(results_table(runs))
        written.append(update_readme(args.readme, args.out, table_md, *markers(args.section)))
    print(f"bloodseg-report: {len(runs)} run(s) -> {len(written)} file(s):")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
