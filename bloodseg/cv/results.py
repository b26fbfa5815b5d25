"""A cross-validation's ``results.json``: the file begun, its fold rows, its text, read back.

One file keeps every fold of every method (recipes, their test-time variants, ensembles, the
Otsu baselines), how the cross-validation was called and on what; everything else
(:mod:`bloodseg.cv.summary`, :mod:`bloodseg.cv.outputs`) is drawn from it alone, so a
``results.json`` renders again the same, byte for byte (``bloodseg-cv --render``).

A fold row is ``{"status": "ok" | "failed", "metrics": {name: value}, "resolution": {name:
where it was scored}, "per_image": [{file, true_count, pred_count, tp, fp, fn}], "wall_s",
"cpu_s", ...}``; a network's comes from its run folder's files as :mod:`bloodseg.rundir`
reads them (:func:`fold_scores`), a baseline's from its scores (:func:`baseline_fold`).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from bloodseg import rundir

__all__ = ["COLUMNS", "METRICS", "PRODUCER", "QUICK_NOTE", "RESULTS", "RUN_LOG", "RUN_RECORD",
           "baseline_fold", "fold_scores", "git_info", "host", "new_results", "read_results",
           "results_json", "run_scores", "summarize_error", "tested_fold"]

PRODUCER = "bloodseg-cv"  # what writes results.json (its command line starts so)
RESULTS = "results.json"
QUICK_NOTE = "QUICK MODE — not a result"
# what the cross-validation leaves in each run folder besides the run's own files: the run's
# output, and how it was run (the names predate the command: --resume reads older folders)
RUN_LOG = "benchmark_run.log"
RUN_RECORD = "benchmark_run.json"
# a fold's metrics: the names InstanceStats.aggregate() emits and test_metrics.json logs
# after "test/" (dice: the pixel Dice; for a baseline, the pooled Otsu Dice)
METRICS = ("dice", "count_mae", "count_bias", "f1", "ap50", "ap75", "map", "box_f1",
           "box_count_mae", "box_count_bias")
# (metric, table header, number format), in table order
COLUMNS = [("dice", "Dice", "{:.3f}"), ("count_mae", "count MAE", "{:.2f}"),
           ("count_bias", "count bias", "{:+.2f}"), ("f1", "F1@0.5", "{:.3f}"),
           ("ap50", "AP50", "{:.3f}"), ("ap75", "AP75", "{:.3f}"), ("map", "mAP", "{:.3f}"),
           # against the second human reference (boxes; bloodseg-cv --boxes): NaN without it
           ("box_f1", "box F1", "{:.3f}"), ("box_count_mae", "box count MAE", "{:.2f}"),
           ("box_count_bias", "box count bias", "{:+.2f}")]
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(\w*(?:Error|Exception|Interrupt)\b.*)")
# the checkout bloodseg runs from (git_info asks git there; outside one, git says nothing)
CHECKOUT = Path(__file__).resolve().parents[2]


# -- provenance ----------------------------------------------------------------------------


def host() -> dict:
    """``results.json``'s ``host``: CPUs, machine, Python and the versions that score."""
    out = {"cpus": os.cpu_count(), "machine": platform.machine(),
           "python": platform.python_version()}
    for pkg in ("torch", "pytorch-lightning", "opencv-python-headless", "numpy"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def git_info(paths: Sequence[str] = ()) -> dict:
    """The commit of bloodseg's checkout (the last one touching ``paths``, if given) and
    whether they have uncommitted changes; ``None`` for both outside a git checkout (an
    installed copy)."""
    if not (CHECKOUT / "pyproject.toml").is_file():
        return {"commit": None, "dirty": None}

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=CHECKOUT, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=30, check=True).stdout.strip()
    try:
        return {"commit": git("log", "-1", "--format=%H", "HEAD", "--", *paths),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", *paths))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


# -- the file ------------------------------------------------------------------------------


def new_results(argv: Sequence[str], quick: bool, started: datetime, git: dict, data: dict,
                work: Path, fixed_overrides: list[str], recipes: dict[str, list[str]],
                variants: dict[str, list[str]], baselines: dict[str, list[dict]],
                labels: dict[str, str], prog: str = PRODUCER) -> dict:
    """The results before the recipes run: how it was called (``prog`` and ``argv``, the
    ``git`` commit), on what (``data``), the overrides every run gets, the recipes and
    test-time ``variants``, the baselines' folds (``labels``: their names in the table), and
    an empty method per recipe and per (recipe, variant), filled fold by fold."""
    results = {
        "benchmark": prog,
        "quick": quick,
        "command": shlex.join([prog, *argv]),
        "argv": list(argv),
        "cwd": os.getcwd(),
        "git": git,
        "started": started.isoformat(timespec="seconds"),
        "finished": None,
        "host": host(),
        "data": data,
        "work": str(work),
        "fixed_overrides": fixed_overrides,
        "recipes": recipes,
        **({"variants": variants} if variants else {}),
        "methods": {m: {"kind": "baseline", "label": labels[m], "folds": f}
                    for m, f in baselines.items()},
    }
    for name in recipes:
        results["methods"][name] = {"kind": "recipe", "label": name, "folds": []}
        for v in variants:
            results["methods"][f"{name}+{v}"] = {"kind": "recipe", "label": f"{name}+{v}",
                                                 "recipe": name, "variant": v, "folds": []}
    return results


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def results_json(results: dict) -> str:
    """``results.json``'s text: NaN and infinities as null, paths as strings."""
    return json.dumps(_json_safe(results), indent=2) + "\n"


def read_results(out: str | Path) -> dict:
    """``<out>/results.json``; FileNotFoundError naming it when there is none."""
    path = Path(out) / RESULTS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results; run the cross-validation first")
    return rundir.read_json(path)


# -- fold rows -----------------------------------------------------------------------------




def fold_scores(payload: dict | None, rows: Sequence[dict]) -> tuple[dict, dict, list[dict]]:
    """(metrics, resolution per metric, per-image counts) of a fold from what
    :mod:`bloodseg.rundir` read in its run folder: ``test_metrics.json``
    (:func:`~bloodseg.rundir.read_test_payload`, today's metric names) and ``per_image.csv``
    rows. The test stage scores every image at its native size; a missing metric is NaN."""
    payload = payload or {"metrics": {}}
    raw = payload["metrics"]
    metrics, resolution = {}, {}
    for name in METRICS:
        found = f"test/{name}" in raw
        metrics[name] = raw[f"test/{name}"] if found else float("nan")
        resolution[name] = "native" if found else None
    # matches kept for paired per-image comparisons (benchmarks/paired.py)
    per_image = [{"file": r["file"], "true_count": int(r["true_count"]),
                  "pred_count": int(r["pred_count"]),
                  **{k: int(r[k]) for k in ("tp", "fp", "fn") if k in r}}
                 for r in rows]
    return metrics, resolution, per_image


def run_scores(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """:func:`fold_scores` of a finished run (or evaluate) folder."""
    return fold_scores(rundir.read_test_payload(run_dir), rundir.read_per_image(run_dir))


def tested_fold(run_dir: Path) -> dict:
    """A (recipe, fold) row as its finished run tested it: metrics, per-image counts and the
    times its :data:`RUN_RECORD` recorded."""
    record = rundir.read_json(run_dir / RUN_RECORD) if (run_dir / RUN_RECORD).is_file() else {}
    metrics, resolution, per_image = run_scores(run_dir)
    return {"status": "ok", "resumed": True, "run_dir": str(run_dir),
            "wall_s": record.get("wall_s"), "cpu_s": record.get("cpu_s"),
            "trained_with": record.get("overrides"), "metrics": metrics,
            "resolution": resolution, "per_image": per_image}


def baseline_fold(agg: dict, dice: float, rows: Sequence[dict], wall: float, cpu: float,
                  note: str) -> dict:
    """A baseline's fold row: ``agg`` is its ``InstanceStats.aggregate()``, ``dice`` the
    pooled Dice, ``rows`` its per-image rows."""
    metrics = {name: float(dice) if name == "dice" else float(agg.get(name, math.nan))
               for name in METRICS}
    per_image = [{"file": r["file"], "true_count": r["true_count"],
                  "pred_count": r["pred_count"], **{k: r[k] for k in ("tp", "fp", "fn")}}
                 for r in rows]
    return {"status": "ok", "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "time_note": note, "metrics": metrics,
            "resolution": {name: "native" for name in METRICS}, "per_image": per_image}


def summarize_error(log: Path, limit: int = 400) -> str:
    """A failed run's error from its log (:data:`RUN_LOG`): its exception lines, last first,
    then the ones it was raised from (``<-``); the last line of output when there is none."""
    lines = [ln.strip() for ln in (log.read_text(errors="replace").splitlines()
                                   if log.is_file() else []) if ln.strip()]
    found = list(dict.fromkeys(m.group(1) for ln in reversed(lines)
                               if (m := EXCEPTION_LINE.match(ln))))
    text = " <- ".join(found) if found else (lines[-1] if lines else "no output")
    return text if len(text) <= limit else text[: limit - 1] + "…"
