"""Reference rows for the results table: the classical pipeline on the runs' own test images.

A network's count MAE means little alone; next to Otsu + bloodseg's watershed on the same
images it says whether training paid. For every test folder the runs name (``data_root`` in
``meta.json``), this scores, at each image's own size:

* ``Otsu + watershed``: :func:`bloodseg.postprocess.otsu_foreground`, then
  :class:`bloodseg.postprocess.Watershed` with its defaults;
* ``Otsu + watershed, tuned``: the same with its split depth chosen on that folder's
  *training* images (:mod:`bloodseg.tuning`), as runs with ``tune`` do.

Both drop frame-cut cells as the runs' data does (``cut_cell_frac`` in ``meta.json``). The
scoring code is imported only when rows are asked for (``bloodseg-report --baselines``): the
metrics module brings torch, and the report alone must run without it.
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


def _items(root: Path, split: str) -> list:
    from bloodseg.data.bbbc041seg import list_split, read_native_instances
    from bloodseg.io import read_image
    from bloodseg.postprocess import otsu_foreground
    from bloodseg.tuning import TuningItem

    items = []
    for sample in list_split(root, split):
        fg = otsu_foreground(read_image(sample.image))
        items.append(TuningItem(sample.name, fg[None].astype(np.float32),
                                read_native_instances(sample)))
    return items


def _row(label: str, kind: Any, watershed: Any, items: Sequence) -> dict:
    from bloodseg.metrics import InstanceStats

    stats = InstanceStats()
    inter = pred = true = 0
    for it in items:
        fg = it.outputs[0] > 0
        truth = it.truth > 0
        inter += int((fg & truth).sum())
        pred, true = pred + int(fg.sum()), true + int(truth.sum())
        stats.update(it.name, it.truth, watershed(it.outputs[0]))
    agg = stats.aggregate()
    return {
        "experiment": label, "model": "—", "color": "—", "data_kind": kind,
        "dice": 2 * inter / (pred + true) if pred + true else np.nan,
        "iou": inter / (pred + true - inter) if pred + true - inter else np.nan,
        "precision": inter / pred if pred else np.nan,
        "recall": inter / true if true else np.nan,
        "count_mae": agg["count_mae"], "count_bias": agg["count_bias"],
        "inst_f1": agg["f1"], "inst_ap": agg["ap"],
    }


def baseline_rows(runs: Sequence[Run]) -> list[dict]:
    """Both reference rows per distinct test folder of ``runs`` (labelled with the folder's
    name when the runs used several); a folder that is gone is skipped with a warning."""
    from bloodseg.io import DataError
    from bloodseg.postprocess import Watershed
    from bloodseg.tuning import search

    roots: dict[str, Run] = {}
    for r in runs:
        if r.meta.get("data_root"):
            roots.setdefault(str(r.meta["data_root"]), r)
    rows = []
    for root, run in roots.items():
        suffix = f" ({Path(root).name})" if len(roots) > 1 else ""
        cut = float(run.meta.get("cut_cell_frac") or 0.0)
        try:
            test = _items(Path(root), "test")
            train = _items(Path(root), "train")
        except (DataError, OSError, ValueError) as e:
            warn(f"no baseline rows for {root}: {e}")
            continue
        base = Watershed(min_cut_area_frac=cut)
        rows.append(_row(OTSU + suffix, run.data_kind, base, test))
        tuned = search(base, train).postprocess
        rows.append(_row(OTSU_TUNED + suffix, run.data_kind, tuned, test))
    return rows
