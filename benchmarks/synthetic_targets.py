"""Synthetic check of the targets: networks vs scikit-image's watershed, per smear style.

Synthetic smears have exact instance truth, and the BCCD style's heavily overlapping cells are
where a distance-transform watershed struggles. For each ``--styles`` style the demo's data
(``profile=demo``: 44 training and 8 test images of 128 px, generated into ``--work``) is
used to train one U-Net per ``--targets`` target exactly as ``make demo`` does (12 epochs,
marker threshold tuned on the training images), then on the same test images it compares:

* each network + its post-processing (``test/count_mae``, ``test/f1`` of the run);
* ``skimage on truth``: scikit-image's textbook watershed (``benchmarks/postprocess.py``) on
  the TRUE foreground (``instances > 0``): an oracle foreground, split by the classic recipe;
* ``bloodseg on truth``: bloodseg's :class:`~bloodseg.postprocess.Watershed` on it;
* ``Otsu + watershed``: the classical pipeline from the image alone.

    python benchmarks/synthetic_targets.py                       # both styles, 3 targets
    python benchmarks/synthetic_targets.py --styles bccd --targets contour

Prints one table per style and writes ``--out`` (``results.json`` and ``results.md``).
About 2-3 CPU minutes per (style, target) on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bloodseg import rundir
from bloodseg.data.bbbc041seg import list_split, read_native_instances
from bloodseg.io import read_image, write_text_atomic
from bloodseg.metrics import InstanceStats
from bloodseg.postprocess import Watershed, otsu_foreground
from bloodseg.postprocess.baselines import skimage_reference

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUT = ROOT / "experiments" / "benchmark-synthetic"


def train_run(style: str, target: str, work: Path, extra: list[str]) -> Path:
    """Train + test one demo-profile U-Net on ``style`` smears; returns its run folder."""
    run = work / style / target
    overrides = ["model=unet", "data=synthetic", "profile=demo", f"target={target}",
                 f"data.synthetic.style={style}",
                 f"data.synthetic.cache_dir={work / 'data'}", "callbacks.progress_bar=null",
                 f"hydra.run.dir={run}", *extra]
    if (run / rundir.TEST_METRICS).is_file() and \
            (run / "overrides.json").is_file() and \
            json.loads((run / "overrides.json").read_text()) == overrides:
        print(f"[{style} {target}] done before, reusing {run}", flush=True)
        return run
    shutil.rmtree(run, ignore_errors=True)  # an older run's files: train.py refuses to mix
    run.mkdir(parents=True)
    log = run / "benchmark_run.log"
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides]
    print(f"[{style} {target}] training (log: {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        rc = subprocess.run(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT,
                            env=os.environ | {"PYTHONUNBUFFERED": "1"}).returncode
    if rc != 0 or not (run / rundir.TEST_METRICS).is_file():
        raise SystemExit(f"[{style} {target}] failed (exit {rc}); see {log}: {shlex.join(cmd)}")
    write_text_atomic(run / "overrides.json", json.dumps(overrides))
    print(f"[{style} {target}] {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def references(data_root: Path) -> dict[str, dict]:
    """The three reference methods on the test split of ``data_root``."""
    ws = Watershed()
    methods = {"skimage on truth": skimage_reference(0.4, ws.min_area_frac),
               "bloodseg on truth": ws}
    stats = {name: InstanceStats() for name in [*methods, "Otsu + watershed"]}
    for sample in list_split(data_root, "test"):
        truth = read_native_instances(sample)
        fg = (truth > 0).astype(np.uint8)
        for name, fn in methods.items():
            stats[name].update(sample.name, truth, fn(fg))
        stats["Otsu + watershed"].update(sample.name, truth,
                                         ws(otsu_foreground(read_image(sample.image))))
    return {name: _brief(s.aggregate()) for name, s in stats.items()}


def _brief(agg: dict) -> dict:
    return {"count_mae": float(agg["count_mae"]), "count_bias": float(agg["count_bias"]),
            "f1": float(agg["f1"]), "n_images": int(agg["n_images"])}


def run_metrics(run: Path) -> dict:
    m = rundir.read_test_metrics(run) or {}
    tuning = run / rundir.TUNING
    tuned = rundir.read_json(tuning)["chosen"] if tuning.is_file() else {}
    return {"count_mae": m["test/count_mae"], "count_bias": m["test/count_bias"],
            "f1": m["test/f1"], "tuned": tuned}


def markdown(results: dict) -> str:
    lines = []
    for style, rows in results["styles"].items():
        lines += [f"**{style}** style, {rows['n_test']} test images of {rows['size']} px:", "",
                  "| method | count MAE | count bias | F1@0.5 |", "|---|---:|---:|---:|"]
        for name, r in rows["methods"].items():
            lines.append(f"| {name} | {r['count_mae']:.2f} | {r['count_bias']:+.2f} | "
                         f"{r['f1']:.3f} |")
        lines.append("")
    lines.append(f"Command: `{results['command']}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--styles", default="bbbc041,bccd")
    ap.add_argument("--targets", default="binary,contour,distance")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--work", type=Path, default=None, help="data and runs (default OUT/work)")
    ap.add_argument("--override", action="append", default=[],
                    help="extra train.py override for every run (e.g. trainer.max_epochs=1)")
    args = ap.parse_args(argv)
    work = (args.work or args.out / "work").resolve()
    work.mkdir(parents=True, exist_ok=True)
    if not (work / ".gitignore").exists():
        write_text_atomic(work / ".gitignore", "*\n")
    results = {"command": shlex.join(["python", "benchmarks/synthetic_targets.py", *argv]),
               "styles": {}}
    for style in args.styles.split(","):
        methods, data_root = {}, None
        for target in args.targets.split(","):
            run = train_run(style, target, work, args.override)
            methods[f"U-Net, target={target}"] = run_metrics(run)
            data_root = Path(rundir.read_json(run / rundir.META)["data_root"])
        refs = references(data_root)
        n_test = next(iter(refs.values()))["n_images"]
        size = "x".join(map(str, read_image(list_split(data_root, "test")[0].image).shape[:2]))
        results["styles"][style] = {"methods": {**methods, **refs}, "n_test": n_test,
                                    "size": size, "data_root": str(data_root)}
        args.out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out / "results.json", json.dumps(results, indent=2))
        write_text_atomic(args.out / "results.md", markdown(results))
    print("\n" + markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
