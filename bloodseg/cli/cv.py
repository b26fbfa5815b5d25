"""``bloodseg-cv``: k-fold cross-validation of training recipes on a folder of real pairs.

    bloodseg-cv --root ../shared/data/bbbc041seg-mini              # every bench recipe, 4 folds
    bloodseg-cv --root DIR --recipes distance_s05 --readme docs/results.md
    bloodseg-cv --root DIR --recipe wide="experiment=count_real model.base_channels=32"
    bloodseg-cv --root DIR --resume                    # skip finished (recipe, fold)s
    bloodseg-cv --root DIR --rescore                   # re-test finished runs' best.ckpt
    bloodseg-cv --root DIR --rescore --variant tta="predict.tta=true"
    bloodseg-cv --root DIR --only-variants --variant d4="predict.tta=d4 tune=null"
    bloodseg-cv --root DIR --recipes a,b --ensemble ab="a,b"   # + their average
    bloodseg-cv --render --out DIR --readme README.md   # results.json -> md, png, README
    bloodseg-cv --root DIR --quick                     # the code path, minutes

All pairs of ``--root`` (train/ and test/ pooled) are split into ``--folds`` folds seeded by
``--seed``; per fold, each recipe (``conf/experiment/bench/<name>.yaml``, derived from
``experiment=count_real``, or ``--recipe NAME="overrides"``) trains on the other folds, tunes
its post-processing there and is tested on the fold, beside three Otsu baselines scored on
the same images. Written into ``--out``: ``results.json`` (every fold of every method),
``results.md`` (mean ± sd over folds) and ``counts.png``; ``--readme`` also rewrites that
file's ``--section`` (``<!-- benchmark:begin/end -->``). ``--quick`` (2 folds, the first 2
recipes, tiny networks for 1 epoch) checks the pipeline; its numbers are not results and
never reach a README. The library: ``bloodseg.cv`` (``runner.run_cv``).

Exit codes: 0 every fold finished, 1 some runs failed (listed under the table), 2 a
mistake in the options, data or folders (nothing trained).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "bloodseg-cv"
DEFAULT_OUT = Path("experiments") / "cv"


def parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n")
    ap = argparse.ArgumentParser(prog=PROG, description=doc[0].split(": ", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(doc[2:]))
    ap.add_argument("--root", type=Path, default=None,
                    help="Kaggle-layout data folder (train/ and test/, each with original/ "
                         "and mask/); needed unless --render")
    ap.add_argument("--folds", type=int, default=None, help="folds (default 4; --quick 2)")
    ap.add_argument("--seed", type=int, default=0,
                    help="fold permutation, and the training seed unless a recipe sets seed=")
    ap.add_argument("--recipe", action="append", default=[], metavar='NAME="OVERRIDES"',
                    help="a recipe on the command line: bloodseg-train overrides (repeatable)")
    ap.add_argument("--recipes", default="", metavar="NAME,NAME",
                    help="recipes of conf/experiment/bench/ (default: all unless --recipe)")
    ap.add_argument("--variant", action="append", default=[], metavar='NAME="OVERRIDES"',
                    help="with --rescore: also re-test every finished run with these "
                         "test-time overrides, as method <recipe>+NAME (repeatable)")
    ap.add_argument("--ensemble", action="append", default=[], metavar='NAME="RECIPE,RECIPE"',
                    help="also score the average of these recipes' networks on each fold "
                         "(tuned together on its training images), as method NAME; the "
                         "recipes train first (repeatable)")
    ap.add_argument("--only-variants", action="store_true",
                    help="with --variant/--ensemble: score only those; each recipe's row is "
                         "its finished runs as they were tested (nothing trains, so it may "
                         "run beside a cross-validation still training other folds)")
    ap.add_argument("--no-baselines", action="store_true",
                    help="skip the Otsu baselines (~1 min per fold): a lever paired against a "
                         "recipe of an earlier call on the same folds needs none")
    ap.add_argument("--render", action="store_true",
                    help="only rewrite results.md, counts.png (and --readme) from --out's "
                         "results.json; nothing runs")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"results folder (default {DEFAULT_OUT}; --quick: "
                         f"{DEFAULT_OUT / 'quick'})")
    ap.add_argument("--work", type=Path, default=None,
                    help="fold folders and run folders (default <out>/work)")
    ap.add_argument("--quick", action="store_true",
                    help="2 folds, the first 2 recipes, tiny runs: checks the pipeline, gives "
                         "no result")
    ap.add_argument("--resume", action="store_true",
                    help="reuse (recipe, fold) runs that already have test_metrics.json")
    ap.add_argument("--boxes", type=Path, default=None, metavar="CSV",
                    help="a second human reference (stem,x0,y0,x1,y1 boxes, e.g. "
                    "../shared/data/bbbc041-boxes/boxes.csv): every method also gets box F1 and "
                    "count error against the box count, and the masks themselves a row")
    ap.add_argument("--cut-cell-frac", type=float, default=None,
                    help="the baselines drop frame-cut cells under this x a typical cell, as "
                         "the data's masks do (default: data.cut_cell_frac of data=bbbc041seg "
                         "for real folders, 0 for synthetic ones)")
    ap.add_argument("--rescore", action="store_true",
                    help="re-test finished runs' best.ckpt under the recipes as they are now "
                         "(post-processing changes); train only the missing ones")
    ap.add_argument("--readme", type=Path, default=None,
                    help="rewrite this file's --section (not with --quick)")
    ap.add_argument("--section", default="benchmark",
                    help="README section name: <!-- SECTION:begin/end --> (default: "
                         "%(default)s)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    out = args.out or (DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT)
    if args.root is None and not args.render:
        print(f"{PROG}: error: --root DIR is needed (a Kaggle-layout folder of image/mask "
              "pairs); --render alone reads --out's results.json", file=sys.stderr)
        return 2
    from bloodseg.cv.runner import CVError, CVOptions, render_cv, run_cv

    try:
        if args.render:
            outcome = render_cv(out.resolve(), args.readme, args.section)
        else:
            outcome = run_cv(CVOptions(
                root=args.root, out=out, work=args.work, folds=args.folds, seed=args.seed,
                recipes=[n.strip() for n in args.recipes.split(",") if n.strip()],
                recipe=args.recipe, variants=args.variant, ensembles=args.ensemble,
                only_variants=args.only_variants, baselines=not args.no_baselines,
                quick=args.quick, resume=args.resume, rescore=args.rescore,
                cut_cell_frac=args.cut_cell_frac, boxes=args.boxes, readme=args.readme,
                section=args.section,
                argv=argv, prog=PROG))
    except CVError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if outcome.table:
        print(f"\n{outcome.table}")
    for note in outcome.notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    print(f"{PROG}: wrote " + ", ".join(str(p) for p in outcome.written))
    if outcome.failed:
        print(f"{PROG}: {len(outcome.failed)} run(s) failed: " + ", ".join(
            f"{m} fold {k}" for m, k in outcome.failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
