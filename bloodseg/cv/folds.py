"""Cross-validation folds of a Kaggle-layout folder: a seeded assignment of its image/mask
pairs to folds, and per-fold folders of symbolic links that training and testing read.

All pairs (train/ and test/ pooled, sorted by name) are permuted with a seed and cut into
folds; fold ``k``'s folder has the fold's pairs as ``test/`` and all others as ``train/``,
links only, so the data folder itself is never written.

    >>> samples = list_pairs(root)
    >>> names = assign_folds([s.name for s in samples], folds=4, seed=0)
    >>> dirs = build_fold_dirs(samples, names, work)    # work/folds/fold0/{train,test}/...
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bloodseg.data.bbbc041seg import SPLITS, Sample, pair_split, resolve_root
from bloodseg.data.boxes import BOXES_FILE

__all__ = ["FOLDS_DIR", "assign_folds", "build_fold_dirs", "data_kind", "list_pairs"]

FOLDS_DIR = "folds"


def list_pairs(root: str | Path) -> list[Sample]:
    """Every image/mask pair of ``root``'s train/ and test/, sorted by name; ValueError
    listing the problems when a file is unpaired or a name occurs twice."""
    root = resolve_root(root)
    samples, problems = [], []
    for split in SPLITS:
        found, split_problems = pair_split(root, split)
        samples += found
        problems += split_problems
    seen: dict[str, Path] = {}
    for s in samples:
        if s.name in seen:
            problems.append(f"{s.image}: the name {s.name!r} is also {seen[s.name]}")
        seen[s.name] = s.image
    if problems:
        raise ValueError(f"{root}: cannot split this folder into folds:\n  "
                         + "\n  ".join(problems))
    return sorted(samples, key=lambda s: s.name)


def data_kind(root: str | Path) -> str:
    """``synthetic`` for a folder bloodseg's generator wrote (its dataset.json), else ``real``."""
    try:
        return "synthetic" if "generator_version" in json.loads(
            (Path(root) / "dataset.json").read_text()) else "real"
    except (OSError, ValueError, TypeError):
        return "real"


def assign_folds(names: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """Names of each fold's test set: the sorted names permuted with ``seed`` and cut into
    ``folds`` contiguous parts whose sizes differ by at most one (each name in one fold)."""
    names = sorted(names)
    if len(set(names)) != len(names):
        raise ValueError("names must be unique")
    if not 2 <= folds <= len(names):
        raise ValueError(f"need 2 <= folds <= {len(names)} (the number of pairs), got {folds}")
    perm = np.random.default_rng(seed).permutation(len(names))
    return [sorted(names[i] for i in part) for part in np.array_split(perm, folds)]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve())


def build_fold_dirs(samples: Sequence[Sample], fold_names: Sequence[Sequence[str]],
                    work: str | Path, boxes: str | Path | None = None) -> list[Path]:
    """``<work>/folds/fold<k>/{train,test}/{original,mask}/``: links to the data, nothing
    else (with ``boxes``, also ``boxes.csv``: the test stage then scores box agreement). A
    fold folder from an earlier call is kept when it links exactly these files (a benchmark
    still training on it keeps reading it), replaced otherwise."""
    dirs = []
    for k, test_names in enumerate(fold_names):
        fold = Path(work) / FOLDS_DIR / f"fold{k}"
        test = set(test_names)
        want = {}
        for s in samples:
            split = "test" if s.name in test else "train"
            want[Path(split, "original", s.image.name)] = s.image.resolve()
            want[Path(split, "mask", s.mask.name)] = s.mask.resolve()
        if boxes is not None:
            want[Path(BOXES_FILE)] = Path(boxes).resolve()
        if fold.exists() and _links(fold) != want:
            shutil.rmtree(fold)
        if not fold.exists():
            for rel, src in want.items():
                _link(src, fold / rel)
        dirs.append(fold)
    return dirs


def _links(fold: Path) -> dict[Path, Path] | None:
    """``{relative path: link target}`` of a fold folder; None if it holds anything else."""
    found = {}
    for path in fold.rglob("*"):
        if path.is_symlink():
            found[path.relative_to(fold)] = Path(os.readlink(path))
        elif not path.is_dir():
            return None
    return found
