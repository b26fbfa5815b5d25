"""A cross-validation benchmark's results: ``results.json`` made, summarized and rendered.

``benchmarks/real_cv.py`` orchestrates (folds, ``train.py`` subprocesses, re-tests, the Otsu
baselines) and keeps every fold of every method in one ``results.json``; this module is that
file's format and everything drawn from it, without torch: the file begun
(:func:`new_results`), a fold row from a finished run folder (:func:`read_run`; a failed
run's error from its log, :func:`summarize_error`) or from a baseline's scores
(:func:`baseline_fold`), the mean ± sd over folds (:func:`summarize`), the file's text
(:func:`results_json`), the table and its caption (:func:`results_markdown`), the counts plot
(:func:`plot_counts`) and the README section (:func:`update_readme`). :func:`write_outputs`
writes results.json, results.md and counts.png into a results folder; a ``results.json``
alone renders again the same, byte for byte (``real_cv.py --render``).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
import shlex
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from bloodseg import rundir
from bloodseg.io import write_text_atomic
from bloodseg.report.figures import plot_count_scatter
from bloodseg.report.readme import replace_section

__all__ = ["BENCHMARK", "COLUMNS", "METRICS", "QUICK_NOTE", "RUN_LOG", "RUN_RECORD",
           "baseline_fold", "finite", "host", "mean_sd", "new_results",
           "plot_counts", "read_run", "results_json", "results_markdown", "summarize",
           "summarize_error", "update_readme", "write_outputs"]

BENCHMARK = "benchmarks/real_cv.py"  # what writes results.json
QUICK_NOTE = "QUICK MODE — not a result"
# what the benchmark leaves in each run folder: the run's output, and how it was run
RUN_LOG = "benchmark_run.log"
RUN_RECORD = "benchmark_run.json"
# a fold's metric -> its name in test_metrics.json after "test/" (or "test/native_"; older
# runs' names are read through rundir.METRIC_ALIASES) and in InstanceStats.aggregate() for
# the baselines (None: the pooled Otsu Dice)
METRICS = {
    "dice": ("dice", None),
    "count_mae": ("count_mae", "count_mae"),
    "count_bias": ("count_bias", "count_bias"),
    "f1": ("inst_f1", "f1"),
    "ap50": ("inst_ap50", "ap50"),
    "ap75": ("inst_ap75", "ap75"),
    "map": ("inst_map", "map"),
}
# (metric, table header, number format), in table order
COLUMNS = [("dice", "Dice", "{:.3f}"), ("count_mae", "count MAE", "{:.2f}"),
           ("count_bias", "count bias", "{:+.2f}"), ("f1", "F1@0.5", "{:.3f}"),
           ("ap50", "AP50", "{:.3f}"), ("ap75", "AP75", "{:.3f}"), ("map", "mAP", "{:.3f}")]
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?(\w*(?:Error|Exception|Interrupt)\b.*)")


# -- the file ------------------------------------------------------------------------------


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


def new_results(argv: list[str], quick: bool, started: datetime, git: dict, data: dict,
                work: Path, fixed_overrides: list[str], recipes: dict[str, list[str]],
                variants: dict[str, list[str]], baselines: dict[str, list[dict]],
                labels: dict[str, str]) -> dict:
    """A benchmark's results before its recipes run: how it was called (``argv``, the
    ``git`` commit), on what (``data``), the overrides every run gets, the recipes and
    test-time ``variants``, the baselines' folds (``labels``: their names in the table), and
    an empty method per recipe and per (recipe, variant), filled fold by fold."""
    results = {
        "benchmark": BENCHMARK,
        "quick": quick,
        "command": shlex.join(["python", BENCHMARK, *argv]),
        "argv": argv,
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


# -- one fold ------------------------------------------------------------------------------


def _training_size(payload: dict) -> str:
    size = payload.get("image_size")
    if isinstance(size, int):
        size = [size, size]
    if isinstance(size, list) and len(size) == 2:
        return f"{size[1]}×{size[0]} (training size)"
    return "training size"


def read_run(run_dir: Path) -> tuple[dict, dict, list[dict]]:
    """(metrics, resolution per metric, per-image counts) of a finished run folder, read
    through :mod:`bloodseg.rundir` (older runs' metric names included). ``test/native_*``
    keys win over ``test/*``; instance metrics are native when the run scored natively (it
    then logs ``test/native_dice``); a missing metric is NaN."""
    payload = rundir.read_test_payload(run_dir) or {"metrics": {}}
    raw = payload["metrics"]
    train_size = _training_size(payload)
    # the test phase scores instances at native size whenever it has native instances, and
    # then also reports test/native_dice (test/dice is torchmetrics' at the training size)
    native_test = "test/native_dice" in raw
    metrics, resolution = {}, {}
    for name, (key, _) in METRICS.items():
        metrics[name], resolution[name] = float("nan"), None
        plain = "native" if native_test and name != "dice" else train_size
        for prefix, where in (("test/native_", "native"), ("test/", plain)):
            if prefix + key in raw:
                metrics[name], resolution[name] = raw[prefix + key], where
                break
    # matches kept for paired per-image comparisons (benchmarks/paired.py)
    per_image = [{"file": r["file"], "true_count": int(r["true_count"]),
                  "pred_count": int(r["pred_count"]),
                  **{k: int(r[k]) for k in ("tp", "fp", "fn") if k in r}}
                 for r in rundir.read_per_image(run_dir)]
    return metrics, resolution, per_image


def summarize_error(log: Path, limit: int = 400) -> str:
    """A failed run's error from its log (:data:`RUN_LOG`): its exception lines, last first,
    then the ones it was raised from (``<-``); the last line of output when there is none."""
    lines = [ln.strip() for ln in (log.read_text(errors="replace").splitlines()
                                   if log.is_file() else []) if ln.strip()]
    found = list(dict.fromkeys(m.group(1) for ln in reversed(lines)
                               if (m := EXCEPTION_LINE.match(ln))))
    text = " <- ".join(found) if found else (lines[-1] if lines else "no output")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def tested_fold(run_dir: Path) -> dict:
    """A (recipe, fold) row as its finished run tested it: metrics, per-image counts and the
    times its ``benchmark_run.json`` recorded."""
    record = rundir.read_json(run_dir / RUN_RECORD) if (run_dir / RUN_RECORD).is_file() else {}
    metrics, resolution, per_image = read_run(run_dir)
    return {"status": "ok", "resumed": True, "run_dir": str(run_dir),
            "wall_s": record.get("wall_s"), "cpu_s": record.get("cpu_s"),
            "trained_with": record.get("overrides"), "metrics": metrics,
            "resolution": resolution, "per_image": per_image}


def baseline_fold(agg: dict, dice: float, rows: Sequence[dict], wall: float, cpu: float,
                  note: str) -> dict:
    """A baseline's fold row: ``agg`` is its ``InstanceStats.aggregate()``, ``dice`` the
    pooled Dice, ``rows`` its per-image rows."""
    metrics = {name: float(agg[key]) if key else float(dice)
               for name, (_, key) in METRICS.items()}
    per_image = [{"file": r["file"], "true_count": r["true_count"],
                  "pred_count": r["pred_count"], **{k: r[k] for k in ("tp", "fp", "fn")}}
                 for r in rows]
    return {"status": "ok", "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "time_note": note, "metrics": metrics,
            "resolution": {name: "native" for name in METRICS}, "per_image": per_image}


# -- summary -------------------------------------------------------------------------------


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
    summary = {name: mean_sd([f["metrics"][name] for f in ok]) for name in METRICS}
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


# -- markdown, plot, README ----------------------------------------------------------------


def _fmt(stat: dict, fmt: str) -> str:
    if not finite(stat.get("mean")):
        return "—"
    text = fmt.format(stat["mean"])
    return f"{text} ± {fmt.format(stat['sd']).lstrip('+')}" if finite(stat.get("sd")) \
        else text


def _label(name: str, method: dict) -> str:
    return method.get("label", name) if method["kind"] == "baseline" else f"`{name}`"


def results_markdown(results: dict, figure: str | None = "counts.png",
                     quick_overrides: Sequence[str] = ()) -> str:
    """The table and its caption (``figure``: the counts plot's link, or None;
    ``quick_overrides``: what a quick run added to every recipe, named in its caption)."""
    data, quick = results["data"], results["quick"]
    k = data["folds"]
    sizes = ", ".join(f"{s} ({n})" for s, n in data["image_sizes"].items())
    head = f"**{QUICK_NOTE}.** " if quick else ""
    if not results.get("finished"):
        head += "**Incomplete: the benchmark is running or was interrupted.** "
    lines = [
        f"{head}**{data['n_pairs']} {data['kind']} pairs** of `{data['name']}` "
        "(train/ and test/ pooled; "
        f"{sizes}), **{k}-fold cross-validation** (seed {data['seed']}): each fold's "
        f"{data['fold_sizes_text']} test images are unseen by its training run, which uses the "
        "other pairs (its `data.val_fraction` held out for checkpoint selection). Baselines are "
        "scored at native resolution; the column *scored at* says where each network's "
        "numbers come from. Mean ± sd (sample sd) over folds; Dice is pooled over a fold's "
        "pixels, F1/AP over its cells (IoU ≥ 0.5; AP75 at 0.75; mAP over 0.50:0.95).",
        "",
    ]
    first = f"method ({QUICK_NOTE})" if quick else "method"
    lines.append(f"| {first} | scored at | folds | "
                 + " | ".join(label for _, label, _ in COLUMNS)
                 + " | CPU s / fold | wall s / fold |")
    lines.append("|---|---|---:|" + "---:|" * (len(COLUMNS) + 2))
    failures = []
    for name, method in results["methods"].items():
        s = method["summary"]
        if s["folds_ok"] == 0:
            cells = ["failed"] * len(COLUMNS) + ["—", "—"]
        else:
            cells = [_fmt(s[key], fmt) for key, _, fmt in COLUMNS]
            cells += [_fmt(s["cpu_s"], "{:.0f}"), _fmt(s["wall_s"], "{:.0f}")]
        lines.append(f"| {_label(name, method)} | {s['resolution'] or '—'} | "
                     f"{s['folds_ok']}/{s['folds']} | " + " | ".join(cells) + " |")
        failures += [f"- `{name}` fold {i}: {f['error']} (`{f.get('run_dir')}`)"
                     for i, f in enumerate(method["folds"]) if f.get("status") != "ok"]
    lines.append("")
    if failures:
        lines += [f"Failed runs (their logs: `{RUN_LOG}` in the run folder):", *failures, ""]
    # the tuned baseline's folds record the grid point each chose
    tuned = [f for m in results["methods"].values() if m["kind"] == "baseline"
             for f in m["folds"] if f.get("tuned")]
    picks = "/".join(", ".join(f"{k} {v:g}" for k, v in f["tuned"].items()) for f in tuned)
    if any(m["kind"] == "baseline" for m in results["methods"].values()):
        about_baselines = (
            "The first two baselines' times are for both together (one Otsu pass per image). "
            "The tuned baseline chooses the watershed's own grid (split depth, and the "
            "frame-cut cut-off where the data has a rule) per fold on the fold's training "
            "images, as the recipes' `tune` does" + (f" (per fold: {picks})" if picks else "")
            + ". ")
    else:
        about_baselines = "The Otsu baselines were not run (`--no-baselines`). "
    lines.append(about_baselines + "Recipes are Hydra overrides of `train.py`; each run also gets "
                 f"`{' '.join(results['fixed_overrides'])}`"
                 + (f" and, quick mode, `{' '.join(quick_overrides)}`" if quick else "")
                 + ":")
    lines.append("")
    for name, overrides in results["recipes"].items():
        lines.append(f"- `{name}`: `{shlex.join(overrides)}`")
    lines.append("")
    cut = data.get("cut_cell_frac")
    if cut:
        lines += [f"Cells cut by the image frame and under {cut:g}× a typical cell are dropped "
                  "by every watershed here, baselines included, as the masks leave them out "
                  "(`data.cut_cell_frac`); runs that tune (and the tuned baseline) choose "
                  "this cut-off on their training images instead.", ""]
    rescored = sorted({n for n, m in results["methods"].items()
                       for f in m["folds"] if f.get("rescored")})
    if rescored:
        lines += [f"Re-tested with `--rescore`: {', '.join(f'`{n}`' for n in rescored)}: "
                  "their checkpoints were trained as recorded in each run's "
                  f"`{RUN_RECORD}` (training times are those runs'), then tested under the "
                  "recipe as listed above.", ""]
    variants = results.get("variants") or {}
    if variants:
        lines += ["Test-time variants (`--variant`): each re-tests every finished run's "
                  "`best.ckpt` (the same trained networks as the plain recipe) with "
                  + ", ".join(f"`{n}`: `{shlex.join(o)}`" for n, o in variants.items())
                  + "; reported as `<recipe>+<variant>`.", ""]
    ensembles = results.get("ensembles") or {}
    if ensembles:
        lines += ["Ensembles (`--ensemble`): on each fold the members' networks are averaged "
                  "(`ckpt_path=[...]`), their post-processing tuned together on the fold's "
                  "training images, then tested; training time is the members' sum: "
                  + ", ".join(f"`{n}` = " + " + ".join(f"`{m}`" for m in members)
                              for n, members in ensembles.items()) + ".", ""]
    commit = results["git"].get("commit")
    commit_text = f" at commit `{commit[:10]}`" + (" (uncommitted changes)"
                                                  if results["git"].get("dirty") else "") \
        if commit else ""
    lines.append(f"Command{commit_text}: `{results['command']}`")
    if figure:
        lines += ["", f"![Predicted vs true cells per image, all folds]({figure})"]
    return "\n".join(lines) + "\n"


def plot_counts(results: dict, path: Path) -> Path | None:
    """Predicted vs true cells per image, all folds, one colour per method, y = x
    (:func:`bloodseg.report.figures.plot_count_scatter`); None when no fold has a point."""
    groups = []
    for name, method in results["methods"].items():
        pts = [(r["true_count"], r["pred_count"]) for f in method["folds"]
               if f.get("status") == "ok" for r in f.get("per_image", [])]
        if pts:
            true, pred = np.array(pts, dtype=float).T
            groups.append((_label(name, method).strip("`"), true, pred))
    data = results["data"]
    title = f"{QUICK_NOTE}: cell counts" if results["quick"] else "Cell counts"
    return plot_count_scatter(
        groups, path, f"{title} on {data['n_pairs']} {data['kind']} images ({data['name']})",
        f"{data['folds']}-fold CV · one point per image, each scored in its test fold",
        xlabel="true cells per image", ylabel="predicted cells")


def update_readme(readme: Path, section: str, results: dict, out: Path) -> Path:
    """Rewrite the README's ``section`` with the table of ``out``'s results (and its
    ``counts.png``, linked relative to the README)."""
    figure = None
    if (out / "counts.png").is_file():
        figure = Path(os.path.relpath(out.resolve() / "counts.png",
                                      readme.resolve().parent)).as_posix()
    rel = Path(os.path.relpath(out.resolve(), readme.resolve().parent)).as_posix()
    body = (f"Generated by `{BENCHMARK}` (`make benchmark-real`) into `{rel}/` "
            "(per-fold numbers: `results.json`).\n\n" + results_markdown(results, figure))
    return replace_section(readme, section, body)


def write_outputs(results: dict, out: Path, json_too: bool = True,
                  quick_overrides: Sequence[str] = ()) -> None:
    """Each method's ``summary`` (into ``results``), then ``results.json`` (unless
    ``json_too`` is False), ``counts.png`` and ``results.md`` into ``out``."""
    for method in results["methods"].values():
        method["summary"] = summarize(method["folds"])
    out.mkdir(parents=True, exist_ok=True)
    if json_too:
        write_text_atomic(out / "results.json", results_json(results))
    figure = plot_counts(results, out / "counts.png")
    write_text_atomic(out / "results.md", results_markdown(
        results, "counts.png" if figure else None, quick_overrides))
