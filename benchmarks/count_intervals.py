"""Choose and calibrate the per-image count interval on a cross-validation's held-out images.

Reads finished ``bloodseg-cv`` work folders (each fold's ``best.ckpt`` + its tuned
``postprocess.json``, and the fold's test images, which that run never trained on; several
folders: the repeats of a repeated k-fold, one seed each), predicts every held-out smear once
per repeat, and measures each candidate interval method (:data:`bloodseg.trust.METHODS`) by
nested cross-validation: the interval for fold k's images is calibrated on the other folds'
held-out residuals only (none of fold k's images, from any repeat), then scored on fold k.
Coverage is the share of images whose mask count falls inside; width the mean of
``high - low``.

The method with the smallest mean width whose pooled coverage lies in [0.85, 0.95] is chosen;
its calibration on all folds' held-out residuals is written as ``trust.json``
(:class:`bloodseg.trust.Trust`, with the "unlike training images" rule fitted on the images
themselves), which ``bloodseg.weights`` puts into a bundle's spec.

    bloodseg-cv --root ../shared/data/bbbc041seg-mini --recipes distance_s05 \\
        --out experiments/cv-count-real --work experiments/cv-count-real/work
    bloodseg-cv ... --seed 1 --out experiments/cv-count-real-s1 \\
        --work experiments/cv-count-real-s1/work
    python -m benchmarks.count_intervals --work experiments/cv-count-real/work \\
        experiments/cv-count-real-s1/work --recipe distance_s05 \\
        --bccd ../shared/data/bccd-boxes/JPEGImages --out experiments/trust
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bloodseg import trust  # noqa: E402
from bloodseg.data.bbbc041seg import list_split, read_native_instances  # noqa: E402
from bloodseg.inference import Predictor  # noqa: E402
from bloodseg.io import IMAGE_SUFFIXES  # noqa: E402
from bloodseg.modelfile import write_calibrated  # noqa: E402
from bloodseg.report.readme import replace_section  # noqa: E402


def fold_images(works: list[Path], recipe: str) -> list[tuple[int | str, Path, list]]:
    """(fold label, its checkpoint, its held-out samples) of each fold of each work folder;
    with several (repeats of the cross-validation on other seeds) a fold is ``"r/k"``."""
    out = []
    for r, work in enumerate(works):
        for fold in sorted((work / "folds").glob("fold*"), key=lambda p: int(p.name[4:])):
            k = int(fold.name[4:])
            ckpt = work / recipe / f"fold{k}" / "checkpoints" / "best.ckpt"
            if not ckpt.is_file():
                sys.exit(f"{ckpt}: missing; run the cross-validation first")
            out.append((f"{r}/{k}" if len(works) > 1 else k, ckpt, list_split(fold, "test")))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, nargs="+", required=True,
                   help="bloodseg-cv's --work folder; several: repeats on other seeds")
    p.add_argument("--recipe", default="distance_s05")
    p.add_argument("--bccd", type=Path, help="images of another stain: the review flag's rate")
    p.add_argument("--bccd-max", type=int, default=80)
    p.add_argument("--level", type=float, default=0.9)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--readme", type=Path, default=None,
                   help="also rewrite this Markdown file's 'trust' section with the table")
    p.add_argument("--attach", type=Path, default=None, metavar="MODEL",
                   help="also write the calibration into this model file's spec (in place)")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)

    rows = []  # one per held-out image: fold, name, truth, Observation
    folds = fold_images(a.work, a.recipe)
    bccd_obs: dict[int | str, list] = {}
    bccd = sorted(f for f in (a.bccd.iterdir() if a.bccd else [])
                  if f.suffix.lower() in IMAGE_SUFFIXES)[:a.bccd_max]
    for k, ckpt, samples in folds:
        predictor = Predictor.load(ckpt, device="cpu")
        for s in samples:
            image = predictor.read(s.image)
            obs = trust.observe(predictor, image)
            truth = int(len(np.unique(read_native_instances(s))) - 1)
            rows.append({"fold": k, "name": s.name, "truth": truth, **obs.to_dict()})
            print(f"fold {k} {s.name}: {obs.count} cells (truth {truth}), spread {obs.spread}",
                  flush=True)
        # the other stain, seen by this fold's model (the rule is fitted per fold, below)
        bccd_obs[k] = [trust.observe(predictor, predictor.read(f)).to_dict() for f in bccd]
    (a.out / "observations.json").write_text(json.dumps(
        {"rows": rows, "bccd": {str(k): v for k, v in bccd_obs.items()}}, indent=1))

    report = trust.evaluate_methods(rows, level=a.level)
    flags = trust.evaluate_review(rows, bccd_obs)
    chosen = report["chosen"]
    final = trust.calibrate(rows, chosen, level=a.level)
    command = " ".join(["python -m benchmarks.count_intervals", *(argv or sys.argv[1:])])
    final = trust.Trust(interval=final.interval.with_scores(report["methods"][chosen]),
                        typical=final.typical, review=final.review, provenance={
                            "calibrated_on": f"held-out images of {len(a.work)} x "
                                             f"{len(folds) // len(a.work)}-fold cross-validation "
                                             f"({a.recipe}, {len(rows)} held-out predictions)",
                            "review_rates": flags, "command": command})
    (a.out / "trust.json").write_text(json.dumps(final.to_dict(), indent=1))
    (a.out / "calibration.json").write_text(json.dumps({**report, "review": flags}, indent=1))
    md = trust.calibration_markdown(report, flags, command)
    (a.out / "calibration.md").write_text(md)
    print(md)
    print(f"wrote {a.out / 'trust.json'}")
    if a.readme:
        print(f"wrote {replace_section(a.readme, 'trust', md)}")
    if a.attach:
        print(f"wrote {write_calibrated(a.attach, final)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
