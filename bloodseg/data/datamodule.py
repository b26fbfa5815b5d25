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
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from bloodseg.data.bbbc041seg import KAGGLE_COUNTS, Sample, list_split, read_pair
from bloodseg.io import DataError
from bloodseg.labels import instances_from_mask, mask_from_instances
from bloodseg.transforms import channels, flip, normalize, random_flips

log = logging.getLogger(__name__)


def _size_hw(image_size: int | Sequence[int], option: str = "data.image_size") -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise DataError(f"{option} must be positive (an int or [height, width]), "
                        f"got {list(image_size)}")
    return h, w


def load_sample(sample: Sample, color: str, size_hw: tuple[int, int],
                separate_touching: bool = True) -> dict:
    """Decode one pair, derive its instances, resize to ``size_hw``; all uint8/int32.

    ``separate_touching`` redraws one-pixel gaps between touching cells after resizing:
    shrinking a 1600x1200 mask to 256x256 erases its thin gaps, and a network that never
    sees gaps cannot learn to separate cells.
    """
    image, mask, inst = read_pair(sample, color)  # one decode per file, sizes checked
    if inst is None:
        inst = instances_from_mask(mask)
    h, w = size_hw
    orig_hw = image.shape[:2]
    if image.shape[:2] != (h, w):
        # INTER_AREA is the antialiasing choice for downscaling; labels must not blend.
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        inst = cv2.resize(inst.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        inst = inst.astype(np.int32)
    if separate_touching:
        mask = mask * (mask_from_instances(inst, gap_px=1) > 0)
    if image.ndim == 2:
        image = image[:, :, None]
    return {
        "name": sample.name,
        "image": image,
        "mask": mask,
        "instances": inst,
        "orig_hw": orig_hw,
    }


def load_cache(
    samples: Sequence[Sample], color: str, size_hw: tuple[int, int], threads: int = 4,
    separate_touching: bool = True,
) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(lambda s: load_sample(s, color, size_hw, separate_touching),
                             samples))


class SegmentationDataset(Dataset):
    """Cached samples -> tensors. Flips (train only) move image, mask and instances together."""

    def __init__(self, cache: list[dict], color: str, augment: bool = False) -> None:
        self.cache = cache
        self.color = color
        self.augment = augment

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, idx: int) -> dict:
        item = self.cache[idx]
        image, mask, inst = item["image"], item["mask"], item["instances"]
        if self.augment:
            h, v = random_flips()
            image, mask, inst = (flip(a, h, v) for a in (image, mask, inst))
        return {
            "image": torch.from_numpy(np.ascontiguousarray(normalize(image, self.color))),
            "mask": torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None],
            "instances": torch.from_numpy(np.ascontiguousarray(inst, dtype=np.int32)),
            "name": item["name"],
        }


class BloodCellDataModule(pl.LightningDataModule):
    """Train/val/test loaders over a Kaggle-layout folder (real or synthetic).

    Args:
        root: folder with ``train/`` and ``test/`` (or one holding ``BCCD Dataset with mask``).
        color: ``gray`` (1 channel) or ``rgb`` (3 channels), as the study ran both.
        image_size: int (square, the study's 256) or ``[height, width]``.
        val_fraction: share of train held out for validation, drawn with ``seed``.
        expected_counts: ``{train: 1169, test: 159}`` warns when the folder differs; None
            for data whose size is known to differ (synthetic).
        kind: ``real`` (read ``root``) or ``synthetic`` (generate into
            ``synthetic.cache_dir`` on first use; ``root`` must then be left unset).
        synthetic: the generator's parameters (keys of
            :func:`bloodseg.data.synthetic.write_dataset`, ``size`` as [height, width] like
            ``image_size``) plus ``cache_dir``; used only when ``kind="synthetic"``.
        in_channels: must agree with ``color``; exists so model configs can read it.
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
        augment: bool = True,
        separate_touching: bool = True,
        expected_counts: dict | None = None,
        kind: str = "real",
        synthetic: dict | None = None,
        in_channels: int | None = None,
        pin_memory: bool = False,
        decode_threads: int = 4,
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
                            "test/ (e.g. data.root='data/BCCD Dataset with mask')")
        self.root = Path(root)
        self.color = color
        self.in_channels = channels(color)
        self.size_hw = _size_hw(image_size)
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augment = augment
        self.separate_touching = separate_touching
        self.expected_counts = (
            dict(KAGGLE_COUNTS) if expected_counts is None and kind == "real" else expected_counts
        )
        self.pin_memory = pin_memory
        self.decode_threads = decode_threads
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
            msg = (
                f"{self.root}: {split} split has {n} image/mask pairs, the Kaggle dataset "
                f"has {want}; training on a subset or a different dataset"
            )
            warnings.warn(msg, stacklevel=2)
            log.warning(msg)

    def _dataset(self, samples: list[Sample], augment: bool) -> SegmentationDataset:
        cache = load_cache(samples, self.color, self.size_hw, self.decode_threads,
                           self.separate_touching)
        return SegmentationDataset(cache, self.color, augment)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and "train" not in self.datasets:
            samples = list_split(self.root, "train")
            self._check_counts("train", len(samples))
            train, val = self.split_train_val(samples)
            if not val:
                raise DataError(f"{self.root}: validation split is empty; raise data.val_fraction")
            self.datasets["train"] = self._dataset(train, self.augment)
            self.datasets["val"] = self._dataset(val, False)
        if stage in (None, "test", "predict") and "test" not in self.datasets:
            samples = list_split(self.root, "test")
            self._check_counts("test", len(samples))
            self.datasets["test"] = self._dataset(samples, False)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
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

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def describe(self) -> dict:
        """What the run trained on, for run metadata, figure captions and predict's scale."""
        sizes = [c["orig_hw"] for ds in self.datasets.values() for c in ds.cache]
        return {
            "data_root": str(self.root),
            "data_kind": self.kind,
            "color": self.color,
            "image_size": list(self.size_hw),
            "source_size": np.median(sizes, axis=0).astype(int).tolist() if sizes else None,
            **{f"n_{k}": len(v) for k, v in self.datasets.items()},
        }
