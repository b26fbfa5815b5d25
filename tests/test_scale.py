"""Training at a scale where gaps survive: crops stay aligned, scoring happens at native size."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bloodseg import tuning
from bloodseg.data.datamodule import BloodCellDataModule
from bloodseg.data.dataset import random_crop
from bloodseg.metrics import InstanceStats
from bloodseg.postprocess import Watershed
from bloodseg.transforms import upsample


def disc_labels(shape=(480, 640), r=30, step=58) -> np.ndarray:
    """Rows of touching-ish discs, ids 1..N."""
    inst = np.zeros(shape, np.int32)
    k = 0
    for y in range(r + 5, shape[0] - r, step):
        for x in range(r + 5, shape[1] - r, step):
            k += 1
            cv2.circle(inst, (x, y), r, k, -1)
    return inst


def soft_map(inst: np.ndarray) -> np.ndarray:
    """A network-like probability: high inside cells, falling off smoothly at their edges."""
    dist = cv2.distanceTransform((inst > 0).astype(np.uint8), cv2.DIST_L2, 5)
    return (1 / (1 + np.exp(-(dist - 2.0)))).astype(np.float32)


def test_random_crop_keeps_arrays_aligned_and_pads_small_images():
    torch.manual_seed(0)
    inst = disc_labels((300, 400))
    image = np.dstack([inst.astype(np.uint8) * 3] * 3)  # image encodes the label
    mask = (inst > 0).astype(np.uint8)
    for _ in range(20):
        im, m, lab = random_crop([image, mask, inst], (128, 160))
        assert im.shape[:2] == m.shape == lab.shape == (128, 160)
        assert np.array_equal(im[:, :, 0], lab.astype(np.uint8) * 3)
        assert np.array_equal(m, (lab > 0).astype(np.uint8))
    im, m, lab = random_crop([image[:50, :60], mask[:50, :60], inst[:50, :60]], (64, 64))
    assert im.shape[:2] == lab.shape == (64, 64)
    assert lab[50:].max() == 0 and lab[:, 60:].max() == 0  # padding is background


def test_scale_mode_caches_at_scale_and_crops_training_items(tmp_path):
    from bloodseg.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "syn", n_train=6, n_test=2, size=(160, 120), seed=1)
    dm = BloodCellDataModule(root=str(root), scale=0.5, crop_size=48, image_size=64,
                             expected_counts={}, target={"name": "contour", "channels": 3},
                             val_fraction=0.34)
    dm.setup()
    item = dm.datasets["train"][0]
    assert item["image"].shape == (1, 48, 48) and item["target"].shape == (48, 48)
    assert item["target"].dtype == torch.int64
    assert set(item["target"].unique().tolist()) <= {0, 1, 2}
    val = dm.datasets["val"][0]
    assert val["image"].shape == (1, 60, 80)  # whole image at half size
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape[0] == 1  # whole images of any size: one per batch
    assert dm.datasets["test"][0]["image"].shape == (1, 60, 80)  # loaded and checked too
    info = dm.describe()
    assert info["scale"] == 0.5 and info["image_size"] == [48, 48] and info["target"] == "contour"


def test_outputs_upsampled_from_a_small_size_score_like_native_ones():
    """Tests score upsampled outputs at native size: a map computed at 1/4 of the native size
    must give the same cells and scores as the native map itself."""
    native = disc_labels()
    prob = soft_map(native)
    small = cv2.resize(prob, (160, 120), interpolation=cv2.INTER_AREA)[None]

    got = tuning.score(Watershed(), [tuning.TuningItem("a", small, native)])
    direct = InstanceStats()
    direct.update("a", native, Watershed()(prob))
    want = direct.aggregate()
    assert got["count_mae"] == want["count_mae"] == 0
    assert got["f1"] == want["f1"] == 1.0
    up = upsample(small, native.shape)
    assert up.shape == (1, *native.shape)
    truth = native > 0

    def dice(fg):
        return 2 * (fg & truth).sum() / (fg.sum() + truth.sum())

    assert abs(dice(up[0] > 0.5) - dice(prob > 0.5)) < 0.01  # native pixel Dice


def test_percentile_contrast_makes_pale_and_dark_smears_alike(tmp_path):
    from bloodseg.transforms import adjust_contrast

    inst = disc_labels((120, 160), r=12, step=30)
    dark = np.where(inst > 0, 60, 220).astype(np.uint8)
    pale = np.where(inst > 0, 150, 175).astype(np.uint8)  # low contrast, like a faint smear
    a, b = adjust_contrast(dark, "percentile"), adjust_contrast(pale, "percentile")
    assert np.array_equal(a, b) and a.min() == 0 and a.max() == 255
    assert adjust_contrast(pale, "none") is pale
    with pytest.raises(ValueError, match="data.contrast must be one of"):
        adjust_contrast(pale, "clahe")
