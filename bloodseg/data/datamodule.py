"""``BloodCellDataModule``: the BBBC041Seg split, in-memory cache, flips and loaders.

It owns the official Kaggle split (1169 train / 159 test) plus a seeded validation
split carved from train. Every image is decoded and resized once, in ``setup()``, into a
uint8 cache (a thread pool decodes in parallel; OpenCV releases the GIL), so epochs never
touch a PNG again: decoding a 1600x1200 PNG costs ~50x more than a training step's copy.

    >>> dm = BloodCellDataModule(root="data/BCCD Dataset with mask", color="gray")
    >>> dm.setup("fit"); batch = next(iter(dm.train_dataloader()))
    >>> batch["image"].shape, batch["mask"].shape      # (4, 1, 256, 256), (4, 1, 256, 256)

``kind="synthetic"`` (``data=synthetic``) makes ``prepare_data`` generate the built-in
synthetic dataset on first use, under a cache folder named by a hash of the generator's
parameters (:mod:`bloodseg.data.synthetic`), so everything runs offline. Real data is never
generated: a real-data root that does not exist is an error.
"""

from __future__ import annotations

import logging
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader

from bloodseg.augment import build_augment
from bloodseg.config import group_config, to_plain
from bloodseg.data.bbbc041seg import KAGGLE_COUNTS, Sample, list_split
from bloodseg.data.dataset import SegmentationDataset, load_cache
from bloodseg.io import DataError
from bloodseg.transforms import adjust_contrast, channels

log = logging.getLogger(__name__)


def _size_hw(image_size: int | Sequence[int], option: str = "data.image_size") -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise DataError(f"{option} must be positive (an int or [height, width]), "
                        f"got {list(image_size)}")
    return h, w


class BloodCellDataModule(pl.LightningDataModule):
    """Train and validation loaders over a Kaggle-layout folder (real or synthetic); its test
    split is loaded and checked too (``setup("test")``), and scored by :mod:`bloodseg.evaluation`.

    Args:
        root: folder with ``train/`` and ``test/`` (or one holding ``BCCD Dataset with mask``).
        color: ``gray`` (1 channel) or ``rgb`` (3 channels), as the study ran both.
        image_size: int (square, the study's 256) or ``[height, width]``: every image is
            squashed to it (the study's way) unless ``scale`` is set.
        scale: keep each image's aspect and shrink it by this factor (0.5: 1600x1200 ->
            800x600); training then uses random ``crop_size`` crops, validation whole
            images (one per batch, sizes may differ).
        crop_size: int or ``[height, width]`` of the training crops with ``scale``.
        contrast: ``none`` (the study's) or ``percentile``: each image's intensities
            stretched to its 1st..99.8th percentiles (pale and dark smears look alike).
        crops_per_image: training crops drawn from each image per epoch with ``scale`` (an
            800x600 image holds ~7 crops of 256 px: one crop per epoch wastes most of it).
        augment: the ``conf/augment`` spec (``flips``, ``strong``, ...) for training, or
            None; ``True``/``False`` mean the study's flips / none.
        target: the ``conf/target`` spec; what the dataset derives from the instances.
        val_fraction: share of train held out for validation, drawn with ``seed``.
        expected_counts: ``{train: 1169, test: 159}`` warns when the folder differs; None
            for data whose size is known to differ (synthetic).
        kind: ``real`` (read ``root``) or ``synthetic`` (generate into
            ``synthetic.cache_dir`` on first use; ``root`` must then be left unset).
        synthetic: the generator's parameters (keys of
            :func:`bloodseg.data.synthetic.write_dataset`, ``size`` as [height, width] like
            ``image_size``) plus ``cache_dir``; used only when ``kind="synthetic"``.
        in_channels: must agree with ``color``; exists so model configs can read it.
        cut_cell_frac: how the masks treat cells cut by the image frame: those covering less
            than this fraction of a typical cell are not drawn (BBBC041Seg: 0.4,
            ``labels.CUT_CELL_FRAC``; 0: all drawn). The post-processing configs read it.
        boxes: a second reference for the test stage (:mod:`bloodseg.data.boxes`): a
            ``stem,x0,y0,x1,y1`` CSV; None: ``<root>/boxes.csv`` if present.
    """

    def __init__(
        self,
        root: str | None = None,
        color: str = "gray",
        image_size: int | Sequence[int] = 256,
        val_fraction: float = 0.1,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 42,
        augment: dict | bool | None = True,
        separate_touching: bool = True,
        scale: float | None = None,
        crop_size: int | Sequence[int] = 256,
        crops_per_image: int = 1,
        contrast: str = "none",
        target: dict | None = None,
        expected_counts: dict | None = None,
        kind: str = "real",
        synthetic: dict | None = None,
        in_channels: int | None = None,
        pin_memory: bool = False,
        decode_threads: int = 4,
        cut_cell_frac: float = 0.0,
        boxes: str | None = None,
    ) -> None:
        super().__init__()
        if in_channels is not None and in_channels != channels(color):
            raise ValueError(
                f"data.in_channels={in_channels} does not match data.color={color!r} "
                f"({channels(color)} channel(s)); override only data.color"
            )
        if not 0.0 <= val_fraction < 1.0:
            raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        if int(batch_size) <= 0:
            raise DataError(f"data.batch_size must be a positive number, got {batch_size}")
        if kind not in ("real", "synthetic"):
            raise DataError(f"data.kind must be 'real' or 'synthetic', got {kind!r}")
        self.kind = kind
        self.boxes = boxes
        self.synthetic = self._synthetic_params(synthetic) if kind == "synthetic" else None
        if kind == "synthetic":
            if root is not None:
                raise DataError(
                    f"data.root={root} was given with data=synthetic: synthetic data is generated "
                    "only under data.synthetic.cache_dir. For real data use "
                    f"data=bbbc041seg data.root={root}; to choose where synthetic data goes, "
                    "set data.synthetic.cache_dir")
            from bloodseg.data.synthetic import cache_path

            cache_dir = (synthetic or {}).get("cache_dir") or "data/synthetic"
            root = cache_path(Path(cache_dir), **self.synthetic)
        elif root is None:
            raise DataError("data.root is not set; point it at the folder holding train/ and "
                            "test/ (e.g. data.root='data/BCCD Dataset with mask'), or train on "
                            "the built-in synthetic smears with data=synthetic")
        self.root = Path(root)
        self.color = color
        self.in_channels = channels(color)
        self.size_hw = _size_hw(image_size)
        if scale is not None and not 0 < float(scale) <= 4:
            raise DataError(f"data.scale must be in (0, 4] or null, got {scale}")
        self.scale = None if scale is None else float(scale)
        self.crop_hw = _size_hw(crop_size, "data.crop_size")
        if int(crops_per_image) < 1:
            raise DataError(f"data.crops_per_image must be >= 1, got {crops_per_image}")
        self.crops_per_image = int(crops_per_image)
        adjust_contrast(np.zeros((1, 1), np.uint8), contrast)  # an unknown mode fails here
        self.contrast = contrast
        self.target = to_plain(target) or {"name": "binary"}
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        augment = to_plain(augment)
        self.augment_spec = group_config("augment", "flips") if augment is True else augment
        self.separate_touching = separate_touching
        self.expected_counts = (
            dict(KAGGLE_COUNTS) if expected_counts is None and kind == "real" else expected_counts
        )
        self.pin_memory = pin_memory
        self.decode_threads = decode_threads
        if not 0.0 <= float(cut_cell_frac) < 1.0:
            raise DataError(f"data.cut_cell_frac must be in [0, 1), got {cut_cell_frac}")
        self.cut_cell_frac = float(cut_cell_frac)
        self.datasets: dict[str, SegmentationDataset] = {}

    @staticmethod
    def _synthetic_params(synthetic: dict | None) -> dict:
        params = dict(synthetic or {})
        params.pop("cache_dir", None)
        if "size" in params:  # [height, width] in the config, (width, height) for the writer
            h, w = _size_hw(params["size"], "data.synthetic.size")
            params["size"] = (w, h)
        return params

    def prepare_data(self) -> None:
        if self.kind == "synthetic" and not (self.root / "train").is_dir():
            from bloodseg.data.synthetic import write_dataset

            log.info("generating synthetic dataset at %s", self.root)
            try:
                write_dataset(self.root, **self.synthetic)
            except FileExistsError:
                # parallel jobs of a sweep generate the same (deterministic) data; the first
                # rename wins and the others use it
                if not (self.root / "train").is_dir():
                    raise

    def split_train_val(self, samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
        """Seeded, disjoint train/val split of the official train samples."""
        if self.val_fraction == 0:
            return samples, []
        order = np.random.default_rng(self.seed).permutation(len(samples))
        n_val = max(1, int(round(self.val_fraction * len(samples))))
        if n_val >= len(samples):
            raise DataError(
                f"{self.root}: data.val_fraction={self.val_fraction} leaves no training image "
                f"out of {len(samples)}; lower data.val_fraction or add training images")
        val = sorted(order[:n_val].tolist())
        train = sorted(order[n_val:].tolist())
        return [samples[i] for i in train], [samples[i] for i in val]

    def _check_counts(self, split: str, n: int) -> None:
        want = (self.expected_counts or {}).get(split)
        if want is not None and n != want:
            # logged once (stdout and the job log), not also warnings.warn'd: that printed
            # it twice; and worded for the split, which evaluate reads without training
            use = {"train": "training", "test": "testing"}.get(split, f"using the {split} split")
            log.warning("%s: %s split has %d image/mask pairs, the Kaggle dataset has %d; "
                        "%s on a subset or a different dataset", self.root, split, n, want, use)

    def _warn_masks(self, split: str, cache: list[dict]) -> None:
        """One warning per split for masks without cells or without background: they pass
        every check (they are valid binary masks) yet teach the network nothing about cells."""
        flagged = [c["mask_warning"] for c in cache if c["mask_warning"]]
        if not flagged:
            return
        shown = flagged[:5] + ([f"... {len(flagged) - 5} more"] if len(flagged) > 5 else [])
        msg = (f"{self.root}: {len(flagged)} of {len(cache)} {split} masks have no cells or no "
               "background; training goes on with them. List them all with "
               f"`bloodseg-data verify {shlex.quote(str(self.root))}`:\n  " + "\n  ".join(shown))
        warnings.warn(msg, stacklevel=2)
        log.warning(msg)

    def _dataset(self, samples: list[Sample], split: str) -> SegmentationDataset:
        cache = load_cache(samples, self.color, self.size_hw, self.scale, self.decode_threads,
                           self.separate_touching, self.contrast)
        train = split == "train"
        return SegmentationDataset(
            cache, self.color,
            augment=build_augment(self.augment_spec) if train else None,
            target=self.target,
            crop_hw=self.crop_hw if train and self.scale is not None else None,
            repeats=self.crops_per_image if train and self.scale is not None else 1)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            samples = list_split(self.root, "train")
            self._check_counts("train", len(samples))
            train, val = self.split_train_val(samples)
            if not val:
                raise DataError(f"{self.root}: validation split is empty; raise data.val_fraction")
            self.datasets["train"] = self._dataset(train, "train")
            self.datasets["val"] = self._dataset(val, "val")
            self._warn_masks("train", self.datasets["train"].cache + self.datasets["val"].cache)
        # the test split is scored through the Predictor (bloodseg.evaluation); set up here
        # only so that a bad test pair stops a run before training (and for describe())
        if stage in (None, "test") and "test" not in self.datasets:
            samples = list_split(self.root, "test")
            self._check_counts("test", len(samples))
            self.datasets["test"] = self._dataset(samples, "test")
            self._warn_masks("test", self.datasets["test"].cache)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # whole images of different sizes (scale mode) cannot share a batch
        whole = self.scale is not None and split != "train"
        return DataLoader(
            self.datasets[split],
            batch_size=1 if whole else self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def describe(self) -> dict:
        """What the run trained on, for run metadata, figure captions and predict's scale."""
        sizes = [c["orig_hw"] for ds in self.datasets.values() for c in ds.cache]
        return {
            "data_root": str(self.root),
            "data_kind": self.kind,
            "color": self.color,
            # the network's input size: predict tiles at it (scale mode: the crop size)
            "image_size": list(self.crop_hw if self.scale is not None else self.size_hw),
            "scale": self.scale,
            "contrast": self.contrast,
            "crops_per_image": self.crops_per_image if self.scale is not None else None,
            "target": self.target.get("name", "binary"),
            "cut_cell_frac": self.cut_cell_frac,
            "source_size": np.median(sizes, axis=0).astype(int).tolist() if sizes else None,
            **{f"n_{k}": len(v.cache) for k, v in self.datasets.items()},
        }
