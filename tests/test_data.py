"""Data layer: Kaggle-layout reader, bad-input errors, DataModule tensors/flips/splits, CLI."""

from __future__ import annotations

import logging
import warnings
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bloodseg.augment import build_augment
from bloodseg.cli.data import main as data_cli
from bloodseg.config import group_config
from bloodseg.data import kaggle
from bloodseg.data.bbbc041seg import Sample, list_split, verify
from bloodseg.data.datamodule import BloodCellDataModule
from bloodseg.data.dataset import SegmentationDataset, load_cache, load_sample
from bloodseg.io import DataError, read_image, read_mask
from tests.helpers.data import tiny_dataset, write_pair

# --- reader and bad input -------------------------------------------------------------


def test_pairs_by_stem_jpeg_image_png_mask(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    img = np.full((40, 60, 3), 128, np.uint8)
    write_pair(root, "train", "jpgone", img, np.zeros((40, 60), np.uint8), image_ext=".jpg")
    names = [s.name for s in list_split(root, "train")]
    assert names == ["img0", "img1", "img2", "jpgone"]


def test_accepts_parent_of_kaggle_folder(tmp_path):
    tiny_dataset(tmp_path / "BCCD Dataset with mask")
    assert len(list_split(tmp_path, "test")) == 1


def test_corrupt_image_names_file(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    bad = root / "train" / "original" / "img1.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"img1\.png: cannot decode.*Re-download it or remove"):
        read_image(bad)
    report = verify(root)
    assert not report.ok and any("img1.png" in p for p in report.problems)


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = tiny_dataset(tmp_path / "d", n_test=2)
    (root / "train" / "mask" / "img0.png").unlink()
    (root / "test" / "original" / "img0.png").unlink()
    with pytest.raises(DataError) as err:
        list_split(root, "train")
    assert "img0.png: image has no mask" in str(err.value)
    with pytest.raises(DataError, match="mask has no image"):
        list_split(root, "test")
    assert len(verify(root).problems) == 2


def test_size_mismatch(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    cv2.imwrite(str(root / "train" / "mask" / "img2.png"), np.zeros((30, 60), np.uint8))
    report = verify(root)
    assert any("img2.png: image is 60x40 but its mask" in p and "60x30" in p
               for p in report.problems)


def test_non_binary_mask_lists_values(tmp_path):
    path = tmp_path / "m.png"
    m = np.zeros((10, 10), np.uint8)
    m[0, 0], m[1, 1] = 128, 255
    cv2.imwrite(str(path), m)
    with pytest.raises(DataError, match=r"m\.png: mask is not binary: "
                                        r"found values \{0, 128, 255\}"):
        read_mask(path)


def test_rgb_mask_becomes_binary(tmp_path):
    path = tmp_path / "m.png"
    m = np.zeros((10, 10, 3), np.uint8)
    m[2:5, 2:5] = 255
    cv2.imwrite(str(path), m)
    out = read_mask(path)
    assert out.shape == (10, 10) and out.dtype == np.uint8 and out.sum() == 9


def test_gray_image_in_rgb_run(tmp_path):
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"g\.png: is a single-channel.*data\.color=gray"):
        read_image(path, color="rgb")
    assert read_image(path, color="gray").shape == (10, 10)
    assert read_image(path, color="rgb", strict=False).shape == (10, 10, 3)


def test_sixteen_bit_and_rgba_images_read_as_uint8(tmp_path):
    p16, p4 = tmp_path / "a.png", tmp_path / "b.png"
    cv2.imwrite(str(p16), np.full((8, 8), 65535, np.uint16))
    cv2.imwrite(str(p4), np.full((8, 8, 4), 200, np.uint8))
    assert read_image(p16, "gray").max() == 255
    assert read_image(p4, "rgb", strict=False).shape == (8, 8, 3)


@pytest.mark.parametrize("layout", ["empty", "wrong"])
def test_empty_or_wrong_layout(tmp_path, layout):
    root = tmp_path / "d"
    root.mkdir()
    if layout == "wrong":
        (root / "images").mkdir()
    with pytest.raises(DataError, match=r"not the Kaggle layout; missing train/original"):
        list_split(root, "train")
    with pytest.raises(DataError, match="dataset folder not found.*bloodseg-data download"):
        list_split(tmp_path / "absent", "train")


def test_empty_split_is_a_problem(tmp_path):
    root = tiny_dataset(tmp_path / "d")
    for p in (root / "test" / "original").iterdir():
        p.unlink()
    for p in (root / "test" / "mask").iterdir():
        p.unlink()
    assert any("no image/mask pairs" in p for p in verify(root).problems)


# --- ground truth instances and gaps --------------------------------------------------


def test_resized_masks_get_their_gaps_back(tmp_path):
    """Two cells 1 px apart at full size touch after a 4x downscale; the cache re-separates."""
    root = tmp_path / "d"
    image = np.full((80, 160, 3), 200, np.uint8)
    mask = np.zeros((80, 160), np.uint8)
    mask[20:60, 20:81] = 255
    mask[20:60, 82:140] = 255  # column 81 is the gap; nearest-neighbour resizing skips it
    write_pair(root, "train", "pair", image, mask)
    write_pair(root, "test", "pair", image, mask)
    sample = list_split(root, "train")[0]
    for separate, expected in ((False, 1), (True, 2)):
        item = load_sample(sample, "rgb", (20, 40), separate_touching=separate)
        n, _ = cv2.connectedComponents(item["mask"], connectivity=8)
        assert n - 1 == expected
        assert item["instances"].max() == 2  # truth is taken before resizing


@pytest.mark.real
def test_real_sample_truth_has_45_cells(shared_data):
    root = shared_data / "bbbc041seg-sample"
    sample = Sample("sample", root / "original.png", root / "mask.png")
    item = load_sample(sample, "rgb", (1200, 1600), separate_touching=False)
    assert item["instances"].max() == 45


# --- DataModule -----------------------------------------------------------------------


@pytest.mark.parametrize("color,channels", [("gray", 1), ("rgb", 3)])
def test_datamodule_tensors(synthetic_root, color, channels):
    dm = BloodCellDataModule(str(synthetic_root), color=color, image_size=64, batch_size=4,
                             synthetic={"n_train": 12})
    dm.setup("fit")
    dm.setup("test")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, channels, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 1, 64, 64)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0}
    assert batch["instances"].dtype == torch.int32 and batch["instances"].max() > 0
    # normalized: roughly zero-centred, not in [0, 255]
    assert -5 < batch["image"].min() < 0 < batch["image"].max() < 5
    assert len(dm.datasets["test"]) == 4 and dm.in_channels == channels


def test_val_split_seeded_and_disjoint(synthetic_root):
    def names(seed):
        dm = BloodCellDataModule(str(synthetic_root), image_size=32, seed=seed, val_fraction=0.25,
                                 synthetic={"n_train": 12})
        dm.setup("fit")
        return ({c["name"] for c in dm.datasets["train"].cache},
                {c["name"] for c in dm.datasets["val"].cache})

    train_a, val_a = names(1)
    train_b, val_b = names(1)
    _, val_c = names(2)
    assert val_a == val_b and train_a == train_b
    assert not train_a & val_a and len(val_a) == 3 and len(train_a) == 9
    assert val_a != val_c


def test_flips_move_image_mask_and_instances_together():
    image = np.zeros((16, 16, 1), np.uint8)
    image[2:6, 1:4] = 255  # bright block top-left; the mask marks exactly it
    mask = (image[:, :, 0] > 0).astype(np.uint8)
    inst = mask.astype(np.int32)
    ds = SegmentationDataset([{"name": "a", "image": image, "mask": mask, "instances": inst}],
                             color="gray", augment=build_augment(group_config("augment", "flips")))
    seen = set()
    torch.manual_seed(0)
    for _ in range(40):
        item = ds[0]
        bright = item["image"][0] > 0
        assert torch.equal(bright, item["mask"][0].bool())
        assert torch.equal(bright, item["instances"] > 0)
        seen.add(tuple(torch.nonzero(bright)[0].tolist()))
    assert len(seen) == 4  # all four flip combinations occurred


def test_no_augmentation_on_val_and_test(synthetic_root):
    dm = BloodCellDataModule(str(synthetic_root), image_size=32, expected_counts={})
    dm.setup(None)
    assert dm.datasets["train"].augment is not None
    assert dm.datasets["val"].augment is None and dm.datasets["test"].augment is None


def test_cache_holds_resized_uint8(synthetic_root):
    samples = list_split(synthetic_root, "test")
    cache = load_cache(samples, "rgb", (48, 40))
    assert cache[0]["image"].shape == (48, 40, 3) and cache[0]["image"].dtype == np.uint8
    assert cache[0]["instances"].shape == (48, 40)


def test_warns_once_per_split_on_other_counts_than_kaggle(tmp_path, caplog):
    root = tiny_dataset(tmp_path / "d")
    dm = BloodCellDataModule(str(root), image_size=32, val_fraction=0.34)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.WARNING, logger="bloodseg.data.datamodule"):
            dm.setup("fit")
            dm.setup("test")
            dm.setup("fit")  # set up already: no second line
    # a logged line only: a warnings.warn as well printed the same text twice
    assert not [w for w in caught if "Kaggle" in str(w.message)]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "train split has 3 image/mask pairs, the Kaggle dataset has 1169; training" in lines[0]
    # evaluate reads only the test split: not "training on a subset"
    assert "test split has" in lines[1] and "; testing on a subset" in lines[1]


def test_color_channel_mismatch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="does not match data.color"):
        BloodCellDataModule(str(tmp_path), color="rgb", in_channels=1)


@pytest.mark.real
def test_real_mini_dataset_loads(shared_data):
    root = shared_data / "bbbc041seg-mini"
    dm = BloodCellDataModule(str(root), color="rgb", image_size=128, val_fraction=0.1,
                             expected_counts={"train": 30, "test": 10})
    dm.setup("test")
    item = dm.datasets["test"][0]
    assert item["image"].shape == (3, 128, 128)
    # instances come from the full-resolution mask, so tens of cells survive the resize
    assert 20 < int(item["instances"].max()) < 200


# --- CLI ------------------------------------------------------------------------------


def test_cli_synthetic_then_verify(tmp_path, capsys):
    out = tmp_path / "syn"
    assert data_cli(["synthetic", "--out", str(out), "--train", "3", "--test", "2",
                     "--size", "64x48", "--seed", "3"]) == 0
    assert sorted(p.name for p in (out / "train").iterdir()) == ["instances", "mask", "original"]
    assert cv2.imread(str(next((out / "test" / "original").iterdir()))).shape == (48, 64, 3)
    assert data_cli(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: 3 pairs (Kaggle has 1169)" in text and "size 64x48: 5 images" in text
    # a second run into the same non-empty folder refuses instead of mixing datasets
    assert data_cli(["synthetic", "--out", str(out), "--train", "1", "--test", "1"]) == 2


def test_cli_verify_lists_every_problem(tmp_path, capsys):
    root = tiny_dataset(tmp_path / "d")
    (root / "train" / "mask" / "img0.png").unlink()
    (root / "train" / "original" / "img1.png").write_bytes(b"junk")
    assert data_cli(["verify", str(root)]) == 1
    text = capsys.readouterr().out
    assert "2 problem(s)" in text and "img0.png" in text and "img1.png" in text


@pytest.mark.real
@pytest.mark.parametrize("name", ["bbbc041seg-sample", "bbbc041seg-mini"])
def test_cli_verify_real_data(shared_data, capsys, name):
    assert data_cli(["verify", str(shared_data / name)]) == 0
    assert "no problems found" in capsys.readouterr().out


def test_download_offline_says_how_to_place_zip(tmp_path, monkeypatch):
    import kagglehub

    def offline(handle):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    with pytest.raises(DataError, match=r"bloodseg-data download --zip archive\.zip"):
        kaggle.download(tmp_path / "data")
    assert not (tmp_path / "data" / "BCCD Dataset with mask").exists()


def test_download_from_zip_installs_atomically(tmp_path):
    src = tiny_dataset(tmp_path / "src" / "BCCD Dataset with mask")
    archive = tmp_path / "archive.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in src.rglob("*.png"):
            zf.write(p, p.relative_to(src.parent))
    out = tmp_path / "data"
    target = kaggle.download(out, archive)
    assert target == out / "BCCD Dataset with mask" and len(list_split(target, "train")) == 3
    assert [p.name for p in out.iterdir()] == ["BCCD Dataset with mask"]  # no temp left
    with pytest.raises(FileExistsError):
        kaggle.download(out, archive)


def test_download_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    src = tiny_dataset(tmp_path / "src")

    def fail_rename(self, target):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "rename", fail_rename)
    out = tmp_path / "data"
    with pytest.raises(OSError, match="disk full"):
        kaggle.install_dataset(src, out)
    assert list(out.iterdir()) == []  # the staged copy went with the temp dir


def test_parallel_jobs_share_one_synthetic_dataset(tmp_path, monkeypatch):
    """Two sweep jobs generating the same data: the second keeps the first one's files."""
    from bloodseg.data import synthetic

    params = {"n_train": 2, "n_test": 1, "size": (48, 48), "seed": 5}
    root = synthetic.cache_path(tmp_path / "syn", **params)
    real_render = synthetic.render_smear
    other_job = {"started": False}

    def other_job_finishes_first(*args, **kwargs):
        if not other_job["started"]:
            other_job["started"] = True
            monkeypatch.setattr(synthetic, "render_smear", real_render)
            synthetic.write_dataset(root, n_train=2, n_test=1, size=(48, 48), seed=5)
            other_job["inode"] = (root / "train").stat().st_ino
            monkeypatch.setattr(synthetic, "render_smear", other_job_finishes_first)
        return real_render(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_smear", other_job_finishes_first)
    dm = BloodCellDataModule(kind="synthetic", image_size=48,
                             synthetic={**params, "cache_dir": str(tmp_path / "syn")})
    assert dm.root == root
    dm.prepare_data()
    assert other_job["started"] and len(list_split(root, "train")) == 2
    # the first job's files stay in place (it may be reading them), not swapped under it
    assert (root / "train").stat().st_ino == other_job["inode"]
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temp dirs left
