"""A cross-validation summarized: each method's mean ± sample sd over its finished folds.

    >>> summarize(results["methods"]["distance_s05"]["folds"])["count_mae"]
    {'mean': 2.25, 'sd': 0.87, 'n': 4}

:func:`mean_sd` is the one mean ± sd of the CV table and of the paired comparison of two
methods image by image (``benchmarks/paired.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from bloodseg.cv.results import COLUMNS, METRICS

__all__ = ["finite", "mean_sd", "resolution_text", "summarize"]


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def mean_sd(values: Sequence[Any]) -> dict:
    """Mean and sample sd (NaN below two values) of the finite ``values``, and their number."""
    v = np.array([x for x in values if finite(x)], dtype=float)
    return {"mean": float(v.mean()) if v.size else float("nan"),
            "sd": float(v.std(ddof=1)) if v.size > 1 else float("nan"), "n": int(v.size)}


def summarize(folds: Sequence[dict]) -> dict:
    """A method's ``summary``: mean ± sd over its finished folds of each metric and time,
    where its numbers were scored, and how many folds finished."""
    ok = [f for f in folds if f.get("status") == "ok"]
    # folds written before a metric existed (the box columns) lack it: no number, not an error
    summary = {name: mean_sd([f["metrics"].get(name) for f in ok]) for name in METRICS}
    for key in ("cpu_s", "wall_s"):
        summary[key] = mean_sd([f.get(key) for f in ok])
    by_metric = {}
    for n in METRICS:
        where = {f["resolution"].get(n) for f in ok} - {None}
        by_metric[n] = where.pop() if len(where) == 1 else ("mixed" if where else None)
    summary["resolution_by_metric"] = by_metric
    summary["resolution"] = resolution_text(by_metric)
    summary["folds_ok"] = len(ok)
    summary["folds"] = len(folds)
    return summary


def resolution_text(by_metric: dict[str, str | None]) -> str | None:
    """One table cell: ``native``, or which metrics are at which size."""
    groups: dict[str, list[str]] = {}
    for key, label, _ in COLUMNS:
        if by_metric.get(key):
            groups.setdefault(by_metric[key], []).append(label)
    if len(groups) <= 1:
        return next(iter(groups), None)
    main = max(groups, key=lambda w: len(groups[w]))
    return "; ".join(f"{', '.join(groups[w])}: {w}" for w in groups if w != main) + \
        f"; others: {main}"
