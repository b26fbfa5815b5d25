"""Is this image a smear at all? Checks that run before an image is counted.

A blank field, a saturated frame, a thumbnail or a file of noise would otherwise come out as
"1 cells" (one huge cell) or a few hundred, and quietly corrupt a lab's statistics. Such an
image gets a row with an empty count and the reason instead (:func:`screen`), and the batch
goes on. The thresholds were chosen on the 40 BBBC041Seg smears of ``../shared/data``
(grayscale, 1600x1200), far outside what any of them shows, so no real smear is refused:

=======================  ==========================  ==============================
check                    40 smears (min .. max)      refused when
=======================  ==========================  ==============================
contrast (p99 - p1)      39 .. 231 grey levels       < 10 (blank, near-uniform)
saturated (>= 250)       0 .. 78 % of the pixels     > 95 %
neighbour correlation    0.991 .. 0.999              < 0.5 (noise, no structure)
=======================  ==========================  ==============================

(BCCD smears of another stain: contrast ~70-78, correlation ~0.993; bloodseg's own synthetic
smears at 96 px: correlation ~0.89; white noise: ~0. The first two pass, as they should;
whether the model suits them is another question.) An image is too small when its
shorter side is under :data:`MIN_NETWORK_SIDE` pixels at the network's scale: fewer than the
network's coarsest feature map needs, well under one cell of the training data.

    >>> screen(image, scale=0.5)      # None: count it; else the reason, e.g. "blank or ..."
"""

from __future__ import annotations

import numpy as np

MIN_CONTRAST = 10.0
MAX_SATURATED = 0.95
MIN_NEIGHBOUR_CORRELATION = 0.5
#: the shorter side an image needs at the network's scale (its coarsest feature map: 32 px)
MIN_NETWORK_SIDE = 32


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    return (img.mean(axis=2) if img.ndim == 3 else img).astype(np.float32)


def neighbour_correlation(gray: np.ndarray) -> float:
    """Correlation of each pixel with its right-hand neighbour (1: smooth, 0: white noise)."""
    a, b = gray[:, :-1].ravel(), gray[:, 1:].ravel()
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 1.0
    return float(np.corrcoef(a, b)[0, 1])


def screen(image: np.ndarray, scale: float = 1.0) -> str | None:
    """Why ``image`` (uint8, gray or RGB) must not be counted, or None. ``scale``: input px
    -> network px, as the model runs it."""
    h, w = image.shape[:2]
    need = int(np.ceil(MIN_NETWORK_SIDE / max(scale, 1e-6)))
    if min(h, w) < need:
        return f"too small ({w}x{h} px; this model needs at least {need} px on a side)"
    # a sample of rows keeps this cheap on 1600x1200 smears; the statistics do not move
    step = max(1, h // 256)
    sample = _gray(image[::step])
    lo, hi = np.percentile(sample, [1, 99])
    saturated = float((sample >= 250).mean())
    if saturated > MAX_SATURATED:
        return f"saturated ({saturated:.0%} of the pixels at 250 or above)"
    if hi - lo < MIN_CONTRAST:
        return (f"blank or near-uniform (contrast {hi - lo:.0f} grey levels; smears show "
                f"{MIN_CONTRAST:.0f} or more)")
    corr = neighbour_correlation(sample)
    if corr < MIN_NEIGHBOUR_CORRELATION:
        return f"no image structure (neighbouring pixels correlate {corr:.2f}: noise?)"
    return None
