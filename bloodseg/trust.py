"""How far to trust a count: a per-image count interval and the reasons to look by hand.

No counting tool says how sure it is of a count; a lab needs to tell the smear counted to
within a cell from the one where clumps merged, or from an image the model was never meant
for. Three things, all calibrated on held-out images of a cross-validation
(``benchmarks/count_intervals.py``), never on test images, and carried in the model spec
(``trust``), so a shipped bundle gives them with no extra step:

- **interval**: a central ``level`` (90 %) interval for the number of cells the training
  annotation would draw, ``count + [q_low, q_high] x scale`` (split-conformal on residuals
  ``truth - count`` of held-out images). ``scale`` depends on the method (:data:`METHODS`):
  ``constant`` (1), ``sqrt`` (``sqrt(count)``, a Poisson-like spread) or ``spread``
  (``1 +`` how much the count moves when the post-processing's tuned parameter steps to its
  neighbouring values, so the interval widens where the split of touching cells is unsure).
- **review**: ``unlike training images`` (stain colour, foreground share, cell size and the
  network's own uncertainty, together: their Mahalanobis distance from the calibration
  images; flagged beyond the distance that 95 % of those images stay within when each is
  left out),
  ``wide interval`` and ``many merged clumps`` (beyond the 95th percentile of the calibration
  images).
- **per-cell confidence** (``cells.csv``): the cell's mean foreground probability, 0..1.

    >>> calibration = calibration_of(predictor)              # the model's, or None
    >>> obs = observe(predictor, image)                     # count, spread, features
    >>> low, high = calibration.interval.bounds(obs.count, obs.spread)
    >>> calibration.reasons(obs, low, high)                 # [] or ["unlike training images"]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

METHODS = ("constant", "sqrt", "spread")
LEVEL = 0.9
#: the coverage a calibrated interval must reach on held-out images, to be chosen at all
COVERAGE_GOAL = (0.85, 0.95)
#: image features of the "unlike training images" rule (:func:`features`)
FEATURES = ("stain_a", "stain_b", "foreground", "log_cell_area", "uncertain")
#: the share of calibration images a review threshold leaves unflagged
REVIEW_QUANTILE = 0.95
#: a cell at least this many times the median cell's area counts as a merged clump
CLUMP_AREA = 2.0
#: foreground probabilities in this band count as "unsure" pixels
UNSURE = (0.2, 0.8)


# -- what one image tells -------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What :func:`observe` measures on one image, for the interval and the review."""

    count: int
    spread: int
    features: dict[str, float]
    clumps: float

    def to_dict(self) -> dict:
        return asdict(self)


def calibration_of(predictor: Any) -> Trust | None:
    """The calibration a predictor's counts get: its model's (``spec.trust``), or None for a
    model without one and for an ensemble (its spread was never calibrated)."""
    return predictor.spec.trust if len(predictor.runs) == 1 else None


def neighbours(postprocess: Any) -> list[Any]:
    """The post-processing with its first tuned parameter stepped to the neighbouring values
    of its tuning grid (below and above the current one), the others unchanged."""
    grid = {k: v for k, v in postprocess.tune_grid().items() if k != "cut_cell_frac"}
    if not grid:
        return []
    name, values = next(iter(grid.items()))
    values = sorted(set(values) | {getattr(postprocess, name)})
    i = values.index(getattr(postprocess, name))
    out = []
    for j in (i - 1, i + 1):
        if 0 <= j < len(values):
            other = type(postprocess)(**{**asdict(postprocess), name: values[j]})
            out.append(other)
    return out


def features(image: np.ndarray, prob: np.ndarray, labels: np.ndarray,
             threshold: float = 0.5) -> dict[str, float]:
    """The image's stain colour (mean CIELAB a*, b* of the predicted foreground), foreground
    share, log median cell area (px at native size) and share of unsure foreground pixels."""
    fg = prob > threshold
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    pixels = rgb[..., :3][fg] if fg.any() else rgb[..., :3].reshape(-1, 3)
    # per pixel, so converting only the foreground's gives the same values at half the cost
    region = cv2.cvtColor(np.ascontiguousarray(pixels[None]), cv2.COLOR_RGB2LAB)[0]
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    near = prob > UNSURE[0]
    return {
        "stain_a": float(region[:, 1].mean()),
        "stain_b": float(region[:, 2].mean()),
        "foreground": float(fg.mean()),
        "log_cell_area": float(np.log(np.median(areas))) if areas.size else 0.0,
        "uncertain": float(((prob > UNSURE[0]) & (prob < UNSURE[1])).sum() / max(near.sum(), 1)),
    }


def clump_share(labels: np.ndarray) -> float:
    """The share of cells at least :data:`CLUMP_AREA` times the median cell's area."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    if areas.size < 3:
        return 0.0
    return float((areas >= CLUMP_AREA * np.median(areas)).mean())


def observe(predictor: Any, image: np.ndarray, outputs: np.ndarray | None = None,
            labels: np.ndarray | None = None, measure_spread: bool = True) -> Observation:
    """Count, spread and features of ``image`` under ``predictor`` (``outputs``/``labels``:
    the ones already computed, else computed here). ``measure_spread=False``: 0, without the two
    extra post-processing runs it costs (an interval that does not scale with it)."""
    if outputs is None:
        outputs, labels = predictor.predict(image)
    elif labels is None:
        labels = predictor.labels(outputs)
    count = int(labels.max())
    others = neighbours(predictor.postprocess) if measure_spread else []
    counts = [int(pp(outputs).max()) for pp in others]
    spread = max(counts + [count]) - min(counts + [count])
    prob = predictor.foreground(outputs)
    return Observation(count, spread, features(image, prob, labels,
                                               predictor.postprocess.threshold),
                       clump_share(labels))


# -- the interval ----------------------------------------------------------------------------


def _scale(method: str, count: float, spread: float) -> float:
    if method == "constant":
        return 1.0
    if method == "sqrt":
        return math.sqrt(max(count, 1.0))
    return 1.0 + spread


@dataclass(frozen=True)
class CountInterval:
    """``count + [low, high] x scale(method)``, rounded outwards, never below 0."""

    method: str
    level: float
    low: float
    high: float
    #: measured on held-out images (nested CV): share inside, mean width, images
    coverage: float | None = None
    mean_width: float | None = None
    images: int | None = None

    def bounds(self, count: int, spread: int = 0) -> tuple[int, int]:
        s = _scale(self.method, count, spread)
        return (max(0, math.floor(count + self.low * s)), max(0, math.ceil(count + self.high * s)))

    def with_scores(self, scores: Mapping) -> CountInterval:
        return CountInterval(self.method, self.level, self.low, self.high,
                             round(float(scores["coverage"]), 4),
                             round(float(scores["mean_width"]), 2), int(scores["images"]))


def fit_interval(method: str, counts: Sequence[int], spreads: Sequence[int],
                 truths: Sequence[int], level: float = LEVEL) -> CountInterval:
    """Residual quantiles of held-out images, scaled by the method."""
    r = np.array([(t - c) / _scale(method, c, s) for c, s, t in zip(counts, spreads, truths)])
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return CountInterval(method, level, round(float(lo), 4), round(float(hi), 4))


# -- review ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Typical:
    """Mean and covariance of the features on the calibration images, and the Mahalanobis
    distance beyond which an image is unlike them. A joint distance, not one feature at a
    time: another stain moves several features at once (colour, foreground share, the
    network's uncertainty), each by less than the calibration smears vary among themselves."""

    centre: dict[str, float]
    covariance: list[list[float]]
    max_distance: float

    def distance(self, feats: Mapping[str, float]) -> float:
        names = list(self.centre)
        d = np.array([feats[k] - self.centre[k] for k in names])
        return float(np.sqrt(d @ np.linalg.solve(np.array(self.covariance), d)))


def _mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # a small ridge keeps the covariance of a few dozen images invertible
    cov = np.cov(x.T).reshape(x.shape[1], x.shape[1])
    return x.mean(0), cov + 1e-6 * np.diag(np.maximum(np.diag(cov), 1e-12)) + 1e-12 * np.eye(
        x.shape[1])


def fit_typical(feats: Sequence[Mapping[str, float]], names: Sequence[str] = FEATURES,
                quantile: float = REVIEW_QUANTILE) -> Typical:
    """Mean/covariance on all images; the threshold from each image left out in turn (its
    distance to the others), at ``quantile``."""
    x = np.array([[f[k] for k in names] for f in feats], float)
    loo = []
    for i in range(len(x)):
        m, c = _mean_cov(np.delete(x, i, axis=0))
        d = x[i] - m
        loo.append(float(np.sqrt(d @ np.linalg.solve(c, d))))
    m, c = _mean_cov(x)
    return Typical({k: round(float(v), 6) for k, v in zip(names, m)},
                   [[float(v) for v in row] for row in c],
                   round(float(np.quantile(loo, quantile)), 3))


@dataclass(frozen=True)
class Review:
    """Thresholds of the other two flags, from the calibration images."""

    relative_width: float
    clumps: float


@dataclass(frozen=True)
class Trust:
    """The spec's ``trust`` section: interval, typical images and review thresholds."""

    interval: CountInterval
    typical: Typical
    review: Review
    provenance: dict[str, Any] = field(default_factory=dict)

    def judge(self, predictor: Any, image: np.ndarray, outputs: np.ndarray,
              labels: np.ndarray) -> tuple[Observation, tuple[int, int], list[str]]:
        """``image``'s observation, count interval and reasons to review it (the spread is
        measured only for an interval that scales with it)."""
        obs = observe(predictor, image, outputs, labels,
                      measure_spread=self.interval.method == "spread")
        low, high = self.interval.bounds(obs.count, obs.spread)
        return obs, (low, high), self.reasons(obs, low, high)

    def reasons(self, obs: Observation, low: int, high: int) -> list[str]:
        out = []
        if self.typical.distance(obs.features) > self.typical.max_distance:
            out.append("unlike training images")
        if (high - low) / max(obs.count, 1) > self.review.relative_width:
            out.append("wide interval")
        if obs.clumps > self.review.clumps:
            out.append("many merged clumps")
        return out

    def to_dict(self) -> dict:
        return {"interval": asdict(self.interval), "typical": asdict(self.typical),
                "review": asdict(self.review), "provenance": dict(self.provenance)}

    @classmethod
    def from_dict(cls, d: Mapping) -> Trust:
        """From plain data already checked by :mod:`bloodseg.spec`."""
        return cls(CountInterval(**d["interval"]), Typical(**d["typical"]),
                   Review(**d["review"]), dict(d.get("provenance", {})))


def calibrate(rows: Sequence[Mapping], method: str, level: float = LEVEL) -> Trust:
    """A :class:`Trust` fitted on held-out rows (``count``, ``spread``, ``truth``,
    ``features``, ``clumps``)."""
    interval = fit_interval(method, [r["count"] for r in rows], [r["spread"] for r in rows],
                            [r["truth"] for r in rows], level)
    widths = []
    for r in rows:
        low, high = interval.bounds(r["count"], r["spread"])
        widths.append((high - low) / max(r["count"], 1))
    review = Review(round(float(np.quantile(widths, REVIEW_QUANTILE)), 4),
                    round(float(np.quantile([r["clumps"] for r in rows], REVIEW_QUANTILE)), 4))
    return Trust(interval, fit_typical([r["features"] for r in rows]), review)


# -- measuring the methods (nested cross-validation) ---------------------------------------


def _calibration_rows(rows: Sequence[Mapping], fold: Any) -> list[Mapping]:
    """What fold ``fold``'s images are judged by: the other folds' rows, leaving out every
    row of those images (a repeated cross-validation holds each image out once per repeat)."""
    held = {r["name"] for r in rows if r["fold"] == fold}
    return [r for r in rows if r["fold"] != fold and r["name"] not in held]


def evaluate_methods(rows: Sequence[Mapping], level: float = LEVEL,
                     methods: Sequence[str] = METHODS) -> dict:
    """Each method calibrated on the other folds' rows (none of the fold's own images, from
    any repeat) and scored on each fold's: coverage and
    mean width per fold and pooled; ``chosen``: the narrowest with pooled coverage in
    :data:`COVERAGE_GOAL` (else the one closest to ``level``)."""
    folds = sorted({r["fold"] for r in rows})
    out: dict[str, Any] = {"level": level, "folds": folds, "methods": {}}
    for method in methods:
        per_fold, inside, widths = [], [], []
        for k in folds:
            cal = _calibration_rows(rows, k)
            interval = fit_interval(method, [r["count"] for r in cal],
                                    [r["spread"] for r in cal], [r["truth"] for r in cal], level)
            ins, wid = [], []
            for r in (r for r in rows if r["fold"] == k):
                low, high = interval.bounds(r["count"], r["spread"])
                ins.append(low <= r["truth"] <= high)
                wid.append(high - low)
            per_fold.append({"fold": k, "images": len(ins), "coverage": float(np.mean(ins)),
                             "mean_width": float(np.mean(wid))})
            inside += ins
            widths += wid
        out["methods"][method] = {"per_fold": per_fold, "coverage": float(np.mean(inside)),
                                  "mean_width": float(np.mean(widths)), "images": len(inside)}
    ok = [m for m in methods if COVERAGE_GOAL[0] <= out["methods"][m]["coverage"]
          <= COVERAGE_GOAL[1]]
    out["chosen"] = (min(ok, key=lambda m: out["methods"][m]["mean_width"]) if ok else
                     min(methods, key=lambda m: abs(out["methods"][m]["coverage"] - level)))
    return out


def evaluate_review(rows: Sequence[Mapping], other: Mapping[int, Sequence[Mapping]]) -> dict:
    """The "unlike training images" rule fitted per fold on the other folds' images, applied
    to the fold's own held-out images and to ``other`` (images of another stain, observed by
    that fold's model): the two flag rates."""
    folds = sorted({r["fold"] for r in rows})
    held, foreign = [], []
    for k in folds:
        typical = fit_typical([r["features"] for r in _calibration_rows(rows, k)])
        held += [typical.distance(r["features"]) > typical.max_distance
                 for r in rows if r["fold"] == k]
        foreign += [typical.distance(o["features"]) > typical.max_distance
                    for o in other.get(k, [])]
    return {"held_out_rate": float(np.mean(held)) if held else None, "held_out": len(held),
            "other_rate": float(np.mean(foreign)) if foreign else None, "other": len(foreign)}


def calibration_markdown(report: Mapping, review: Mapping, command: str) -> str:
    """The calibration table (per fold and pooled, each method) and the review rates."""
    lines = [f"Per-image {report['level']:.0%} count intervals, calibrated by nested "
             "cross-validation on held-out images (each fold's interval fitted on the other "
             "folds' held-out residuals). Command: `" + command + "`", "",
             "| method | " + " | ".join(f"fold {k}" for k in report["folds"])
             + " | pooled coverage | pooled mean width |",
             "|---|" + "---:|" * (len(report["folds"]) + 2)]
    for name, m in report["methods"].items():
        cells = [f"{f['coverage']:.2f} / {f['mean_width']:.1f}" for f in m["per_fold"]]
        mark = " (chosen)" if name == report["chosen"] else ""
        lines.append(f"| `{name}`{mark} | " + " | ".join(cells)
                     + f" | {m['coverage']:.3f} | {m['mean_width']:.1f} |")
    repeats = "" if all(isinstance(k, int) for k in report["folds"]) else (
        "Fold r/k: fold k of repeat r (the repeats split the images on other seeds). ")
    lines += ["", f"Per fold: coverage / mean width (cells). {repeats}"
              f"Review flag *unlike training images*: {review['held_out_rate']:.2f} of "
              f"{review['held_out']} held-out BBBC041Seg smears, "
              + (f"{review['other_rate']:.2f} of {review['other']} BCCD smears (another stain)."
                 if review["other"] else "no images of another stain given.")]
    return "\n".join(lines) + "\n"
