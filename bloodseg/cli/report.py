"""``bloodseg-report``: figures and tables of a sweep.

    bloodseg-report experiments/runs/multirun/2024-06-01_12-00-00 --out experiments/figures
    bloodseg-report experiments/demo/runs --out experiments/demo/figures --readme README.md

Written into ``--out``, each file atomically: per experiment ``<name>_iou.png``,
``<name>_loss.png`` (train vs validation, best and early-stopping epochs marked),
``<name>_panel.png`` (input | truth | probability | instances, true/false positives and
misses coloured) and ``<name>_sizes.png`` (cell areas); over all experiments ``counts.png``,
``comparison.png`` (count MAE, F1, Dice; with ``--baselines`` the Otsu rows too),
``results.csv`` and ``results.md``. Evaluate folders (``bloodseg-evaluate``) count as runs
without curves. Failed and unfinished runs are listed on stderr and under the table; an
interrupted one with its curves and the command that resumes it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bloodseg-report",
        description="Figures (curves, test panels, counts, cell sizes) and a results table "
                    "from the run folders (meta.json + metrics.csv) found under RUN_DIR; "
                    "failed and unfinished runs are listed under the table.")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                   help="run folder(s) or folders to search recursively for runs")
    p.add_argument("--out", default="experiments/figures", type=Path,
                   help="where figures and results.{csv,md} go (default: %(default)s)")
    p.add_argument("--readme", type=Path, default=None,
                   help="also rewrite this README between the --section markers")
    p.add_argument("--baselines", action="store_true",
                   help="add Otsu + watershed rows (default and tuned on the training images) "
                        "scored on the runs' own test images")
    p.add_argument("--section", default="results",
                   help="README section to rewrite: <!-- SECTION:begin/end --> "
                        "(results for real data, demo for the synthetic demo)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from bloodseg.report.build import build_report, report_incomplete
    from bloodseg.report.readme import find_section, update_readme
    from bloodseg.report.runs import assign_labels, find_runs, load_run, warn

    for d in args.run_dirs:
        if not Path(d).exists():
            print(f"bloodseg-report: error: {d}: no such folder", file=sys.stderr)
            return 2
    found = find_runs(args.run_dirs)
    report_incomplete(found)
    runs = []
    for folder in found.runs:
        try:
            runs.append(load_run(folder))
        except ValueError as e:
            warn(f"skipped: {e}")
    if not runs:
        print(f"bloodseg-report: error: no run folder (meta.json + metrics.csv, or an "
              f"evaluate folder's test_metrics.json) under {', '.join(map(str, args.run_dirs))}"
              "; pass the output folder of bloodseg-train or bloodseg-evaluate (or a sweep "
              "folder above it)", file=sys.stderr)
        return 1
    if args.readme is not None:
        try:  # before any figure is drawn: a wrong --readme should cost no time
            find_section(args.readme, args.section)
        except ValueError as e:
            print(f"bloodseg-report: error: {e}", file=sys.stderr)
            return 1
    assign_labels(runs)
    written, table = build_report(runs, args.out, found, args.baselines)
    if args.readme is not None:
        written.append(update_readme(args.readme, args.out, table, args.section, found))
    print(f"bloodseg-report: {len(runs)} run(s) -> {len(written)} file(s):")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
