"""Paired per-image comparison of two methods over one or more cross-validation runs.

Four folds of ten images flatter a recipe (CV count MAE 2.25 became 3.34 on 79 new smears),
so a change is adopted only when it wins image by image, beyond the noise, over repeated CV
(``real_cv.py`` with other ``--seed`` values: other fold assignments and training seeds)::

    for s in 0 1 2; do python benchmarks/real_cv.py --seed $s --recipes distance_s05,NEW \\
        --out experiments/benchmark-real/seed$s --work experiments/benchmark-real/work$s; done
    python benchmarks/paired.py experiments/benchmark-real/seed*/results.json \\
        --reference distance_s05 --candidate NEW

Calls on the same folds (the same data and ``--seed``) are one repeat, their methods pooled:
a new recipe trained later into another ``--out`` pairs with the reference's earlier run::

    python benchmarks/paired.py experiments/benchmark-real/seed1/results.json \
        experiments/benchmark-real/seed1-synpre/results.json \
        --reference distance_s05 --candidate distance_s05_synpre

A test-time change needs no retraining: ``real_cv.py --rescore --variant tta="predict.tta=true"``
re-tests the same networks as the method ``distance_s05+tta``, compared with
``--reference distance_s05 --candidate distance_s05+tta``.

For every (repeat, image) both methods scored it prints the difference in absolute count
error (candidate - reference; negative = better) and, where the runs kept their matches, in
per-image F1; for each, how many images improved, got worse or tied, the mean difference ±
sd, and a two-sided sign test (scipy) of improved vs worse. Also each method's count MAE as
mean ± sd over all folds of all repeats (:func:`bloodseg.cv.summary.mean_sd`, as the CV table).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bloodseg.cv.summary import mean_sd


def per_image(results: dict, method: str) -> dict[str, dict]:
    """``{image: row}`` of one method in one ``results.json`` (every fold pooled)."""
    methods = results.get("methods", {})
    if method not in methods:
        raise KeyError(f"no method {method!r}; this results.json has {sorted(methods)}")
    return {row["file"]: row for fold in methods[method]["folds"]
            for row in fold.get("per_image") or []}


def fold_maes(results: dict, method: str) -> list[float]:
    out = []
    for fold in results["methods"][method]["folds"]:
        rows = fold.get("per_image") or []
        if rows:
            out.append(float(np.mean([abs(r["pred_count"] - r["true_count"]) for r in rows])))
    return out


def f1(row: dict) -> float | None:
    if not {"tp", "fp", "fn"} <= set(row):
        return None
    den = 2 * row["tp"] + row["fp"] + row["fn"]
    return 1.0 if den == 0 else 2 * row["tp"] / den


def repeats(runs: Sequence[dict]) -> list[dict]:
    """The given ``results.json`` grouped into repeats: calls on the same folds (data, seed
    and fold assignment; e.g. a recipe, then its variants or a new recipe in another
    ``--out``) are one repeat with their methods pooled, the first call's row of a method
    kept."""
    merged: dict[str, dict] = {}
    for results in runs:
        data = results.get("data", {})
        key = json.dumps([data.get("n_pairs"), data.get("seed"), data.get("fold_test_files")])
        if key not in merged or data.get("fold_test_files") is None:
            key = key if key not in merged else f"{key}#{len(merged)}"
            merged[key] = {**results, "methods": dict(results.get("methods", {}))}
        else:
            methods = merged[key]["methods"]
            for name, method in results.get("methods", {}).items():
                methods.setdefault(name, method)
    return list(merged.values())


def signs(diffs: Sequence[float]) -> tuple[int, int, int, float]:
    """(better, worse, tied, two-sided sign test p) of per-image differences, negative =
    better."""
    from scipy.stats import binomtest

    d = np.asarray(diffs, float)
    better, worse = int((d < 0).sum()), int((d > 0).sum())
    p = binomtest(better, better + worse).pvalue if better + worse else 1.0
    return better, worse, int(d.size - better - worse), float(p)


def compare(runs: Sequence[dict], reference: str, candidate: str) -> dict:
    """Paired differences (candidate - reference) of every image of every repeat."""
    count, score, maes = [], [], {reference: [], candidate: []}
    runs = repeats(runs)
    for results in runs:
        ref, cand = per_image(results, reference), per_image(results, candidate)
        for name in sorted(set(ref) & set(cand)):
            a, b = ref[name], cand[name]
            count.append(abs(b["pred_count"] - b["true_count"])
                         - abs(a["pred_count"] - a["true_count"]))
            fa, fb = f1(a), f1(b)
            if fa is not None and fb is not None:
                score.append(fb - fa)
        for method in maes:
            maes[method] += fold_maes(results, method)
    if not count:
        raise ValueError(f"{reference} and {candidate} share no scored image")
    better, worse, tied, p = signs(count)
    f1_better, f1_worse, f1_tied, f1_p = signs([-s for s in score])  # higher F1 is better
    return {"reference": reference, "candidate": candidate, "images": len(count),
            "repeats": len(runs), "better": better, "worse": worse, "tied": tied,
            "sign_test_p": p, "abs_count_error_diff": mean_sd(count), "f1_diff": mean_sd(score),
            "f1_better": f1_better, "f1_worse": f1_worse, "f1_tied": f1_tied,
            "f1_sign_test_p": f1_p,
            "fold_mae": {m: mean_sd(v) for m, v in maes.items()}}


def report(c: dict) -> str:
    def ms(s: dict, fmt: str = ".2f") -> str:
        return f"{s['mean']:{fmt}} ± {s['sd']:{fmt}} (n={s['n']})"

    lines = [f"{c['candidate']} vs {c['reference']}: {c['images']} paired images over "
             f"{c['repeats']} repeat(s)",
             f"  |count error| difference (candidate - reference): "
             f"{ms(c['abs_count_error_diff'])}; better on {c['better']}, worse on "
             f"{c['worse']}, tied on {c['tied']} (sign test p = {c['sign_test_p']:.3g})"]
    if c["f1_diff"]["n"]:
        lines.append(f"  per-image F1@0.5 difference: {ms(c['f1_diff'], '.3f')}; higher on "
                     f"{c['f1_better']}, lower on {c['f1_worse']}, tied on {c['f1_tied']} "
                     f"(sign test p = {c['f1_sign_test_p']:.3g})")
    for method, s in c["fold_mae"].items():
        lines.append(f"  {method}: count MAE {ms(s)} over all folds")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", type=Path, nargs="+",
                    help="results.json of real_cv.py runs (calls on the same folds pool their "
                         "methods into one repeat)")
    ap.add_argument("--reference", required=True, help="e.g. distance_s05 (count_real)")
    ap.add_argument("--candidate", required=True)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args(argv)
    runs = [json.loads(p.read_text()) for p in args.results]
    try:
        c = compare(runs, args.reference, args.candidate)
    except (KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report(c))
    if args.json:
        args.json.write_text(json.dumps(c, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
