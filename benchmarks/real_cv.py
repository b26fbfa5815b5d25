"""Real-data benchmark: ``bloodseg-cv`` on the real pairs in ``../shared/data``.

The cross-validation is the library's (:mod:`bloodseg.cv`, the command ``bloodseg-cv``);
this script is that command with the benchmark's folders as defaults: ``--root
../shared/data/bbbc041seg-mini`` (the 40 real BBBC041Seg pairs) and ``--out
experiments/benchmark-real`` (``--quick``: ``experiments/benchmark-real/quick``). Every other
option is ``bloodseg-cv``'s (``--help``); ``make benchmark-real`` runs the same.

    python -m benchmarks.real_cv                              # every bench recipe, 4 folds
    python -m benchmarks.real_cv --recipes binary_288x384 --readme docs/results.md
    python -m benchmarks.real_cv --recipe wide="experiment=count_real model.base_channels=32"
    python -m benchmarks.real_cv --resume                     # skip finished (recipe, fold)s
    python -m benchmarks.real_cv --rescore                    # re-test finished runs' best.ckpt
    python -m benchmarks.real_cv --rescore --variant tta="predict.tta=true"
    python -m benchmarks.real_cv --only-variants --variant d4="predict.tta=d4 tune=null"
    python -m benchmarks.real_cv --recipes a,b --ensemble ab="a,b"  # + their average
    python -m benchmarks.real_cv --render --readme docs/results.md  # results.json -> md, png
    python -m benchmarks.real_cv --quick                      # the code path, minutes

(``python benchmarks/real_cv.py ...`` runs the same.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from bloodseg.cli.cv import main as cv_main

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT.parent / "shared" / "data" / "bbbc041seg-mini"
DEFAULT_OUT = ROOT / "experiments" / "benchmark-real"


def benchmark_argv(argv: Sequence[str]) -> list[str]:
    """``argv`` with the benchmark's ``--root`` and ``--out`` first, where it names none."""
    given = {a.split("=", 1)[0] for a in argv}
    defaults = [] if "--root" in given or "--render" in given else ["--root", str(DEFAULT_ROOT)]
    if "--out" not in given:
        defaults += ["--out", str(DEFAULT_OUT / "quick" if "--quick" in given else DEFAULT_OUT)]
    return [*defaults, *argv]


def main(argv: Sequence[str] | None = None) -> int:
    return cv_main(benchmark_argv(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
