"""The fold runner: k-fold cross-validation of recipes, with the Otsu baselines beside them.

All image/mask pairs of a Kaggle-layout folder (train/ and test/ pooled) are split into folds
(:mod:`bloodseg.cv.folds`); each fold's folder under ``work`` holds symbolic links only (the
data folder itself is never written). Then

* every recipe (:mod:`bloodseg.cv.recipes`) trains on the fold's ``train/`` (its
  ``data.val_fraction`` held out for checkpoint selection), tunes its post-processing there
  and is tested on the fold's ``test/``: one ``bloodseg-train`` subprocess per (recipe,
  fold) (:mod:`bloodseg.cv.steps`), run folder ``<work>/<recipe>/fold<k>/``, its output in
  ``benchmark_run.log`` there;
* Otsu + connected components, Otsu + bloodseg watershed and Otsu + the watershed tuned on
  the fold's training images (:mod:`bloodseg.baselines`) are scored on the same test images
  at native resolution;
* ``rescore`` re-tests finished runs' ``best.ckpt`` under the recipe as it is now, in
  ``<run>/rescore/``; a variant (``NAME="test-time overrides"``) re-tests them with those
  overrides into ``<run>/rescore-NAME/`` as the method ``<recipe>+NAME``; an ensemble
  averages recipes' networks per fold (:mod:`bloodseg.cv.ensemble`).

Every fold of every method goes into ``<out>/results.json`` as it finishes (an interrupted
cross-validation keeps what it measured), with ``results.md`` and ``counts.png``
(:mod:`bloodseg.cv.outputs`); :func:`run_cv` is the whole of it, :func:`render_cv` draws the
outputs again from ``results.json`` alone.

    >>> outcome = run_cv(CVOptions(root=Path("data/bbbc041seg-mini"), out=Path("cv"),
    ...                            recipes=("distance_s05",), baselines=False))
    >>> outcome.failed            # [(method, fold), ...] that did not finish
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bloodseg import baselines as otsu
from bloodseg import rundir
from bloodseg.cv import steps
from bloodseg.cv.ensemble import ensemble_fold, parse_ensembles
from bloodseg.cv.folds import FOLDS_DIR, assign_folds, build_fold_dirs, data_kind, list_pairs
from bloodseg.cv.outputs import COUNTS, TABLE, cv_markdown, update_cv_section, write_cv_outputs
from bloodseg.cv.recipes import (
    FIXED_OVERRIDES,
    RecipeError,
    hydra_value,
    merge_overrides,
    parse_named,
    run_overrides,
    same_training,
    select_recipes,
)
from bloodseg.cv.results import (
    COLUMNS,
    PRODUCER,
    QUICK_NOTE,
    RESULTS,
    RUN_LOG,
    RUN_RECORD,
    baseline_fold,
    git_info,
    new_results,
    read_results,
    run_scores,
    summarize_error,
    tested_fold,
)
from bloodseg.cv.summary import finite
from bloodseg.data.bbbc041seg import Sample, read_native_instances, resolve_root
from bloodseg.data.boxes import read_boxes_csv
from bloodseg.io import write_text_atomic
from bloodseg.labels import CUT_CELL_FRAC
from bloodseg.metrics import InstanceStats
from bloodseg.postprocess import Watershed

__all__ = ["BASELINE_LABELS", "CVError", "CVOptions", "CVOutcome", "DEFAULT_FOLDS",
           "QUICK_FOLDS", "QUICK_RECIPES", "SECTION", "finished_fold", "image_sizes",
           "render_cv", "rescore_dir", "rescore_fold", "run_baselines", "run_cv", "run_fold",
           "run_variant", "trained"]

DEFAULT_FOLDS = 4
QUICK_FOLDS = 2
QUICK_RECIPES = 2
SECTION = "benchmark"  # the README section --readme rewrites
RESCORE_DIR = "rescore"  # <run>/rescore/, and <run>/rescore-<variant>/ for a variant
# What a re-test's scores depend on besides its arguments and checkpoint (README or benchmark
# edits do not change them)
SCORING_CODE = ("bloodseg", "conf", "train.py")
MASKS_VS_BOXES = "masks-vs-boxes"
BASELINE_LABELS = {otsu.OTSU_CC: "Otsu + connected components",
                   otsu.OTSU_WATERSHED: "Otsu + bloodseg watershed",
                   otsu.OTSU_TUNED: "Otsu + bloodseg watershed, tuned",
                   MASKS_VS_BOXES: "the masks themselves (human vs human)"}


class CVError(ValueError):
    """A cross-validation that cannot run as asked: the message names the option, file or
    folder and the fix. Options, data and folders are checked before anything trains."""


@dataclass
class CVOptions:
    """One call: the data (``root``), where results (``out``) and runs (``work``, default
    ``<out>/work``) go, the folds, what runs and how (see ``bloodseg-cv --help``)."""

    root: Path
    out: Path
    work: Path | None = None
    folds: int | None = None          # DEFAULT_FOLDS; QUICK_FOLDS with quick
    seed: int = 0                     # the fold permutation, and each run's seed
    recipes: Sequence[str] = ()       # names of conf/experiment/bench/ (all without recipe)
    recipe: Sequence[str] = ()        # NAME="overrides" recipes
    variants: Sequence[str] = ()      # NAME="test-time overrides" (with rescore)
    ensembles: Sequence[str] = ()     # NAME="recipe,recipe"
    only_variants: bool = False
    baselines: bool = True
    quick: bool = False
    resume: bool = False
    rescore: bool = False
    cut_cell_frac: float | None = None  # the baselines'; default: the data's rule
    boxes: Path | None = None         # a second reference (stem,x0,y0,x1,y1 CSV): box columns
    readme: Path | None = None
    section: str = SECTION
    argv: Sequence[str] = ()          # the command line, as results.json records it
    prog: str = PRODUCER


@dataclass
class CVOutcome:
    """What a call wrote and which (method, fold) did not finish."""

    out: Path
    table: str = ""
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# -- one fold ------------------------------------------------------------------------------


def _brief(metrics: dict) -> str:
    return ", ".join(f"{label} {fmt.format(metrics[k])}" for k, label, fmt in COLUMNS[:4]
                     if finite(metrics.get(k)))


def _run_step(cmd: list[str], folder: Path, label: str, doing: str
              ) -> tuple[int, float, float, Path]:
    """Run ``cmd`` into an emptied ``folder``, its output in ``folder/RUN_LOG``; (exit code,
    wall s, CPU s of the subprocess, the log)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    log = folder / RUN_LOG
    print(f"[{label}] {doing} (log: {log})", flush=True)
    rc, wall, cpu = steps.run_logged(cmd, log)
    return rc, wall, cpu, log


def _failed(label: str, error: str, log: Path, folder: Path, cmd: list[str],
            result: dict) -> dict:
    """Report a failed run (its error and log tail on stderr) as a result row."""
    print(f"[{label}] FAILED ({error}); last lines of {log}:\n{steps.tail(log)}\n",
          file=sys.stderr, flush=True)
    return {**result, "status": "failed", "error": error, "run_dir": str(folder),
            "command": shlex.join(cmd)}


def trained(run_dir: Path) -> bool:
    """Whether a (recipe, fold) run finished: tested, its best checkpoint kept."""
    return (run_dir / rundir.TEST_METRICS).is_file() and \
        (run_dir / rundir.CHECKPOINTS / "best.ckpt").is_file()


def rescore_dir(run_dir: Path, variant: str | None = None) -> Path:
    """Where a run's re-test goes: ``<run>/rescore/``, or ``<run>/rescore-<variant>/``."""
    return run_dir / (f"{RESCORE_DIR}-{variant}" if variant else RESCORE_DIR)


def rescore_fold(recipe: str, overrides: list[str], fold: int, fold_dir: Path, run_dir: Path,
                 seed: int, quick: bool, variant: str | None = None,
                 test_overrides: Sequence[str] = ()) -> dict:
    """Test a finished run's ``best.ckpt`` again under the recipe as it is now (its
    post-processing, tuning included), plus a variant's ``test_overrides``
    (``predict.tta=true``), in :func:`rescore_dir`; training time is the run's. A re-test
    with the same arguments, checkpoint and committed code is reused."""
    record = rundir.read_json(run_dir / RUN_RECORD)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    test_dir = rescore_dir(run_dir, variant)
    recipe = f"{recipe}+{variant}" if variant else recipe
    args = merge_overrides(run_overrides(overrides, fold_dir, test_dir, seed, quick),
                           test_overrides, ["train=false", f"ckpt_path={hydra_value(ckpt)}"])
    cmd = steps.command("train", args)
    test_record = test_dir / RUN_RECORD
    old = rundir.read_json(test_record) if test_record.is_file() else {}
    # the same arguments, checkpoint and code (a committed, clean tree): nothing could differ
    code = git_info(SCORING_CODE)
    same_code = code["commit"] is not None and code["dirty"] is False and old.get("code") == code
    if old.get("overrides") == args and (test_dir / rundir.TEST_METRICS).is_file() \
            and old.get("ckpt_mtime_ns") == ckpt.stat().st_mtime_ns and same_code:
        print(f"[{recipe} fold {fold}] re-tested before, reusing {test_dir}", flush=True)
        wall, cpu, rc = old["rescore_wall_s"], old["rescore_cpu_s"], 0
        log = test_dir / RUN_LOG
    else:
        rc, wall, cpu, log = _run_step(cmd, test_dir, f"{recipe} fold {fold}",
                                       f"re-testing {ckpt}")
        write_text_atomic(test_record, json.dumps(
            {"recipe": recipe, "fold": fold, "overrides": args, "command": cmd,
             "returncode": rc, "ckpt_mtime_ns": ckpt.stat().st_mtime_ns, "code": code,
             "rescore_wall_s": round(wall, 2), "rescore_cpu_s": round(cpu, 2)}, indent=2))
    result = {"status": "ok", "resumed": True, "rescored": True,
              **({"variant": variant} if variant else {}),
              "wall_s": record.get("wall_s"), "cpu_s": record.get("cpu_s"),
              "rescore_wall_s": round(wall, 2), "rescore_cpu_s": round(cpu, 2),
              "trained_with": record.get("overrides")}
    if rc != 0 or not (test_dir / rundir.TEST_METRICS).is_file():
        return _failed(f"{recipe} fold {fold}", f"re-test exit code {rc}: {summarize_error(log)}",
                       log, test_dir, cmd, result)
    metrics, resolution, per_image = run_scores(test_dir)
    print(f"[{recipe} fold {fold}] re-tested: {_brief(metrics)} in {wall:.0f} s", flush=True)
    return {**result, "run_dir": str(test_dir), "command": shlex.join(cmd),
            "metrics": metrics, "resolution": resolution, "per_image": per_image}


def finished_fold(recipe: str, fold: int, run_dir: Path) -> dict:
    """One fold's row as its run tested it (``only_variants``); a failed row, never a
    training, when the run has not finished."""
    if not trained(run_dir):
        return {"status": "failed", "run_dir": str(run_dir),
                "error": f"not finished yet (no {rundir.TEST_METRICS} or best.ckpt)"}
    row = tested_fold(run_dir)
    print(f"[{recipe} fold {fold}] as tested: {_brief(row['metrics'])}", flush=True)
    return row


def run_variant(recipe: str, overrides: list[str], variant: str, test_overrides: list[str],
                fold: int, fold_dir: Path, run_dir: Path, seed: int, quick: bool) -> dict:
    """The variant ``<recipe>+<variant>`` of one fold: the run's ``best.ckpt`` re-tested with
    ``test_overrides``; a failed row when the run itself did not finish."""
    if not trained(run_dir):
        return {"status": "failed", "variant": variant, "run_dir": str(run_dir),
                "error": f"no finished run to re-test (no {rundir.TEST_METRICS} or best.ckpt)"}
    return rescore_fold(recipe, overrides, fold, fold_dir, run_dir, seed, quick, variant,
                        test_overrides)


def run_fold(recipe: str, overrides: list[str], fold: int, fold_dir: Path, run_dir: Path,
             seed: int, quick: bool, resume: bool, rescore: bool = False) -> dict:
    """Train + tune + test one (recipe, fold) in a ``bloodseg-train`` subprocess (or reuse it
    with ``resume``, or re-test its checkpoint with ``rescore``); a failed run is a row with
    its error, never an exception."""
    args = run_overrides(overrides, fold_dir, run_dir, seed, quick)
    cmd = steps.command("train", args)
    record_path = run_dir / RUN_RECORD
    old = rundir.read_json(record_path) if record_path.is_file() else {}
    done = (run_dir / rundir.TEST_METRICS).is_file()
    if rescore and done and trained(run_dir):
        return rescore_fold(recipe, overrides, fold, fold_dir, run_dir, seed, quick)
    if resume and done and same_training(old.get("overrides", args), args):
        print(f"[{recipe} fold {fold}] done before, reusing {run_dir}", flush=True)
        result = {"status": "ok", "resumed": True, "wall_s": old.get("wall_s"),
                  "cpu_s": old.get("cpu_s")}
    else:
        if resume and done:
            print(f"[{recipe} fold {fold}] the recipe changed since {run_dir} ran; rerunning",
                  flush=True)
        rc, wall, cpu, log = _run_step(cmd, run_dir, f"{recipe} fold {fold}", "training")
        result = {"status": "ok", "resumed": False, "wall_s": round(wall, 2),
                  "cpu_s": round(cpu, 2)}
        write_text_atomic(record_path, json.dumps(
            {"recipe": recipe, "fold": fold, "overrides": args, "command": cmd,
             "returncode": rc, **result}, indent=2))
        if rc != 0 or not (run_dir / rundir.TEST_METRICS).is_file():
            error = summarize_error(log)
            error = f"exit code {rc}: {error}" if rc else f"no {rundir.TEST_METRICS}: {error}"
            return _failed(f"{recipe} fold {fold}", error, log, run_dir, cmd, result)
    metrics, resolution, per_image = run_scores(run_dir)
    print(f"[{recipe} fold {fold}] {_brief(metrics)} in {result['wall_s']} s "
          f"(CPU {result['cpu_s']} s)", flush=True)
    return {**result, "run_dir": str(run_dir), "command": shlex.join(cmd),
            "metrics": metrics, "resolution": resolution, "per_image": per_image}


# -- baselines -----------------------------------------------------------------------------


def run_baselines(samples: dict[str, Sample], fold_names: Sequence[Sequence[str]],
                  cut_cell_frac: float = 0.0, boxes: dict | None = None
                  ) -> dict[str, list[dict]]:
    """The three Otsu baselines (:mod:`bloodseg.baselines`) on each fold's test images, at
    native resolution; the watershed drops frame-cut cells as the recipes' post-processing
    does (``cut_cell_frac``); the tuned one chooses its grid (split depth; the frame-cut
    cut-off where the data has a rule) on the fold's training images, as the recipes'
    ``tune`` does: networks that tune their post-processing meet a baseline that does too."""
    plain = (otsu.OTSU_CC, otsu.OTSU_WATERSHED)  # scored together (one Otsu pass)
    out: dict[str, list[dict]] = {m: [] for m in otsu.METHODS}
    watershed = Watershed(cut_cell_frac=cut_cell_frac)
    cpu0, t0 = time.process_time(), time.perf_counter()
    items = {it.name: it for it in otsu.otsu_items(list(samples.values()))}
    # Otsu runs once per image; each fold's share of it is counted in its times
    otsu_cpu = (time.process_time() - cpu0) / len(fold_names)
    otsu_wall = (time.perf_counter() - t0) / len(fold_names)
    for k, names in enumerate(fold_names):
        test = [items[n] for n in names]
        cpu0, t0 = time.process_time(), time.perf_counter()
        scores = otsu.score_otsu(test, watershed, boxes=boxes)
        wall, cpu = time.perf_counter() - t0 + otsu_wall, time.process_time() - cpu0 + otsu_cpu
        for method in plain:
            agg = scores.stats[method].aggregate()
            out[method].append(baseline_fold(
                agg, scores.pooled_dice, scores.stats[method].rows, wall, cpu,
                "both baselines together (Otsu once, then CC and watershed)"))
        cpu0, t0 = time.process_time(), time.perf_counter()
        stats, result = otsu.score_tuned(test, [it for n, it in items.items() if n not in names],
                                         watershed, boxes)
        out[otsu.OTSU_TUNED].append({
            "tuned": result.best, **baseline_fold(
                stats.aggregate(), scores.pooled_dice, stats.rows,
                time.perf_counter() - t0 + otsu_wall, time.process_time() - cpu0 + otsu_cpu,
                "Otsu on all images once, then tuning on the training images")})
        print(f"[baselines fold {k}] " + "; ".join(
            f"{m}: {_brief(out[m][-1]['metrics'])}" for m in otsu.METHODS) +
              f" ({result.best}) in {wall:.1f} s", flush=True)
    return out


def masks_vs_boxes(samples: dict[str, Sample], fold_names: Sequence[Sequence[str]],
                   boxes: dict) -> list[dict]:
    """The yardstick row: the masks themselves (one human annotation) scored against the
    boxes (the other) on each fold's test images, the way every method is: only the box
    columns mean anything here (against themselves the masks score perfectly)."""
    out = []
    for names in fold_names:
        t0, cpu0 = time.perf_counter(), time.process_time()
        stats = InstanceStats(boxes=boxes)
        for n in names:
            truth = read_native_instances(samples[n])
            stats.update(samples[n].image.name, truth, truth)
        agg = stats.aggregate()
        fold = baseline_fold(agg, math.nan, stats.rows, time.perf_counter() - t0,
                             time.process_time() - cpu0, "reading the masks and boxes")
        fold["metrics"] = {k: (v if k.startswith("box_") else math.nan)
                           for k, v in fold["metrics"].items()}
        fold["resolution"] = {k: ("native" if k.startswith("box_") else None)
                              for k in fold["resolution"]}
        # its points in the counts plot: the boxes' count against the masks' count
        fold["per_image"] = [{"file": r["file"], "true_count": r["true_count"],
                              "pred_count": r["box_count"]} for r in stats.rows
                             if "box_count" in r]
        out.append(fold)
    return out


def image_sizes(samples: Sequence[Sample]) -> dict[str, int]:
    """``data.image_sizes``: how many images of each width×height, most common first (the
    files' headers only)."""
    from PIL import Image

    counts: Counter[str] = Counter()
    for sample in samples:
        with Image.open(sample.image) as im:
            counts["{}×{}".format(*im.size)] += 1
    return dict(counts.most_common())


# -- a whole call --------------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_readme(readme: Path | None, section: str) -> None:
    from bloodseg.report.readme import find_section

    if readme is not None:
        try:
            find_section(readme, section)  # fail now, not after an hour
        except ValueError as e:
            raise CVError(str(e)) from e


def _readme(readme: Path | None, section: str, results: dict, out: Path,
            outcome: CVOutcome) -> None:
    """The README section from ``results``; quick numbers never reach a README."""
    if readme is not None and results.get("quick"):
        outcome.notes.append(f"{QUICK_NOTE}: {readme} left unchanged")
    elif readme is not None:
        outcome.written.append(update_cv_section(readme, section, results, out))


def render_cv(out: Path, readme: Path | None = None, section: str = SECTION) -> CVOutcome:
    """``results.md``, ``counts.png`` and the README section again from ``out/results.json``
    (a finished or interrupted cross-validation's); nothing runs."""
    _check_readme(readme, section)
    try:
        results = read_results(out)
    except FileNotFoundError as e:
        raise CVError(str(e)) from None
    write_cv_outputs(results, out, json_too=False)
    outcome = CVOutcome(out, written=[out / TABLE] + ([out / COUNTS] if (out / COUNTS).is_file()
                                                      else []))
    _readme(readme, section, results, out, outcome)
    return outcome


def _plan(opts: CVOptions) -> tuple[dict, dict, dict]:
    """(recipes, variants, ensembles) of a call, checked before anything runs."""
    recipes = select_recipes(opts.recipes, opts.recipe, reserved=FOLDS_DIR)
    if opts.quick:
        recipes = dict(list(recipes.items())[:QUICK_RECIPES])
    variants: dict[str, list[str]] = {}
    for text in opts.variants:
        name, overrides = parse_named(text, "--variant")
        if name in variants:
            raise CVError(f"variant {name!r} given twice")
        variants[name] = overrides
    ensembles = parse_ensembles(opts.ensembles, list(recipes))
    if opts.only_variants and not variants and not ensembles:
        raise CVError("--only-variants needs at least one --variant NAME=\"...\" or "
                      "--ensemble NAME=\"a,b\"")
    if variants and not (opts.rescore or opts.only_variants):
        raise CVError("--variant re-tests trained runs: use it with --rescore")
    return recipes, variants, ensembles


def run_cv(opts: CVOptions) -> CVOutcome:
    """One cross-validation call (module docstring); CVError, before anything is trained,
    for options, data or folders that cannot work."""
    try:
        return _run_cv(opts)
    except RecipeError as e:
        raise CVError(str(e)) from None


def _run_cv(opts: CVOptions) -> CVOutcome:
    started = datetime.now(timezone.utc)
    folds = opts.folds or (QUICK_FOLDS if opts.quick else DEFAULT_FOLDS)
    out = Path(opts.out).resolve()
    work = Path(opts.work or out / "work").resolve()
    _check_readme(opts.readme, opts.section)
    recipes, variants, ensembles = _plan(opts)
    rescore = opts.rescore or opts.only_variants  # variants re-test; recipes' runs only read

    try:
        samples = list_pairs(opts.root)
    except ValueError as e:
        raise CVError(str(e)) from e
    data_root = resolve_root(opts.root).resolve()
    for label, path in (("--work", work), ("--out", out)):
        if _inside(path, data_root) or _inside(data_root, path):
            raise CVError(f"{label} {path} overlaps the data folder {data_root}; a "
                          "cross-validation never writes next to the data")
    try:
        fold_names = assign_folds([s.name for s in samples], folds, opts.seed)
    except ValueError as e:
        raise CVError(f"{data_root}: {e}") from e

    work.mkdir(parents=True, exist_ok=True)
    # run folders (checkpoints, links) and quick-mode outputs stay out of git
    for folder in [work] + ([out] if opts.quick else []):
        if not (folder / ".gitignore").exists():
            write_text_atomic(folder / ".gitignore", f"# {opts.prog} output\n*\n")
    folds_file = work / "folds.json"
    plan = {"root": str(data_root), "seed": opts.seed, "folds": fold_names}
    if opts.resume and folds_file.is_file() and rundir.read_json(folds_file) != plan:
        raise CVError(f"{folds_file}: the folds differ from this call's (other data, "
                      "--folds or --seed); run without --resume or use another --work")
    write_text_atomic(folds_file, json.dumps(plan, indent=2))
    boxes = read_boxes_csv(opts.boxes) if opts.boxes else None
    fold_dirs = build_fold_dirs(samples, fold_names, work, opts.boxes)
    print(f"{len(samples)} pairs of {data_root} in {folds} folds "
          f"({', '.join(str(len(f)) for f in fold_names)} test images); work folder {work}",
          flush=True)

    by_name = {s.name: s for s in samples}
    kind = data_kind(data_root)
    cut = opts.cut_cell_frac if opts.cut_cell_frac is not None else (
        CUT_CELL_FRAC if kind == "real" else 0.0)
    baselines = run_baselines(by_name, fold_names, cut, boxes) if opts.baselines else {}
    if boxes is not None:
        baselines[MASKS_VS_BOXES] = masks_vs_boxes(by_name, fold_names, boxes)
    fold_sizes = sorted({len(f) for f in fold_names})
    data = {"root": str(data_root), "name": data_root.name, "kind": kind, "cut_cell_frac": cut,
            "n_pairs": len(samples), "folds": folds, "seed": opts.seed,
            "image_sizes": image_sizes(samples),
            "fold_sizes_text": "/".join(str(n) for n in fold_sizes),
            "fold_test_files": fold_names}
    fixed = [*FIXED_OVERRIDES, f"seed={opts.seed}"]
    results = new_results(opts.argv, opts.quick, started, git_info(), data, work, fixed, recipes,
                          variants, baselines, BASELINE_LABELS, opts.prog)
    if ensembles:
        results["ensembles"] = ensembles
        for name, members in ensembles.items():
            results["methods"][name] = {"kind": "recipe", "label": name, "members": members,
                                        "folds": []}
    write_cv_outputs(results, out)

    for name, overrides in recipes.items():
        method = results["methods"][name]
        for k, fold_dir in enumerate(fold_dirs):
            run_dir = work / name / f"fold{k}"
            method["folds"].append(
                finished_fold(name, k, run_dir) if opts.only_variants else
                run_fold(name, overrides, k, fold_dir, run_dir, opts.seed, opts.quick,
                         opts.resume, rescore))
            for v, test_overrides in variants.items():
                results["methods"][f"{name}+{v}"]["folds"].append(run_variant(
                    name, overrides, v, test_overrides, k, fold_dir, run_dir, opts.seed,
                    opts.quick))
            write_cv_outputs(results, out)  # an interrupted call keeps what it measured
    for name, members in ensembles.items():
        for k, fold_dir in enumerate(fold_dirs):
            runs = {m: work / m / f"fold{k}" for m in members}
            results["methods"][name]["folds"].append(ensemble_fold(
                name, runs, k, fold_dir, work / name / f"fold{k}"))
            write_cv_outputs(results, out)

    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_cv_outputs(results, out)
    outcome = CVOutcome(out, table=cv_markdown(results, None),
                        written=[out / RESULTS, out / TABLE]
                        + ([out / COUNTS] if (out / COUNTS).is_file() else []))
    _readme(opts.readme, opts.section, results, out, outcome)
    outcome.failed = [(n, i) for n, m in results["methods"].items()
                      for i, f in enumerate(m["folds"]) if f.get("status") != "ok"]
    return outcome
