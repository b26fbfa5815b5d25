"""The results table (one row per experiment) and its markdown, with the runs left out."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bloodseg.report.markdown import code, text
from bloodseg.report.runs import Found, Run, short_target

__all__ = ["COLUMNS", "incomplete_markdown", "kinds_caption", "results_markdown",
           "results_table"]

# (results.csv column, results.md header) in table order
COLUMNS = [
    ("experiment", "experiment"),
    ("model", "model"),
    ("color", "color"),
    ("data_kind", "data"),
    ("dice", "Dice"),
    ("iou", "IoU"),
    ("pixel_precision", "precision"),
    ("pixel_recall", "recall"),
    ("count_mae", "count MAE"),
    ("count_bias", "count bias"),
    ("f1", "inst. F1@0.5"),
    ("ap50", "AP@0.5"),
    ("interval_coverage", "true count in 90% interval"),
    ("epochs_run", "epochs run"),
    ("stopped_epoch", "stopped epoch"),
    ("train_time_s", "train time (s)"),
    ("params_m", "params (M)"),
]
# the columns that are test metrics: results.csv names them as test_metrics.json does
TEST_COLUMNS = ("dice", "iou", "pixel_precision", "pixel_recall", "count_mae", "count_bias",
                "f1", "ap50", "interval_coverage")
# shown only when some run has them (a model that carries its count interval: bloodseg.trust)
OPTIONAL_COLUMNS = ("interval_coverage",)
# results.csv only: what the README needs for the study's "Epoch : 100, Batch : 4, ..." line
EXTRA_COLUMNS = ["optimizer", "lr", "scheduler", "batch_size", "max_epochs", "loss", "run_dir"]


def number(value: Any) -> float:
    """A number from a run's meta.json, NaN for anything else (a run's text is no number)."""
    ok = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    return float(value) if ok else np.nan


def results_table(runs: Sequence[Run]) -> pd.DataFrame:
    """One row per experiment, sorted by name: the :data:`COLUMNS` plus setup columns."""
    rows = []
    for r in runs:
        m = r.meta
        opt = m.get("optimizer") if isinstance(m.get("optimizer"), dict) else {}
        row: dict[str, Any] = {
            "experiment": r.label,
            "model": short_target(m.get("model")),
            "color": m.get("color"),
            "data_kind": m.get("data_kind"),
            **{col: r.test.get(f"test/{col}", np.nan) for col in TEST_COLUMNS},
            "epochs_run": m.get("epochs_run"),
            "stopped_epoch": r.stopped_epoch,
            "train_time_s": m.get("train_time_s"),
            "params_m": number(m.get("params")) / 1e6,
            "optimizer": short_target(opt),
            "lr": opt.get("lr"),
            "scheduler": short_target(m.get("scheduler")),
            "batch_size": m.get("batch_size"),
            "max_epochs": m.get("max_epochs"),
            "loss": m.get("loss"),
            "run_dir": str(r.path),
        }
        rows.append(row)
    table = pd.DataFrame(rows, columns=[c for c, _ in COLUMNS] + EXTRA_COLUMNS)
    for col in ("epochs_run", "stopped_epoch", "batch_size", "max_epochs"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    order = table["experiment"].str.lower().argsort(kind="stable")
    return table.iloc[order].reset_index(drop=True)


def _fmt(col: str, value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if col == "data_kind" and value == "real":
        return "real BBBC041Seg"
    if not isinstance(value, (int, float, np.number)) or isinstance(value, bool):
        return text(value)  # run text: shown as written, never rendered
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
    return str(value)


def results_markdown(table: pd.DataFrame) -> str:
    """The results table as GitHub markdown (no tabulate dependency)."""
    def shown(col: str) -> bool:
        return col not in OPTIONAL_COLUMNS or (
            col in table and pd.to_numeric(table[col], errors="coerce").notna().any())

    columns = [(c, h) for c, h in COLUMNS if shown(c)]
    lines = ["| " + " | ".join(h for _, h in columns) + " |",
             "|" + "|".join("---" if c in ("experiment", "model", "color", "data_kind")
                            else "---:" for c, _ in columns) + "|"]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_fmt(c, row.get(c)) for c, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def kinds_caption(kinds: set[str]) -> str:
    if kinds == {"synthetic"}:
        return "**Synthetic demo data — not results on BBBC041Seg.**"
    if kinds == {"real"}:
        return "**Real BBBC041Seg data** (test split, best checkpoint of each run)."
    return ("**Mixed data: synthetic demo runs and real BBBC041Seg runs** — check the data "
            "column; synthetic rows are not results on BBBC041Seg.")


def _shown(path: Path, base: Path) -> str:
    """``path`` relative to the document's folder (as the README's links are)."""
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()


def incomplete_markdown(found: Found | None, base: Path) -> str:
    """The failed and unfinished runs, for under the table ("" when there are none); their
    folders are shown relative to ``base``, the document's folder."""
    parts: list[str] = []
    if found and found.failed:
        parts += ["**Failed runs** (not in the table):", ""]
        parts += [f"- {code(_shown(f.path, base))}: {code(f.reason)}" for f in found.failed]
        parts += [""]
    if found and found.unfinished:
        parts += ["**Unfinished runs** (still running, or stopped before writing results):", ""]
        parts += [f"- {code(_shown(u.path, base))} ({code(u.reason)})"
                  for u in found.unfinished]
        parts += [""]
    return "\n".join(parts)
