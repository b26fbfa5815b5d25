"""The report's figures: training curves, test panels, cell counts, cell sizes, comparison.

Each ``plot_*`` draws off-screen (no pyplot state), names its experiment and data in the
title, and writes one PNG atomically; it returns the path, or None when the run lacks the
data for it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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
)
from bloodseg.labels import centroids, instances_from_mask
from bloodseg.metrics import match_instances, merges_and_splits
from bloodseg.render import overlay, to_rgb_uint8
from bloodseg.report.runs import Run, Sample, data_caption, join, warn

__all__ = ["plot_comparison", "plot_count_scatter", "plot_counts", "plot_curves", "plot_panel",
           "plot_sizes"]

TRAIN, VAL = "#1f77b4", "#ff7f0e"
BEST, STOP = "#2ca02c", "#d62728"
DPI = 120
# Panels of tiny (e.g. 64x64 test) images are upscaled so the contours stay smooth lines.
MIN_PANEL_SIDE = 320
NUMBER_COLOR = (200 / 255, 0.0, 0.0)  # render.overlay's number colour, as matplotlib RGB
# The match panel, in Okabe-Ito colours (told apart with any colour vision): outlines of
# matched and wrong predictions and of the true cells nothing matched; merge/split marks.
MATCH_COLORS = {"tp": (0, 158, 115), "fp": (213, 94, 0), "fn": (86, 180, 233)}
MERGE_COLOR, SPLIT_COLOR = (230 / 255, 159 / 255, 0.0), (240 / 255, 228 / 255, 66 / 255)


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
    """``<name>_iou.png`` and ``<name>_loss.png``: train vs validation per epoch (none for a
    run without history, e.g. an evaluate folder)."""
    out = Path(out)
    if run.history.empty:
        return []
    loss_name = str(run.meta.get("loss") or "").upper()
    written = []
    for metric, ylabel, title in (("iou", "IoU", "IoU"), ("loss", f"{loss_name} loss".strip(),
                                                         "loss")):
        fig = _curve_figure(run, metric, ylabel)
        _titles(fig, f"{run.label} — {title} per epoch",
                join(run.caption, run.interrupted and "interrupted: the epochs so far",
                     run.setup_line()))
        written.append(_save(fig, out / f"{run.stem}_{metric}.png"))
    return written


def _truth(sample: Sample, mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The sample's true instances: ``<name>_truth.png`` when the run saved it, else the
    connected components of its mask (touching cells whose gap the resize closed count as
    one there), at ``shape``."""
    path = sample.files["instances"].with_name(f"{sample.name}_truth.png")
    truth = read_instances(path) if path.is_file() else instances_from_mask(mask)
    if truth.shape != shape:
        truth = cv2.resize(truth.astype(np.uint16), shape[::-1], interpolation=cv2.INTER_NEAREST)
    return truth.astype(np.int32)


def _match_outlines(image: np.ndarray, labels: np.ndarray, truth: np.ndarray,
                    k: int) -> tuple[np.ndarray, dict[str, Any]]:
    """``image`` with matched predictions outlined green, false positives orange-red and the
    true cells nothing matched sky blue (IoU >= 0.5, one-to-one, as the metrics count), and
    where to mark merges and splits; ``labels``/``truth`` at the sample's size, ``image``
    ``k`` times larger."""
    m = match_instances(truth, labels)
    merged, split = merges_and_splits(truth, labels)
    tp_pred = np.isin(labels, m.pairs[:, 1])
    fn_true = (truth > 0) & ~np.isin(truth, m.pairs[:, 0])

    def up(lab: np.ndarray) -> np.ndarray:
        return cv2.resize(lab.astype(np.int32), None, fx=k, fy=k,
                          interpolation=cv2.INTER_NEAREST) if k > 1 else lab

    rgb = image
    for kind, lab in (("fn", np.where(fn_true, truth, 0)), ("tp", np.where(tp_pred, labels, 0)),
                      ("fp", np.where((labels > 0) & ~tp_pred, labels, 0))):
        if lab.any():  # outlines ~2 px at the panel's size, so their colour reads
            rgb = overlay(rgb, up(lab), numbers=False, color=MATCH_COLORS[kind],
                          thickness=min(3, k // 2) or None)
    marks = {"merge": _centres(labels, merged, k), "split": _centres(truth, split, k),
             "tp": m.tp, "fp": m.fp, "fn": m.fn}
    return rgb, marks


def _centres(labels: np.ndarray, ids: np.ndarray, k: int) -> list[tuple[float, float]]:
    if not len(ids):
        return []
    found, cy, cx = centroids(labels)
    keep = np.isin(found, ids)
    return [((x + 0.5) * k - 0.5, (y + 0.5) * k - 0.5) for y, x in zip(cy[keep], cx[keep])]


def _panel_images(sample: Sample) -> dict[str, Any]:
    image = read_image(sample.files["image"], color="rgb", strict=False)
    mask = read_mask(sample.files["mask"])
    prob = to_uint8(decode(sample.files["prob"]))
    prob = prob[:, :, 0] if prob.ndim == 3 else prob
    labels = read_instances(sample.files["instances"])
    h, w = labels.shape
    truth = _truth(sample, mask, (h, w))
    if image.shape[:2] != (h, w):  # keep the overlay exact: bring the image to the labels
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    k = max(1, math.ceil(MIN_PANEL_SIDE / min(h, w)))
    if k > 1:
        image = cv2.resize(image, (w * k, h * k), interpolation=cv2.INTER_CUBIC)
    matches, marks = _match_outlines(image, labels, truth, k)
    if k > 1:
        labels = cv2.resize(labels, (w * k, h * k), interpolation=cv2.INTER_NEAREST)
    return {"image": image, "mask": mask, "prob": prob.astype(np.float32) / 255.0,
            "labels": labels, "matches": matches, "marks": marks}


def _mark(ax: Any, points: list[tuple[float, float]], letter: str, color: tuple) -> None:
    outline = [patheffects.withStroke(linewidth=2.5, foreground="black")]
    for x, y in points:
        ax.text(x, y, letter, fontsize=9, color=color, ha="center", va="center",
                fontweight="bold", path_effects=outline)


def _match_legend(fig: Figure) -> None:
    from matplotlib.lines import Line2D

    def line(rgb: tuple[int, int, int]) -> Line2D:
        return Line2D([], [], color=np.array(rgb) / 255, lw=3)

    def letter(text: str, color: tuple) -> Line2D:
        return Line2D([], [], ls="", marker=f"${text}$", ms=9, color=color, mec="black",
                      mew=0.3)

    handles = [line(MATCH_COLORS["tp"]), line(MATCH_COLORS["fp"]), line(MATCH_COLORS["fn"]),
               letter("M", MERGE_COLOR), letter("S", SPLIT_COLOR)]
    labels = ["matched (TP, IoU ≥ 0.5)", "false positive (FP)",
              "missed true cell (FN, its outline)", "merge: one prediction over ≥ 2 cells",
              "split: one cell in ≥ 2 predictions"]
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=9,
               frameon=False)


def _number_cells(ax: Any, labels: np.ndarray) -> None:
    """Cell numbers as figure text: legible at any image size, unlike pixels drawn in."""
    ids, cy, cx = centroids(labels)
    if not len(ids):
        return
    n = int(ids.max())
    size = 7.5 if n <= 40 else 6 if n <= 120 else 4.5
    outline = [patheffects.withStroke(linewidth=2, foreground="white")]
    for i, y, x in zip(ids, cy, cx):
        ax.text(x, y, str(i), fontsize=size, color=NUMBER_COLOR, ha="center", va="center",
                fontweight="bold", path_effects=outline)


def plot_panel(run: Run, out: str | Path, max_samples: int = 4) -> Path | None:
    """``<name>_panel.png``: per sample input | truth | probability | numbered instances |
    matches (TP / FP / FN outlines, merges and splits marked; legend at the foot).

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
    fig = Figure(figsize=(16.0, len(rows) * (3.0 * h / w + 0.4) + 0.6), layout="constrained")
    axes = fig.subplots(len(rows), 5, squeeze=False)
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
        marks = img["marks"]
        ax[4].imshow(img["matches"])
        _mark(ax[4], marks["merge"], "M", MERGE_COLOR)
        _mark(ax[4], marks["split"], "S", SPLIT_COLOR)
        extra = [f"{len(marks[k])} {k}{'s' if len(marks[k]) != 1 else ''}"
                 for k in ("merge", "split") if marks[k]]
        ax[4].set_title(" · ".join([f"{marks['tp']} TP · {marks['fp']} FP · {marks['fn']} FN",
                                    *extra]), fontsize=10)
        for a in ax:
            # no ticks rather than set_axis_off: the same look, but layout need not measure
            # hidden tick labels (several times faster for a 4x4 grid)
            a.set(xticks=[], yticks=[])
            a.spines[:].set_visible(False)
    _match_legend(fig)
    _titles(fig, f"{run.label} — test images",
            join(run.caption, "watershed instances on the best checkpoint", run.setup_line()))
    return _save(fig, Path(out) / f"{run.stem}_panel.png")


def _mean_area(edges: np.ndarray, counts: np.ndarray) -> float:
    total = counts.sum()
    return float((counts * (edges[:-1] + edges[1:]) / 2).sum() / total) if total else math.nan


def plot_sizes(run: Run, out: str | Path) -> Path | None:
    """``<name>_sizes.png``: cell-area histogram of the watershed cells over the true ones.

    Returns None when the run has no (non-empty) ``size_hist.csv``.
    """
    hist = run.size_hist
    if hist is None or hist.empty or not {"bin_start", "bin_end"} <= set(hist):
        return None
    edges = np.append(hist["bin_start"].to_numpy(float), float(hist["bin_end"].iloc[-1]))
    fig = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = fig.add_subplot()
    for col, label, style in (
        ("true_cells", "ground truth", {"fill": True, "color": "0.8", "ec": "0.45", "lw": 1}),
        ("pred_cells", "predicted (watershed)", {"color": TRAIN, "lw": 2}),
    ):
        if col not in hist:
            continue
        counts = hist[col].fillna(0).to_numpy(float)
        mean = _mean_area(edges, counts)
        mean_txt = f", mean ≈ {mean:.0f} px" if not math.isnan(mean) else ""
        ax.stairs(counts, edges, label=f"{label}: {counts.sum():.0f} cells{mean_txt}", **style)
    ax.set(xlabel="cell area (px)", ylabel="cells (all test images)")
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", framealpha=0.9, fontsize=9)
    _titles(fig, f"{run.label} — cell sizes",
            join(run.caption, "watershed instances on the best checkpoint vs ground truth"))
    return _save(fig, Path(out) / f"{run.stem}_sizes.png")


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


def plot_count_scatter(groups: Sequence[tuple[str, Sequence[float], Sequence[float]]],
                       path: str | Path, title: str, subtitle: str,
                       xlabel: str = "true cells per test image",
                       ylabel: str = "predicted cells (watershed)") -> Path | None:
    """Predicted vs true cells per image, one colour and marker per ``(label, true,
    predicted)`` group, and y = x; None when no group has a point. The one counts plot:
    ``counts.png`` of the report and of ``bloodseg-cv``."""
    groups = [(label, np.asarray(t, float), np.asarray(p, float)) for label, t, p in groups
              if len(t)]
    if not groups:
        return None
    fig = Figure(figsize=(7.0, 6.6), layout="constrained")
    ax = fig.add_subplot()
    hi = 1.0
    markers = "osD^vP*Xph"
    for i, ((label, true, pred), color) in enumerate(zip(groups, _colors(len(groups)),
                                                         strict=True)):
        mae = float(np.abs(pred - true).mean())
        # methods share the test images (same x): distinct markers keep overlaps visible
        ax.scatter(true, pred, s=46, alpha=0.7, color=color, marker=markers[i % len(markers)],
                   edgecolors="white", linewidths=0.6, label=f"{label} (MAE {mae:.2f})")
        hi = max(hi, float(true.max()), float(pred.max()))
    hi *= 1.06
    ax.plot([0, hi], [0, hi], ls="--", color="0.45", lw=1.2, label="y = x (exact count)")
    # a little room below 0 so "no cells found" points are not hidden by the axis
    ax.set(xlim=(-0.03 * hi, hi), ylim=(-0.03 * hi, hi), xlabel=xlabel, ylabel=ylabel)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=9 if len(groups) <= 6 else 8, framealpha=0.9)
    _titles(fig, title, subtitle)
    return _save(fig, Path(path))


def plot_counts(runs: Sequence[Run], out: str | Path) -> Path | None:
    """``counts.png``: predicted vs true cells per test image, one colour per experiment."""
    runs = [r for r in runs if r.per_image is not None and not r.per_image.empty]
    if not runs:
        return None
    groups = [(name, r.per_image["true_count"], r.per_image["pred_count"])
              for r, name in zip(runs, _run_names(runs), strict=True)]
    return plot_count_scatter(groups, Path(out) / "counts.png", "Cell counts: predicted vs true",
                              f"{_runs_caption(runs)} · one point per test image")


# (test metric, baseline-row column, axis label, lower is better)
COMPARED = [("test/count_mae", "count_mae", "count MAE (cells per image) ← better", True),
            ("test/f1", "f1", "instance F1 @ IoU 0.5 → better", False),
            ("test/dice", "dice", "pixel Dice → better", False)]


def plot_comparison(runs: Sequence[Run], out: str | Path,
                    baselines: Sequence[dict] = ()) -> Path | None:
    """``comparison.png``: test count MAE, instance F1@0.5 and pixel Dice per experiment, one
    panel each, with the reference rows of :mod:`bloodseg.report.baselines` (Otsu +
    watershed, no training) in grey below the runs when given."""
    fig = comparison_figure(runs, baselines)
    return _save(fig, Path(out) / "comparison.png") if fig is not None else None


def comparison_figure(runs: Sequence[Run], baselines: Sequence[dict] = ()) -> Figure | None:
    """The figure of :func:`plot_comparison` (None without test metrics)."""
    runs = [r for r in runs if any(k in r.test for k, *_ in COMPARED)]
    if not runs:
        return None
    names = _run_names(runs) + [str(b.get("experiment")) for b in baselines]
    values = [[r.test.get(key, np.nan) for key, *_ in COMPARED] for r in runs]
    values += [[b.get(col, np.nan) for _, col, *_ in COMPARED] for b in baselines]
    table = np.array(values, dtype=float)
    n, colors = len(names), _colors(len(runs)) + ["0.7"] * len(baselines)
    fig = Figure(figsize=(12.0, 1.2 + 0.42 * n), layout="constrained")
    axes = fig.subplots(1, len(COMPARED), sharey=True)
    y = np.arange(n)[::-1]  # first experiment on top, baselines at the foot
    for ax, (_, _, label, lower), col in zip(axes, COMPARED, table.T, strict=True):
        bars = ax.barh(y, np.nan_to_num(col), color=colors, height=0.7,
                       hatch=[""] * len(runs) + ["//"] * len(baselines), edgecolor="white")
        ax.bar_label(bars, labels=["—" if np.isnan(v) else f"{v:.2f}" for v in col],
                     fontsize=8, padding=2)
        finite = col[np.isfinite(col)]
        top = 1.0 if not lower else (float(finite.max()) if finite.size else 1.0)
        ax.set_xlim(0, top * 1.18 or 1.0)
        ax.set_xlabel(label, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.tick_params(axis="y", length=0)
    axes[0].set_yticks(y, names, fontsize=9)
    for tick in axes[0].get_yticklabels()[len(runs):]:
        tick.set_fontstyle("italic")
    note = " · grey: Otsu + watershed on the same images, no training" if baselines else ""
    _titles(fig, "Test metrics per experiment", f"{_runs_caption(runs)} · best checkpoint, "
            f"watershed instances{note}")
    return fig
