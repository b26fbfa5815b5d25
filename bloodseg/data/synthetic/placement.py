"""Where the cells go: centres, radii and kinds of one image's cells, in drawing order.

Coordinates are specimen units (px along the image width); :func:`_draw_cell` maps rows
through ``y_stretch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bloodseg.data.synthetic.params import _INFECTED, _RBC, _WBC, _Params


@dataclass
class _Cell:
    """Centre ``(x, y)`` and radius ``r`` in specimen px; ``kind`` is _RBC, _INFECTED or _WBC."""

    x: float
    y: float
    r: float
    kind: int


def _place_cells(
    rng: np.random.Generator, width: float, height: float, d: float, p: _Params
) -> list[_Cell]:
    """Random placement with touching neighbours (pairs, chains, clusters); overlaps stay partial.

    A neighbour is put at (r1 + r2) * U(0.85, 1.0) from an existing cell, so it touches or
    slightly overlaps it, as in real smears; any new cell closer than ``min_sep * (r1 + r2)`` to
    an existing one is rejected so that no cell is hidden under others. Freely placed cells keep
    ``free_sep`` instead, so that touching is controlled by ``neighbour_prob``.
    """
    r0 = d / 2
    margin = 0.3 * d
    area = (width + 2 * margin) * (height + 2 * margin)
    cell_area = math.pi * r0**2 * math.exp(2 * p.size_sigma**2)
    n_target = max(1, int(round(p.coverage * area / cell_area)))
    kinds = [_WBC] * p.n_wbc
    kinds += [
        _INFECTED if rng.random() < p.infected_frac else _RBC for _ in range(n_target - p.n_wbc)
    ]
    xs = np.empty(len(kinds), np.float64)
    ys = np.empty(len(kinds), np.float64)
    rs = np.empty(len(kinds), np.float64)
    cells: list[_Cell] = []
    for kind in kinds:
        z = float(np.clip(rng.normal(0.0, p.size_sigma), -3 * p.size_sigma, 3 * p.size_sigma))
        r = r0 * math.exp(z)
        if kind == _WBC:
            r = r0 * rng.uniform(*p.wbc_scale)
        elif kind == _INFECTED:
            r *= rng.uniform(1.05, 1.3)
        n = len(cells)
        for _ in range(30):
            sep = p.min_sep
            if n and kind != _WBC and rng.random() < p.neighbour_prob:
                # Half of the time extend the newest cell so that chains form.
                j = n - 1 if rng.random() < 0.5 else int(rng.integers(n))
                ang = rng.uniform(0, 2 * math.pi)
                dist = (rs[j] + r) * rng.uniform(0.85, 1.0)
                x, y = xs[j] + dist * math.cos(ang), ys[j] + dist * math.sin(ang)
                if not (-margin <= x <= width + margin and -margin <= y <= height + margin):
                    continue
            else:
                x = rng.uniform(-margin, width + margin)
                y = rng.uniform(-margin, height + margin)
                sep = p.free_sep
            if n and np.any(np.hypot(xs[:n] - x, ys[:n] - y) < sep * (rs[:n] + r)):
                continue
            xs[n], ys[n], rs[n] = x, y, r
            cells.append(_Cell(x, y, r, kind))
            break
    return cells
