"""Samples -> cached arrays -> training tensors: decoding, resizing, crops, targets.

Every image is decoded and resized once into a uint8 cache (decoding a 1600x1200 PNG costs
~50x a training step's copy). Two ways to size it:

* ``size_hw`` (the study's): squash every image to one size, e.g. 256x256;
* ``scale`` (e.g. 0.5): keep the aspect, shrink by ``scale``; training then samples random
  crops, so the 1-3 px gaps between touching cells survive (at 256x256 they are gone).

Instances are resized nearest-neighbour from the native ones; ``separate_touching`` redraws a
1-px gap between cells that touch after resizing. Per item the dataset augments image, mask
and instances together, then the target (:mod:`bloodseg.targets`, ``conf/target``) encodes
the instances into the training arrays. The test split is scored elsewhere, at native size
(:mod:`bloodseg.evaluation`); here its pairs are only decoded and checked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from bloodseg.data.bbbc041seg import Sample, mask_warning, read_pair
from bloodseg.labels import instances_from_mask, mask_from_instances
from bloodseg.targets import from_config as target_from_config
from bloodseg.transforms import normalize, prepare_image, scaled_hw

Augment = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def load_sample(sample: Sample, color: str, size_hw: tuple[int, int] | None = None,
                scale: float | None = None, separate_touching: bool = True,
                contrast: str | None = None) -> dict:
    """Decode one pair, derive its instances, resize (to ``size_hw`` or by ``scale``);
    ``contrast="percentile"`` stretches the whole image's intensities first. The image goes
    through :func:`bloodseg.transforms.prepare_image`, as it does at inference."""
    image, mask, inst = read_pair(sample, color)  # one decode per file, sizes checked
    warning = mask_warning(sample.mask, mask)  # on the file's mask, before any resize
    if inst is None:
        inst = instances_from_mask(mask)
    orig_hw = image.shape[:2]
    h, w = size_hw if scale is None else scaled_hw(orig_hw, scale)
    image = prepare_image(image, color, contrast, (h, w))
    if orig_hw != (h, w):
        # labels must not blend
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        inst = cv2.resize(inst.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
        inst = inst.astype(np.int32)
    if separate_touching:
        mask = mask * (mask_from_instances(inst, gap_px=1) > 0)
    if image.ndim == 2:
        image = image[:, :, None]
    return {"name": sample.name, "image": image, "mask": mask, "instances": inst,
            "orig_hw": orig_hw, "mask_warning": warning}


def load_cache(samples: Sequence[Sample], color: str, size_hw: tuple[int, int] | None,
               scale: float | None = None, threads: int = 4,
               separate_touching: bool = True, contrast: str | None = None) -> list[dict]:
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(
            lambda s: load_sample(s, color, size_hw, scale, separate_touching, contrast),
            samples))


def random_crop(arrays: Sequence[np.ndarray], crop_hw: tuple[int, int]) -> list[np.ndarray]:
    """The same random ``crop_hw`` window of every array (HxW or HxWxC); arrays smaller than
    the crop are padded (image: reflected; labels: background) first."""
    h, w = arrays[0].shape[:2]
    ch, cw = crop_hw
    if h < ch or w < cw:
        padded = []
        for i, a in enumerate(arrays):
            pad = [(0, max(0, ch - h)), (0, max(0, cw - w))] + [(0, 0)] * (a.ndim - 2)
            padded.append(np.pad(a, pad, mode="reflect" if i == 0 else "constant"))
        arrays, (h, w) = padded, padded[0].shape[:2]
    y = int(torch.randint(0, h - ch + 1, (1,)))
    x = int(torch.randint(0, w - cw + 1, (1,)))
    return [a[y:y + ch, x:x + cw] for a in arrays]


class SegmentationDataset(Dataset):
    """Cached samples -> tensors: optional crop, augmentation (image, mask and instances
    together), normalization and the target's arrays (``target``: a ``conf/target`` config,
    ``{"name": ..., <fields>}``)."""

    def __init__(self, cache: list[dict], color: str, augment: Augment | None = None,
                 target: dict | None = None, crop_hw: tuple[int, int] | None = None,
                 repeats: int = 1) -> None:
        self.cache = cache
        self.repeats = max(1, int(repeats))  # crops drawn per image and epoch
        self.color = color
        self.augment = augment
        self.target = target_from_config(target)
        self.crop_hw = crop_hw

    def __len__(self) -> int:
        return len(self.cache) * self.repeats

    def __getitem__(self, idx: int) -> dict:
        item = self.cache[idx % len(self.cache)]
        image, mask, inst = item["image"], item["mask"], item["instances"]
        if self.crop_hw is not None:
            image, mask, inst = random_crop([image, mask, inst], self.crop_hw)
        if self.augment is not None:
            # one label map carries both mask and instances through the (nearest) geometry
            image, both = self.augment(image, inst.astype(np.int32) * 2 + (mask > 0))
            inst, mask = both // 2, (both % 2).astype(np.uint8)
        inst = np.ascontiguousarray(inst, dtype=np.int32)
        mask = np.ascontiguousarray(mask)
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(normalize(image, self.color))),
            "mask": torch.from_numpy(mask.astype(np.float32))[None],
            "instances": torch.from_numpy(inst),
            "name": item["name"],
            **{k: torch.from_numpy(v) for k, v in self.target.encode(inst, mask).items()},
        }
        return out
