"""Reading and validating the Kaggle "BCCD Dataset with mask" (= BBBC041Seg) layout.

The layout is ``ROOT/{train,test}/{original,mask}/<name>.<ext>``; an image and its mask
share a file *stem* (the mini subset stores images as JPEG and masks as PNG). Synthetic
data written by :mod:`bloodseg.data.synthetic` adds ``ROOT/<split>/instances/<name>.png``
with exact instance labels.

    >>> samples = list_split("data/BCCD Dataset with mask", "train")
    >>> report = verify("data/BCCD Dataset with mask"); print(report.summary())
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bloodseg.io import IMAGE_SUFFIXES, DataError, read_image, read_instances, read_mask
from bloodseg.labels import instances_from_mask

SPLITS = ("train", "test")
KAGGLE_COUNTS = {"train": 1169, "test": 159}
KAGGLE_FOLDER = "BCCD Dataset with mask"


@dataclass(frozen=True)
class Sample:
    """One image/mask pair (``instances`` only for synthetic data)."""

    name: str
    image: Path
    mask: Path
    instances: Path | None = None


def resolve_root(root: str | Path, splits: tuple[str, ...] = SPLITS) -> Path:
    """Accept the dataset folder itself or a folder holding ``BCCD Dataset with mask``; it must
    hold ``splits`` (evaluating needs only the split it scores)."""
    root = Path(root).expanduser()
    if not (root / splits[0]).is_dir() and (root / KAGGLE_FOLDER / splits[0]).is_dir():
        root = root / KAGGLE_FOLDER
    if not root.is_dir():
        raise DataError(
            f"{root}: dataset folder not found. Download it with "
            "`bloodseg-data download --out data/` or point data.root at the folder that "
            "holds train/ and test/ (or train on the built-in synthetic smears: "
            "data=synthetic)."
        )
    missing = [
        f"{s}/{k}" for s in splits for k in ("original", "mask") if not (root / s / k).is_dir()
    ]
    if missing:
        raise DataError(
            f"{root}: not the Kaggle layout; missing {', '.join(missing)}. Expected "
            "ROOT/{train,test}/{original,mask}/<name>.png with the same name in original/ "
            "and mask/."
        )
    return root


def _by_stem(folder: Path) -> tuple[dict[str, Path], list[str]]:
    files, problems = {}, []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            problems.append(f"{p}: not an image file (expected {', '.join(IMAGE_SUFFIXES)})")
            continue
        if p.stem in files:
            problems.append(f"{p}: duplicate of {files[p.stem].name} (same name, other suffix)")
            continue
        files[p.stem] = p
    return files, problems


def pair_split(root: Path, split: str) -> tuple[list[Sample], list[str]]:
    """Pair images with masks by stem; returns samples and a list of problems (not raised)."""
    images, problems = _by_stem(root / split / "original")
    masks, mask_problems = _by_stem(root / split / "mask")
    problems += mask_problems
    inst_dir = root / split / "instances"
    for stem in sorted(images.keys() - masks.keys()):
        problems.append(
            f"{images[stem]}: image has no mask (expected {root / split / 'mask' / stem}.png); "
            "add the mask or remove the image"
        )
    for stem in sorted(masks.keys() - images.keys()):
        problems.append(
            f"{masks[stem]}: mask has no image in {root / split / 'original'}; "
            "add the image or remove the mask"
        )
    samples = []
    for stem in sorted(images.keys() & masks.keys()):
        inst = inst_dir / f"{stem}.png"
        samples.append(Sample(stem, images[stem], masks[stem], inst if inst.is_file() else None))
    if not samples:
        problems.append(f"{root / split}: no image/mask pairs found")
    return samples, problems


def list_split(root: str | Path, split: str) -> list[Sample]:
    """The pairs of one split; raises :class:`DataError` listing every pairing problem."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    samples, problems = pair_split(resolve_root(root, (split,)), split)
    if problems:
        raise DataError("\n".join(problems))
    return samples


def image_digests(samples: list[Sample]) -> list[str]:
    """A short content hash of each sample's image (sha256, 16 hex digits): what a model spec
    records of its training images, so that evaluating on them can be told, whatever the
    files are called or wherever they live."""
    import hashlib

    return [hashlib.sha256(s.image.read_bytes()).hexdigest()[:16] for s in samples]


def read_pair(sample: Sample, color: str = "rgb"
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode one pair (and its instances, if any) once and check that the sizes agree.

    Returns ``(image, mask {0,1}, instances int32 or None)``; raises DataError.
    """
    img = read_image(sample.image, color=color)
    mask = read_mask(sample.mask)
    if img.shape[:2] != mask.shape:
        raise DataError(
            f"{sample.image}: image is {img.shape[1]}x{img.shape[0]} but its mask "
            f"{sample.mask} is {mask.shape[1]}x{mask.shape[0]}; they must be the same size"
        )
    inst = None
    if sample.instances is not None:
        inst = read_instances(sample.instances)
        if inst.shape != mask.shape:
            raise DataError(f"{sample.instances}: instance labels differ in size from the mask")
    return img, mask, inst


def read_native_instances(sample: Sample) -> np.ndarray:
    """The sample's instances at its source size: exact labels if it has them (synthetic),
    else the connected components of its gap-separated mask."""
    if sample.instances is not None:
        return read_instances(sample.instances)
    return instances_from_mask(read_mask(sample.mask))


def mask_warning(path: str | Path, mask: np.ndarray) -> str | None:
    """Why a mask (``{0,1}``) cannot teach cells apart, naming its file; None if it can. Not
    an error: an image without cells can be right, so verify and training warn."""
    if not mask.any():
        return (f"{path}: mask has no cells (every pixel is 0); if its image shows cells the "
                "mask is wrong: re-export it, or remove the pair")
    if mask.all():
        return (f"{path}: mask is all foreground (every pixel is 255): no background, no cell "
                "borders; an inverted or blank export? Fix it, or remove the pair")
    return None


@dataclass
class VerifyReport:
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    sizes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # suspicious, not wrong: still ok

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        lines = [f"dataset: {self.root}"]
        if "single pair" in self.counts:
            lines.append("  one image/mask pair (original.* + mask.*)")
        for split in SPLITS if "single pair" not in self.counts else ():
            n = self.counts.get(split, 0)
            note = "" if n == KAGGLE_COUNTS[split] else f" (Kaggle has {KAGGLE_COUNTS[split]})"
            lines.append(f"  {split}: {n} pairs{note}")
        for (w, h), n in self.sizes.most_common():
            lines.append(f"  size {w}x{h}: {n} images")
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines += [f"  - {w}" for w in self.warnings]
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  - {p}" for p in self.problems]
        else:
            lines.append("no problems found")
        return "\n".join(lines)


def single_pair(folder: Path) -> Sample | None:
    """A folder holding one ``original.*`` + ``mask.*`` pair (like bbbc041seg-sample/)."""
    images, _ = _by_stem(folder) if folder.is_dir() else ({}, [])
    if "original" in images and "mask" in images:
        return Sample(folder.name, images["original"], images["mask"])
    return None


def _check_into(report: VerifyReport, sample: Sample, color: str) -> None:
    try:
        image, mask, _ = read_pair(sample, color)
    except DataError as err:
        report.problems.append(str(err))
        return
    report.sizes[image.shape[1], image.shape[0]] += 1
    warning = mask_warning(sample.mask, mask)
    if warning:
        report.warnings.append(warning)


def verify(root: str | Path, color: str = "rgb") -> VerifyReport:
    """Check every pair of both splits (decodes everything) and collect all problems, and as
    warnings the masks without cells or without background (:func:`mask_warning`).

    A folder with a single ``original.*``/``mask.*`` pair is checked as that one pair.
    """
    pair = single_pair(Path(root))
    if pair is not None and not (Path(root) / "train").is_dir():
        report = VerifyReport(Path(root), counts={"single pair": 1})
        _check_into(report, pair, color)
        return report
    try:
        root = resolve_root(root)
    except DataError as err:
        return VerifyReport(Path(root), problems=[str(err)])
    report = VerifyReport(root)
    for split in SPLITS:
        samples, problems = pair_split(root, split)
        report.counts[split] = len(samples)
        report.problems += problems
        for s in samples:
            _check_into(report, s, color)
    return report
