"""What a cross-validation writes into its results folder, from ``results.json`` alone: the
table and its caption (``results.md``, :func:`cv_markdown`), predicted vs true cells per image
(``counts.png``, :func:`plot_cv_counts`) and a README section (:func:`update_cv_section`).

:func:`write_cv_outputs` summarizes every method (:func:`bloodseg.cv.summary.summarize`) and
writes all three files; the plot is the report's one counts plot
(:func:`bloodseg.report.figures.plot_count_scatter`), the section is rewritten between its
markers by :func:`bloodseg.report.readme.replace_section`.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bloodseg.cv.recipes import QUICK_OVERRIDES
from bloodseg.cv.results import (
    COLUMNS,
    PRODUCER,
    QUICK_NOTE,
    RESULTS,
    RUN_LOG,
    RUN_RECORD,
    results_json,
)
from bloodseg.cv.summary import finite, summarize
from bloodseg.io import write_text_atomic
from bloodseg.report.figures import plot_count_scatter
from bloodseg.report.readme import replace_section

__all__ = ["COUNTS", "TABLE", "cv_markdown", "plot_cv_counts", "update_cv_section",
           "write_cv_outputs"]

TABLE = "results.md"
COUNTS = "counts.png"


def _fmt(stat: dict, fmt: str) -> str:
    if not finite(stat.get("mean")):
        return "—"
    text = fmt.format(stat["mean"])
    return f"{text} ± {fmt.format(stat['sd']).lstrip('+')}" if finite(stat.get("sd")) \
        else text


def _label(name: str, method: dict) -> str:
    return method.get("label", name) if method["kind"] == "baseline" else f"`{name}`"


def cv_markdown(results: dict, figure: str | None = COUNTS,
                quick_overrides: Sequence[str] = QUICK_OVERRIDES) -> str:
    """The table and its caption (``figure``: the counts plot's link, or None;
    ``quick_overrides``: what a quick run added to every recipe, named in its caption).
    Every method needs its ``summary`` (:func:`write_cv_outputs` adds them)."""
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


def plot_cv_counts(results: dict, path: Path) -> Path | None:
    """Predicted vs true cells per image, all folds, one colour per method, y = x; None when
    no fold has a point."""
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


def update_cv_section(readme: Path, section: str, results: dict, out: Path) -> Path:
    """Rewrite the README's ``section`` with the table of ``out``'s results (and its
    ``counts.png``, linked relative to the README)."""
    figure = None
    if (out / COUNTS).is_file():
        figure = Path(os.path.relpath(out.resolve() / COUNTS,
                                      readme.resolve().parent)).as_posix()
    rel = Path(os.path.relpath(out.resolve(), readme.resolve().parent)).as_posix()
    body = (f"Generated by `{results.get('benchmark') or PRODUCER}` into `{rel}/` (per-fold "
            f"numbers: `{RESULTS}`).\n\n" + cv_markdown(results, figure))
    return replace_section(readme, section, body)


def write_cv_outputs(results: dict, out: Path, json_too: bool = True) -> None:
    """Each method's ``summary`` (into ``results``), then ``results.json`` (unless
    ``json_too`` is False), ``counts.png`` and ``results.md`` into ``out``."""
    for method in results["methods"].values():
        method["summary"] = summarize(method["folds"])
    out.mkdir(parents=True, exist_ok=True)
    if json_too:
        write_text_atomic(out / RESULTS, results_json(results))
    figure = plot_cv_counts(results, out / COUNTS)
    write_text_atomic(out / TABLE, cv_markdown(results, COUNTS if figure else None))
