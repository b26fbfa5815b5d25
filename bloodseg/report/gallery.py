"""The synthetic-vs-real figure: generated smears next to real ones, to judge the generator.

Rows: synthetic "bbbc041", real BBBC041Seg, synthetic "bccd", real BCCD, then the synthetic
and the real BBBC041Seg masks. Synthetic images are rendered at the real images' 4:3 aspect
(800x600, 640x480) so that cell size and density compare fairly. Made by
``bloodseg-data gallery``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import cv2
import numpy as np

# The figure and canvas classes avoid pyplot's global backend state, so this works headless
# and does not disturb a caller's interactive backend.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bloodseg.data.synthetic import render_smear
from bloodseg.io import write_bytes_atomic
from bloodseg.labels import mask_from_instances

__all__ = ["make_gallery"]


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _real_bbbc041(real_root: Path) -> list[tuple[Path, Path]]:
    """(image, mask) pairs: the sample first, then the mini set in name order."""
    pairs: list[tuple[Path, Path]] = []
    sample = real_root / "bbbc041seg-sample"
    if (sample / "original.png").is_file() and (sample / "mask.png").is_file():
        pairs.append((sample / "original.png", sample / "mask.png"))
    mini = real_root / "bbbc041seg-mini"
    for split in ("train", "test"):
        for mask in sorted((mini / split / "mask").glob("*.png")):
            for ext in (".jpg", ".png"):
                image = mini / split / "original" / (mask.stem + ext)
                if image.is_file():
                    pairs.append((image, mask))
                    break
    return pairs


def make_gallery(
    out_png: Path, real_root: Path = Path("../shared/data"), n: int = 4, seed: int = 0
) -> Path:
    """Draw the grid (``n`` images per row, chosen by ``seed``) into ``out_png``, atomically.

    ``real_root`` holds ``bbbc041seg-sample``, ``bbbc041seg-mini`` and ``bccd-boxes``;
    FileNotFoundError names what is missing there.
    """
    real_root = Path(real_root)
    if not real_root.is_dir():
        raise FileNotFoundError(f"real data folder not found: {real_root}")
    bbbc = _real_bbbc041(real_root)
    if not bbbc:
        raise FileNotFoundError(
            f"no BBBC041Seg pairs under {real_root / 'bbbc041seg-sample'} or "
            f"{real_root / 'bbbc041seg-mini'}"
        )
    bccd_dir = real_root / "bccd-boxes" / "JPEGImages"
    bccd = sorted(bccd_dir.glob("*.jpg"))
    if not bccd:
        raise FileNotFoundError(f"no BCCD images in {bccd_dir}")

    rng = np.random.default_rng(seed)
    # Always show the documented sample, then a seeded choice of the rest.
    picks = [0] + sorted(rng.choice(np.arange(1, len(bbbc)), min(n, len(bbbc)) - 1, False))
    real_pairs = [bbbc[i] for i in picks[:n]]
    real_bccd = [bccd[i] for i in sorted(rng.choice(len(bccd), min(n, len(bccd)), False))]

    syn_bbbc, syn_masks, syn_counts, syn_bccd, syn_bccd_counts = [], [], [], [], []
    for i in range(n):
        image, inst = render_smear(np.random.default_rng([seed, 0, i]), 800, 600, "bbbc041")
        syn_bbbc.append(image)
        syn_masks.append(mask_from_instances(inst))
        syn_counts.append(int(inst.max()))
        image, inst = render_smear(np.random.default_rng([seed, 1, i]), 640, 480, "bccd")
        syn_bccd.append(image)
        syn_bccd_counts.append(int(inst.max()))

    rows: list[tuple[str, list[tuple[np.ndarray, str]]]] = [
        (
            "synthetic bbbc041",
            [
                (im, f"synthetic bbbc041 #{i} ({c} cells)")
                for i, (im, c) in enumerate(zip(syn_bbbc, syn_counts, strict=True))
            ],
        ),
        (
            "real BBBC041Seg",
            [(_read_rgb(p), f"real BBBC041Seg {p.stem[:8]}") for p, _ in real_pairs],
        ),
        (
            "synthetic bccd",
            [
                (im, f"synthetic bccd #{i} ({c} cells)")
                for i, (im, c) in enumerate(zip(syn_bccd, syn_bccd_counts, strict=True))
            ],
        ),
        ("real BCCD", [(_read_rgb(p), f"real BCCD {p.stem}") for p in real_bccd]),
        (
            "synthetic masks",
            [(m, f"synthetic bbbc041 mask #{i}") for i, m in enumerate(syn_masks)],
        ),
        (
            "real masks",
            [(_read_rgb(m)[..., 0], f"real BBBC041Seg mask {m.stem[:8]}") for _, m in real_pairs],
        ),
    ]
    fig = Figure(figsize=(4.2 * n, 3.4 * len(rows)), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for r, (_, panels) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(panels):
                continue
            image, title = panels[c]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="lanczos")
            ax.set_title(title, fontsize=9, color="darkred" if "synthetic" in title else "black")
    fig.suptitle("bloodseg synthetic smears (red titles) vs real images (black titles)")
    fig.tight_layout(rect=(0, 0, 1, 0.98))

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(out_png, buf.getvalue())
    return Path(out_png)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=Path("experiments/figures/synthetic_vs_real.png")
    )
    parser.add_argument("--real-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("-n", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(make_gallery(args.out, args.real_root, args.n, args.seed))


if __name__ == "__main__":
    main()
