"""Small datasets in the Kaggle layout (``<root>/<split>/original|mask``), written by hand."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_pair(root: Path, split: str, name: str, image: np.ndarray, mask: np.ndarray,
               image_ext: str = ".png") -> None:
    (root / split / "original").mkdir(parents=True, exist_ok=True)
    (root / split / "mask").mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(root / split / "original" / f"{name}{image_ext}"), image)
    cv2.imwrite(str(root / split / "mask" / f"{name}.png"), mask)


def tiny_dataset(root: Path, n_train: int = 3, n_test: int = 1) -> Path:
    """Noise images of 60x40 px, each with one round cell in its mask."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            img = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
            mask = np.zeros((40, 60, 3), np.uint8)
            cv2.circle(mask, (20, 20), 8, (255, 255, 255), -1)
            write_pair(root, split, f"img{i}", img, mask)
    return root
