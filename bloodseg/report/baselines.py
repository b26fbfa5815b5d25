"""Reference rows for the results table: the classical pipeline on the runs' own test images.

A network's count MAE means little alone; next to Otsu + bloodseg's watershed on the same
images it says whether training paid. For every test folder the runs name (``data_root`` in
``meta.json``), this scores, at each image's own size:

* ``Otsu + watershed``: :func:`bloodseg.postprocess.otsu_foreground`, then
  :class:`bloodseg.postprocess.Watershed` with its defaults;
* ``Otsu + watershed, tuned``: the same with its split depth chosen on that folder's
  *training* images (:mod:`bloodseg.tuning`), as runs with ``tune`` do.

Both drop frame-cut cells as the runs' data does (``cut_cell_frac`` in ``meta.json``). The
scores come from :mod:`bloodseg.baselines`, the scorer ``benchmarks/`` uses too;
it is imported only when rows are asked for (``bloodseg-report --baselines``): its package
brings torch, and the report alone must run without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bloodseg.report.runs import Run, warn

__all__ = ["BASELINE_NOTE", "OTSU", "OTSU_TUNED", "baseline_rows", "is_baseline"]

OTSU = "Otsu + watershed"
OTSU_TUNED = "Otsu + watershed, tuned"
BASELINE_NOTE = (
    f"*{OTSU}*: the classical pipeline (Otsu foreground, bloodseg's watershed) on the same "
    f"test images, no training; *{OTSU_TUNED}*: its split depth chosen on the training "
    "images, as runs with `tune` choose theirs.")


def is_baseline(row: Any) -> bool:
    """Whether a results-table row is one of these reference rows (they have no run)."""
    run_dir = row.get("run_dir")
    return not isinstance(run_dir, str) or not run_dir


def _row(label: str, kind: Any, items: Sequence, stats: Any) -> dict:
    inter = sum(it.dice_terms()[0] for it in items)
    fg = sum(int(it.foreground.sum()) for it in items)
    true = sum(int((it.truth > 0).sum()) for it in items)
    agg = stats.aggregate()
    return {
        "experiment": label, "model": "—", "color": "—", "data_kind": kind,
        "dice": 2 * inter / (fg + true) if fg + true else np.nan,
        "iou": inter / (fg + true - inter) if fg + true - inter else np.nan,
        "pixel_precision": inter / fg if fg else np.nan,
        "pixel_recall": inter / true if true else np.nan,
        **{k: agg[k] for k in ("count_mae", "count_bias", "f1", "ap50")},
    }


def baseline_rows(runs: Sequence[Run]) -> list[dict]:
    """Both reference rows per distinct test folder of ``runs`` (labelled with the folder's
    name when the runs used several); a folder that is gone is skipped with a warning."""
    from bloodseg.baselines import OTSU_WATERSHED, otsu_items, score_otsu, score_tuned
    from bloodseg.data.bbbc041seg import list_split
    from bloodseg.io import DataError
    from bloodseg.postprocess import Watershed

    roots: dict[str, Run] = {}
    for r in runs:
        if r.meta.get("data_root"):
            roots.setdefault(str(r.meta["data_root"]), r)
    rows = []
    for root, run in roots.items():
        suffix = f" ({Path(root).name})" if len(roots) > 1 else ""
        cut = float(run.meta.get("cut_cell_frac") or 0.0)
        try:
            test = otsu_items(list_split(root, "test"))
            train = otsu_items(list_split(root, "train"))
        except (DataError, OSError, ValueError) as e:
            warn(f"no baseline rows for {root}: {e}")
            continue
        base = Watershed(cut_cell_frac=cut)
        plain = score_otsu(test, base).stats[OTSU_WATERSHED]
        rows.append(_row(OTSU + suffix, run.data_kind, test, plain))
        tuned, _ = score_tuned(test, train, base)
        rows.append(_row(OTSU_TUNED + suffix, run.data_kind, test, tuned))
    return rows
