"""Real-data benchmark: k-fold cross-validation of train.py recipes and the Otsu baselines.

All image/mask pairs of a Kaggle-layout folder (train/ and test/ pooled, sorted by name) are
split into ``--folds`` folds by a permutation seeded with ``--seed``. For each fold a folder
in the Kaggle layout is made under ``--work`` of symbolic links only (the fold's images as
``test/``, all others as ``train/``; the data folder itself is never written), then

* every recipe (Hydra overrides of ``train.py``) trains on the fold's ``train/`` (the
  recipe's ``data.val_fraction`` of it held out for checkpoint selection) and is tested on
  its ``test/``: one ``train.py`` subprocess per (recipe, fold), run folder
  ``<work>/<recipe>/fold<k>/``, its output in ``benchmark_run.log`` there;
* Otsu + connected components, Otsu + bloodseg watershed and Otsu + the watershed tuned
  on the fold's training images (:mod:`bloodseg.baselines`) are scored on the
  same test images at native resolution.

Folds come from :mod:`bloodseg.cv.folds`; recipes are the configs
``conf/experiment/bench/<name>.yaml`` (``experiment=bench/<name>``), all composed from
``bench/base.yaml``. This script orchestrates (folds, subprocess runs, re-tests); the
``results.json`` format, its summary (mean ± sd over folds), table, counts plot and README
section are :mod:`bloodseg.report.cv`'s.

Written into ``--out``: ``results.json`` (every fold of every method, times, the command,
the git commit), ``results.md`` (mean ± sd over folds) and ``counts.png`` (predicted vs true
cells per image); ``--readme README.md`` also rewrites the README's ``benchmark`` section.

    python -m benchmarks.real_cv                              # every bench recipe, 4 folds
    python -m benchmarks.real_cv --recipes binary_288x384 --readme README.md
    python -m benchmarks.real_cv --recipe wide="model.base_channels=32 trainer=cpu"
    python -m benchmarks.real_cv --resume                     # skip finished (recipe, fold)s
    python -m benchmarks.real_cv --rescore                    # re-test finished runs' best.ckpt
    python -m benchmarks.real_cv --rescore --variant tta="predict.tta=true"
    python -m benchmarks.real_cv --only-variants --variant d4="predict.tta=d4 tune=null"
    python -m benchmarks.real_cv --recipes a,b --ensemble ab="a,b"  # + their average
    python -m benchmarks.real_cv --render --readme README.md  # results.json -> md, png, README
    python -m benchmarks.real_cv --quick                      # the code path, 1-2 min

(``python benchmarks/real_cv.py ...`` runs the same.)

``--rescore`` keeps each finished run's training and tests its ``best.ckpt`` again under the
recipe as it is now (e.g. after a change of the post-processing or its tuning), in
``<run>/rescore/``; the table then says so. ``--variant NAME="overrides"`` (with
``--rescore``) also tests each finished run's ``best.ckpt`` with these test-time overrides
added (``predict.tta=true``), in ``<run>/rescore-NAME/``, reported as the method
``<recipe>+NAME``: the same trained networks, image by image, for ``benchmarks/paired.py``.
``--quick`` (2 folds, the first 2 recipes, tiny
networks for 1 epoch) checks the pipeline; its numbers are not results and never go into a
README.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

from PIL import Image

from bloodseg import baselines as otsu
from bloodseg import rundir
from bloodseg.config import CONF_DIR
from bloodseg.cv.folds import (
    FOLDS_DIR,
    assign_folds,
    build_fold_dirs,
    data_kind,
    list_pairs,
)
from bloodseg.data.bbbc041seg import Sample, resolve_root
from bloodseg.io import write_text_atomic
from bloodseg.labels import CUT_CELL_FRAC
from bloodseg.postprocess import Watershed
from bloodseg.report.cv import (
    COLUMNS,
    QUICK_NOTE,
    RUN_LOG,
    RUN_RECORD,
    baseline_fold,
    finite,
    new_results,
    read_run,
    results_markdown,
    summarize_error,
    tested_fold,
    update_readme,
    write_outputs,
)
from bloodseg.report.readme import find_section

if __package__:  # python -m benchmarks.real_cv, or imported
    from benchmarks.cv_ensemble import ensemble_fold, parse_ensembles
    from benchmarks.runner import run_logged
else:  # python benchmarks/real_cv.py: this folder is sys.path[0]
    from cv_ensemble import ensemble_fold, parse_ensembles
    from runner import run_logged

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_ROOT = ROOT.parent / "shared" / "data" / "bbbc041seg-mini"
DEFAULT_OUT = ROOT / "experiments" / "benchmark-real"
# the recipes: conf/experiment/bench/<name>.yaml, each run as experiment=bench/<name>
RECIPES_DIR = Path(CONF_DIR) / "experiment" / "bench"
RECIPE_GROUP = "bench"
RECIPE_BASE = "base"  # what every recipe composes from; not a recipe itself
# the table's order, and --quick's first two; recipe files not named here follow, sorted
RECIPE_ORDER = ("binary_s05", "contour_s05", "distance_s05", "distance_s05_e24",
                "binary_wmap_s05", "binary_288x384")
SECTION = "benchmark"
RESCORE_DIR = "rescore"  # <run>/rescore/, and <run>/rescore-<variant>/ for --variant
# appended to every recipe by --quick: a tiny network, one epoch, no loader processes
QUICK_OVERRIDES = ("trainer.max_epochs=1", "data.image_size=64", "model.base_channels=4",
                   "data.num_workers=0")
QUICK_FOLDS = 2
QUICK_RECIPES = 2
BASELINES = (otsu.OTSU_CC, otsu.OTSU_WATERSHED)  # scored together (one Otsu pass)
TUNED_BASELINE = otsu.OTSU_TUNED
BASELINE_LABELS = {otsu.OTSU_CC: "Otsu + connected components",
                   otsu.OTSU_WATERSHED: "Otsu + bloodseg watershed",
                   TUNED_BASELINE: "Otsu + bloodseg watershed, tuned"}
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
SAFE_VALUE = re.compile(r"[A-Za-z0-9_/.+:@-]+")


# -- data ----------------------------------------------------------------------------------


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


# -- recipes -------------------------------------------------------------------------------


def recipe_names(folder: Path = RECIPES_DIR) -> list[str]:
    """The recipes of ``conf/experiment/bench/``: :data:`RECIPE_ORDER` first, then any other
    file, sorted (never ``base``)."""
    found = {p.stem for p in folder.glob("*.yaml")} - {RECIPE_BASE}
    return [n for n in RECIPE_ORDER if n in found] + sorted(found - set(RECIPE_ORDER))


def recipe_overrides(name: str) -> list[str]:
    """A recipe file's overrides of ``train.py``."""
    return [f"experiment={RECIPE_GROUP}/{name}"]


def parse_recipe(text: str) -> tuple[str, str]:
    name, sep, overrides = text.partition("=")
    name = name.strip()
    if not sep or not NAME_RE.fullmatch(name):
        raise SystemExit(f'--recipe {text!r}: expected NAME="override override ..." with NAME '
                         "made of letters, digits, _ . + -")
    return name, overrides.strip()


def select_recipes(args: argparse.Namespace) -> dict[str, list[str]]:
    """Name -> override list: ``--recipes`` from conf/experiment/bench/, then ``--recipe``s;
    every recipe file when neither is given."""
    chosen: dict[str, list[str]] = {}
    if args.recipes or not args.recipe:
        book = recipe_names()
        names = [n.strip() for n in args.recipes.split(",") if n.strip()] if args.recipes \
            else book
        unknown = [n for n in names if n not in book]
        if unknown:
            raise SystemExit(f"{RECIPES_DIR}: no recipe {', '.join(unknown)} (it has "
                             f"{', '.join(book) or 'none'})")
        chosen |= {n: recipe_overrides(n) for n in names}
    for text in args.recipe:
        name, overrides = parse_recipe(text)
        if name in chosen:
            raise SystemExit(f"recipe {name!r} given twice")
        chosen[name] = split_overrides(overrides)
    for name in chosen:
        if not NAME_RE.fullmatch(name) or name == FOLDS_DIR:
            raise SystemExit(f"recipe name {name!r}: use letters, digits, _ . + - (not "
                             f"{FOLDS_DIR!r})")
    if not chosen:
        raise SystemExit("no recipes to run")
    return chosen


def parse_variants(texts: Sequence[str]) -> dict[str, list[str]]:
    """``--variant NAME="overrides"`` -> name -> override list (test-time overrides)."""
    variants: dict[str, list[str]] = {}
    for text in texts:
        name, overrides = parse_recipe(text)
        if name in variants:
            raise SystemExit(f"variant {name!r} given twice")
        variants[name] = split_overrides(overrides)
    return variants


def split_overrides(text: str) -> list[str]:
    """Overrides as a shell splits them; a recipe quoted as a whole is unwrapped."""
    tokens = shlex.split(text)
    if len(tokens) == 1 and " " in tokens[0]:
        tokens = shlex.split(tokens[0])
    return tokens


def merge_overrides(*groups: Iterable[str]) -> list[str]:
    """Overrides in order, a later one replacing an earlier one of the same key."""
    merged: dict[str, str] = {}
    for group in groups:
        for item in group:
            key = item.split("=", 1)[0].lstrip("+~")
            merged.pop(key, None)
            merged[key] = item
    return list(merged.values())


def hydra_value(value: str | Path) -> str:
    """A value as a Hydra override accepts it: quoted unless it is plainly safe."""
    value = str(value)
    if SAFE_VALUE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def composed(overrides: Sequence[str]) -> dict:
    """The training config ``train.py`` would compose from ``overrides`` (unresolved), less
    the run's name and Hydra's own settings, which do not change what trains."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=False)
    cfg.pop("name", None)
    return cfg


def same_training(recorded: Sequence[str], now: Sequence[str]) -> bool:
    """Whether a run recorded with ``recorded`` overrides trained what ``now`` would: the same
    overrides, or others that compose to the same config (runs recorded before the recipe
    files spelled their recipe out; ``experiment=bench/<name>`` says it in one word)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if list(recorded) == list(now):
        return True
    try:
        return composed(recorded) == composed(now)
    except (HydraException, OmegaConfBaseException):  # an override the configs no longer take
        return False


def run_overrides(recipe: Sequence[str], fold_dir: Path, run_dir: Path, seed: int,
                  quick: bool) -> list[str]:
    fixed = ["data=bbbc041seg", f"data.root={hydra_value(fold_dir)}", "logger=csv",
             "callbacks.progress_bar=null", f"hydra.run.dir={hydra_value(run_dir)}"]
    # --seed is the training seed unless a recipe sets its own (ensemble members: the same
    # folds, other seeds)
    return merge_overrides([f"seed={seed}"], recipe, QUICK_OVERRIDES if quick else (), fixed)


# -- one training run ----------------------------------------------------------------------


def _tail(path: Path, lines: int = 40) -> str:
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _run_train_py(cmd: list[str], folder: Path, label: str, doing: str
                  ) -> tuple[int, float, float, Path]:
    """Run ``train.py`` into an emptied ``folder``, its output in ``folder/RUN_LOG``;
    (exit code, wall s, CPU s of the subprocess, the log)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    log = folder / RUN_LOG
    print(f"[{label}] {doing} (log: {log})", flush=True)
    rc, wall, cpu = run_logged(cmd, log, ROOT)
    return rc, wall, cpu, log


def _failed(label: str, error: str, log: Path, folder: Path, cmd: list[str],
            result: dict) -> dict:
    """Report a failed ``train.py`` run (its error and log tail on stderr) as a result row."""
    print(f"[{label}] FAILED ({error}); last lines of {log}:\n{_tail(log)}\n",
          file=sys.stderr, flush=True)
    return {**result, "status": "failed", "error": error, "run_dir": str(folder),
            "command": shlex.join(cmd)}


def rescore_dir(run_dir: Path, variant: str | None = None) -> Path:
    """Where a run's re-test goes: ``<run>/rescore/``, or ``<run>/rescore-<variant>/``."""
    return run_dir / (f"{RESCORE_DIR}-{variant}" if variant else RESCORE_DIR)


def rescore_fold(recipe: str, overrides: list[str], fold: int, fold_dir: Path, run_dir: Path,
                 seed: int, quick: bool, variant: str | None = None,
                 test_overrides: Sequence[str] = ()) -> dict:
    """Test a finished run's ``best.ckpt`` again under the recipe as it is now (its
    post-processing, tuning included), plus a variant's ``test_overrides``
    (``predict.tta=true``), in :func:`rescore_dir`; training time is the run's."""
    record = rundir.read_json(run_dir / RUN_RECORD)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    test_dir = rescore_dir(run_dir, variant)
    recipe = f"{recipe}+{variant}" if variant else recipe
    args = merge_overrides(run_overrides(overrides, fold_dir, test_dir, seed, quick),
                           test_overrides, ["train=false", f"ckpt_path={hydra_value(ckpt)}"])
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
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
        rc, wall, cpu, log = _run_train_py(cmd, test_dir, f"{recipe} fold {fold}",
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
    metrics, resolution, per_image = read_run(test_dir)
    print(f"[{recipe} fold {fold}] re-tested: {_brief(metrics)} in {wall:.0f} s", flush=True)
    return {**result, "run_dir": str(test_dir), "command": shlex.join(cmd),
            "metrics": metrics, "resolution": resolution, "per_image": per_image}


def trained(run_dir: Path) -> bool:
    """Whether a (recipe, fold) run finished: tested, its best checkpoint kept."""
    return (run_dir / rundir.TEST_METRICS).is_file() and \
        (run_dir / rundir.CHECKPOINTS / "best.ckpt").is_file()


def finished_fold(recipe: str, fold: int, run_dir: Path) -> dict:
    """One fold's row as its run tested it (``--only-variants``); a failed row, never a
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
    """Train + test one (recipe, fold) in a subprocess (or reuse it with ``resume``, or
    re-test its checkpoint with ``rescore``)."""
    args = run_overrides(overrides, fold_dir, run_dir, seed, quick)
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
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
        rc, wall, cpu, log = _run_train_py(cmd, run_dir, f"{recipe} fold {fold}", "training")
        result = {"status": "ok", "resumed": False, "wall_s": round(wall, 2),
                  "cpu_s": round(cpu, 2)}
        write_text_atomic(record_path, json.dumps(
            {"recipe": recipe, "fold": fold, "overrides": args, "command": cmd,
             "returncode": rc, **result}, indent=2))
        if rc != 0 or not (run_dir / rundir.TEST_METRICS).is_file():
            error = summarize_error(log)
            error = f"exit code {rc}: {error}" if rc else f"no {rundir.TEST_METRICS}: {error}"
            return _failed(f"{recipe} fold {fold}", error, log, run_dir, cmd, result)
    metrics, resolution, per_image = read_run(run_dir)
    print(f"[{recipe} fold {fold}] {_brief(metrics)} in {result['wall_s']} s "
          f"(CPU {result['cpu_s']} s)", flush=True)
    return {**result, "run_dir": str(run_dir), "command": shlex.join(cmd),
            "metrics": metrics, "resolution": resolution, "per_image": per_image}


def _brief(metrics: dict) -> str:
    return ", ".join(f"{label} {fmt.format(metrics[k])}" for k, label, fmt in COLUMNS[:4]
                     if finite(metrics.get(k)))


# -- baselines -----------------------------------------------------------------------------


def run_baselines(samples: dict[str, Sample], fold_names: Sequence[Sequence[str]],
                  cut_cell_frac: float = 0.0) -> dict[str, list[dict]]:
    """The three Otsu baselines (:mod:`bloodseg.baselines`) on each fold's test
    images, at native resolution; the watershed drops frame-cut cells as the recipes'
    post-processing does (``cut_cell_frac``); the tuned one chooses its grid (split depth;
    the frame-cut cut-off where the data has a rule) on the fold's training images, as the
    recipes' ``tune`` does: networks that tune their post-processing meet a baseline that
    does too."""
    out: dict[str, list[dict]] = {m: [] for m in otsu.METHODS}
    watershed = Watershed(min_cut_area_frac=cut_cell_frac)
    cpu0, t0 = time.process_time(), time.perf_counter()
    items = {it.name: it for it in otsu.otsu_items(list(samples.values()))}
    # Otsu runs once per image; each fold's share of it is counted in its times
    otsu_cpu = (time.process_time() - cpu0) / len(fold_names)
    otsu_wall = (time.perf_counter() - t0) / len(fold_names)
    for k, names in enumerate(fold_names):
        test = [items[n] for n in names]
        cpu0, t0 = time.process_time(), time.perf_counter()
        scores = otsu.score_otsu(test, watershed)
        wall, cpu = time.perf_counter() - t0 + otsu_wall, time.process_time() - cpu0 + otsu_cpu
        for method in BASELINES:
            agg = scores.stats[method].aggregate()
            out[method].append(baseline_fold(
                agg, scores.pooled_dice, scores.stats[method].rows, wall, cpu,
                "both baselines together (Otsu once, then CC and watershed)"))
        cpu0, t0 = time.process_time(), time.perf_counter()
        stats, result = otsu.score_tuned(test, [it for n, it in items.items() if n not in names],
                                         watershed)
        out[TUNED_BASELINE].append({
            "tuned": result.best, **baseline_fold(
                stats.aggregate(), scores.pooled_dice, stats.rows,
                time.perf_counter() - t0 + otsu_wall, time.process_time() - cpu0 + otsu_cpu,
                "Otsu on all images once, then tuning on the training images")})
        print(f"[baselines fold {k}] " + "; ".join(
            f"{m}: {_brief(out[m][-1]['metrics'])}" for m in otsu.METHODS) +
              f" ({result.best}) in {wall:.1f} s", flush=True)
    return out


def image_sizes(samples: Sequence[Sample]) -> dict[str, int]:
    """``data.image_sizes``: how many images of each width×height, most common first (the
    files' headers only)."""
    counts: Counter[str] = Counter()
    for sample in samples:
        with Image.open(sample.image) as im:
            counts["{}×{}".format(*im.size)] += 1
    return dict(counts.most_common())


# -- provenance ----------------------------------------------------------------------------


def git_info(paths: Sequence[str] = ()) -> dict:
    """The commit (the last one touching ``paths``, if given) and whether they have
    uncommitted changes; ``None`` for both outside a git checkout."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=30, check=True).stdout.strip()
    try:
        return {"commit": git("log", "-1", "--format=%H", "HEAD", "--", *paths),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no", "--", *paths))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


# What a re-test's scores depend on besides its arguments and checkpoint (README or benchmark
# edits do not change them)
SCORING_CODE = ("bloodseg", "conf", "train.py")


# -- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.split("\n")[2:]))
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                    help="Kaggle-layout data folder (default: ../shared/data/bbbc041seg-mini)")
    ap.add_argument("--folds", type=int, default=None, help="folds (default 4; --quick 2)")
    ap.add_argument("--seed", type=int, default=0,
                    help="fold permutation, and the training seed unless a recipe sets seed=")
    ap.add_argument("--recipe", action="append", default=[], metavar='NAME="OVERRIDES"',
                    help="a recipe on the command line (repeatable)")
    ap.add_argument("--recipes", default="", metavar="NAME,NAME",
                    help="recipes of conf/experiment/bench/ (default: all unless --recipe)")
    ap.add_argument("--variant", action="append", default=[], metavar='NAME="OVERRIDES"',
                    help="with --rescore: also re-test every finished run with these "
                         "test-time overrides, as method <recipe>+NAME (repeatable)")
    ap.add_argument("--ensemble", action="append", default=[], metavar='NAME="RECIPE,RECIPE"',
                    help="also score the average of these recipes' networks on each fold "
                         "(tuned together on its training images), as method NAME; the "
                         "recipes train first (benchmarks/cv_ensemble.py; repeatable)")
    ap.add_argument("--only-variants", action="store_true",
                    help="with --variant/--ensemble: score only those; each recipe's row is "
                         "its finished runs as they were tested (nothing trains, so it may "
                         "run beside a benchmark still training other folds)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the Otsu baselines (~1 min per fold): a lever paired against a "
                         "recipe of an earlier call on the same folds needs none")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite results.md, counts.png (and --readme) from --out's "
                         "results.json; nothing runs")
    ap.add_argument("--out", type=Path, default=None,
                    help="results folder (default experiments/benchmark-real; --quick: "
                         "experiments/benchmark-real/quick)")
    ap.add_argument("--work", type=Path, default=None,
                    help="fold folders and run folders (default <out>/work)")
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK_FOLDS} folds, the first {QUICK_RECIPES} recipes, tiny runs: "
                         "checks the pipeline, gives no result")
    ap.add_argument("--resume", action="store_true",
                    help="reuse (recipe, fold) runs that already have test_metrics.json")
    ap.add_argument("--cut-cell-frac", type=float, default=None,
                    help="the baselines drop frame-cut cells under this x a typical cell, as "
                         f"the data's masks do (default: {CUT_CELL_FRAC} for BBBC041Seg, the "
                         "data.cut_cell_frac of data=bbbc041seg; 0 for synthetic folders)")
    ap.add_argument("--rescore", action="store_true",
                    help="re-test finished runs' best.ckpt under the recipes as they are now "
                         "(post-processing changes); train only the missing ones")
    ap.add_argument("--readme", type=Path, default=None,
                    help=f"rewrite this README's {SECTION} section (not with --quick)")
    ap.add_argument("--section", default=SECTION, help="README section name")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    started = datetime.now(timezone.utc)
    folds = args.folds or (QUICK_FOLDS if args.quick else 4)
    out = (args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)).resolve()
    work = (args.work or out / "work").resolve()
    if args.readme is not None:
        try:
            find_section(args.readme, args.section)  # fail now, not after an hour
        except ValueError as e:
            raise SystemExit(str(e)) from e
    if args.render:
        return render(out, args.readme, args.section)
    recipes = select_recipes(args)
    if args.quick:
        recipes = dict(list(recipes.items())[:QUICK_RECIPES])
    variants = parse_variants(args.variant)
    ensembles = parse_ensembles(args.ensemble, list(recipes), parse_recipe)
    if args.only_variants:
        if not variants and not ensembles:
            raise SystemExit("--only-variants needs at least one --variant NAME=\"...\" or "
                             "--ensemble NAME=\"a,b\"")
        args.rescore = True  # variants re-test; the recipes' own runs are only read
    if variants and not args.rescore:
        raise SystemExit("--variant re-tests trained runs: use it with --rescore")

    try:
        samples = list_pairs(args.root)
    except ValueError as e:
        raise SystemExit(str(e)) from e
    data_root = resolve_root(args.root).resolve()
    for label, path in (("--work", work), ("--out", out)):
        if _inside(path, data_root) or _inside(data_root, path):
            raise SystemExit(f"{label} {path} overlaps the data folder {data_root}; "
                             "the benchmark never writes next to the data")
    try:
        fold_names = assign_folds([s.name for s in samples], folds, args.seed)
    except ValueError as e:
        raise SystemExit(f"{data_root}: {e}") from e

    work.mkdir(parents=True, exist_ok=True)
    # run folders (checkpoints, links) and quick-mode outputs stay out of git
    for folder in [work] + ([out] if args.quick else []):
        if not (folder / ".gitignore").exists():
            write_text_atomic(folder / ".gitignore", "# benchmarks/real_cv.py output\n*\n")
    folds_file = work / "folds.json"
    plan = {"root": str(data_root), "seed": args.seed, "folds": fold_names}
    if args.resume and folds_file.is_file() and rundir.read_json(folds_file) != plan:
        raise SystemExit(f"{folds_file}: the folds differ from this call's (other data, "
                         "--folds or --seed); run without --resume or use another --work")
    write_text_atomic(folds_file, json.dumps(plan, indent=2))
    fold_dirs = build_fold_dirs(samples, fold_names, work)
    print(f"{len(samples)} pairs of {data_root} in {folds} folds "
          f"({', '.join(str(len(f)) for f in fold_names)} test images); work folder {work}",
          flush=True)

    by_name = {s.name: s for s in samples}
    kind = data_kind(data_root)
    cut = args.cut_cell_frac if args.cut_cell_frac is not None else (
        CUT_CELL_FRAC if kind == "real" else 0.0)
    baselines = {} if args.no_baselines else run_baselines(by_name, fold_names, cut)
    fold_sizes = sorted({len(f) for f in fold_names})
    data = {"root": str(data_root), "name": data_root.name, "kind": kind, "cut_cell_frac": cut,
            "n_pairs": len(samples), "folds": folds, "seed": args.seed,
            "image_sizes": image_sizes(samples),
            "fold_sizes_text": "/".join(str(n) for n in fold_sizes),
            "fold_test_files": fold_names}
    fixed = ["data=bbbc041seg", "data.root=<fold folder>", "logger=csv",
             "callbacks.progress_bar=null", "hydra.run.dir=<run folder>", f"seed={args.seed}"]
    results = new_results(argv, args.quick, started, git_info(), data, work, fixed, recipes,
                          variants, baselines, BASELINE_LABELS)
    if ensembles:
        results["ensembles"] = ensembles
        for name, members in ensembles.items():
            results["methods"][name] = {"kind": "recipe", "label": name, "members": members,
                                        "folds": []}
    write_outputs(results, out, quick_overrides=QUICK_OVERRIDES)

    for name, overrides in recipes.items():
        method = results["methods"][name]
        for k, fold_dir in enumerate(fold_dirs):
            run_dir = work / name / f"fold{k}"
            method["folds"].append(
                finished_fold(name, k, run_dir) if args.only_variants else
                run_fold(name, overrides, k, fold_dir, run_dir, args.seed, args.quick,
                         args.resume, args.rescore))
            for v, test_overrides in variants.items():
                results["methods"][f"{name}+{v}"]["folds"].append(run_variant(
                    name, overrides, v, test_overrides, k, fold_dir, run_dir, args.seed,
                    args.quick))
            # an interrupted benchmark keeps what it measured
            write_outputs(results, out, quick_overrides=QUICK_OVERRIDES)
    for name, members in ensembles.items():
        for k, fold_dir in enumerate(fold_dirs):
            runs = {m: work / m / f"fold{k}" for m in members}
            results["methods"][name]["folds"].append(ensemble_fold(
                name, runs, k, fold_dir, work / name / f"fold{k}", hydra_value, ROOT))
            write_outputs(results, out, quick_overrides=QUICK_OVERRIDES)

    results["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_outputs(results, out, quick_overrides=QUICK_OVERRIDES)
    print(f"\n{results_markdown(results, None, QUICK_OVERRIDES)}\nwrote {out / 'results.json'}, "
          f"{out / 'results.md'}, {out / 'counts.png'}")
    _readme(args.readme, args.section, results, out)
    failed = [(n, i) for n, m in results["methods"].items()
              for i, f in enumerate(m["folds"]) if f.get("status") != "ok"]
    return 1 if failed else 0


def render(out: Path, readme: Path | None, section: str) -> int:
    """``--render``: results.md, counts.png and the README section again from
    ``out/results.json`` (a finished or interrupted benchmark's); nothing is run."""
    path = out / "results.json"
    if not path.is_file():
        raise SystemExit(f"{path}: no results to render; run the benchmark first")
    results = rundir.read_json(path)
    write_outputs(results, out, json_too=False, quick_overrides=QUICK_OVERRIDES)
    print(f"wrote {out / 'results.md'}, {out / 'counts.png'}")
    _readme(readme, section, results, out)
    return 0


def _readme(readme: Path | None, section: str, results: dict, out: Path) -> None:
    """The README section from ``results``; quick numbers never reach a README."""
    if readme is not None and results.get("quick"):
        print(f"{QUICK_NOTE}: {readme} left unchanged", file=sys.stderr)
    elif readme is not None:
        print(f"updated {update_readme(readme, section, results, out)}")


if __name__ == "__main__":
    raise SystemExit(main())
