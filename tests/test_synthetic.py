"""Synthetic smears: label correctness, BBBC041Seg mask convention, Kaggle layout, determinism.

Fast (a few dozen small renders); timing is deliberately not asserted.
"""

from __future__ import annotations

import inspect
import json
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi

from bloodseg.data.synthetic import (
    DATASET_JSON,
    GENERATOR_VERSION,
    STYLES,
    cache_path,
    dataset_key,
    dataset_params,
    render_smear,
    write_dataset,
    writer,
)
from bloodseg.data.synthetic.writer import _image_name, _image_rng
from bloodseg.labels import mask_from_instances

SIZE = 256


@pytest.fixture(scope="module")
def renders() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Six 256x256 renders per style: (style, image, instances)."""
    out = []
    for style in STYLES:
        for seed in range(6):
            image, inst = render_smear(np.random.default_rng(seed), SIZE, SIZE, style)
            out.append((style, image, inst))
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_shapes_and_dtypes_any_aspect():
    for style in STYLES:
        image, inst = render_smear(np.random.default_rng(1), 200, 150, style)
        assert image.shape == (150, 200, 3) and image.dtype == np.uint8
        assert inst.shape == (150, 200) and inst.dtype == np.uint16
        assert inst.max() > 0


def test_instances_contiguous_and_each_one_component(renders):
    for style, _, inst in renders:
        n = int(inst.max())
        assert n >= 5, style
        np.testing.assert_array_equal(np.unique(inst), np.arange(n + 1))
        for i, sl in enumerate(ndi.find_objects(inst), start=1):
            count, _ = cv2.connectedComponents((inst[sl] == i).astype(np.uint8), connectivity=4)
            assert count == 2, f"{style}: instance {i} is in {count - 1} pieces"


def test_mask_is_instances_minus_gaps_and_components_are_the_instances(renders):
    for style, _, inst in renders:
        mask = mask_from_instances(inst)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        fg = inst > 0
        assert not np.any((mask > 0) & ~fg), "mask outside cells"
        gap = fg & (mask == 0)
        # Every gap pixel must have another (higher-id) cell right next to it: at 256 px the
        # gap is 1 px, so that cell lies within the 3x3 neighbourhood.
        higher = cv2.dilate(inst, np.ones((3, 3), np.uint8)) > inst
        assert np.all(higher[gap]), f"{style}: mask removed pixels that are not gap pixels"
        assert gap.sum() < 0.2 * fg.sum()
        # The BBBC041Seg recipe (8-connectivity, area > 15) gives back exactly the instances.
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        assert n - 1 == int(inst.max()), f"{style}: {n - 1} components, {inst.max()} cells"
        assert np.all(stats[1:, cv2.CC_STAT_AREA] > 15)
        # ... and each component lies inside one instance.
        pairs = np.unique(np.stack([lab[mask > 0], inst[mask > 0]]), axis=1)
        assert pairs.shape[1] == n - 1


def test_touching_cells_exist_and_are_separated(renders):
    touching = 0
    for _, _, inst in renders:
        # Pairs of different cells that are 8-neighbours before gapping.
        higher = cv2.dilate(inst, np.ones((3, 3), np.uint8)) > inst
        touching += int(np.sum(higher & (inst > 0)))
        mask = mask_from_instances(inst)
        assert not np.any(higher & (mask > 0)), "touching pixels survived in the mask"
    assert touching > 100


def test_mask_from_instances_handmade():
    inst = np.zeros((12, 20), np.uint16)
    inst[2:10, 2:10] = 1
    inst[2:10, 10:18] = 2  # shares an edge with 1
    mask = mask_from_instances(inst, gap_px=1)
    assert np.all(mask[2:10, 9] == 0) and np.all(mask[2:10, 10] == 255)  # lower id gives way
    assert cv2.connectedComponents(mask, connectivity=8)[0] - 1 == 2
    # Diagonal contact only: still separated for 8-connectivity.
    diag = np.zeros((8, 8), np.uint16)
    diag[1:4, 1:4] = 1
    diag[4:7, 4:7] = 2
    assert cv2.connectedComponents(mask_from_instances(diag), connectivity=8)[0] - 1 == 2
    # Wider gap on request; default gap derived from the cell size is 1 px for small cells.
    assert np.sum(mask_from_instances(inst, gap_px=2)[5] == 0) == 2 + 2 + 2
    np.testing.assert_array_equal(mask_from_instances(inst), mask)


def test_gap_scales_with_cell_size():
    _, small = render_smear(np.random.default_rng(3), 256, 192, "bbbc041")
    np.testing.assert_array_equal(mask_from_instances(small), mask_from_instances(small, 1))
    # Real 1600x1200 BBBC041Seg masks separate touching cells by ~2-3 px.
    _, big = render_smear(np.random.default_rng(3), 1600, 1200, "bbbc041")
    default = mask_from_instances(big)
    assert any(np.array_equal(default, mask_from_instances(big, k)) for k in (2, 3))


def test_unknown_style():
    with pytest.raises(ValueError, match="bbbc041.*bccd"):
        render_smear(np.random.default_rng(0), 64, 64, style="giemsa")
    with pytest.raises(ValueError, match="mixed"):
        write_dataset(Path("unused"), 1, 0, style="giemsa")


def test_write_dataset_kaggle_layout(tmp_path):
    out = write_dataset(tmp_path / "ds", n_train=3, n_test=2, size=(160, 120), seed=5)
    assert out == tmp_path / "ds"
    for split, n in (("train", 3), ("test", 2)):
        names = {
            k: sorted(p.name for p in (out / split / k).iterdir())
            for k in ("original", "mask", "instances")
        }
        assert len(names["original"]) == n
        assert names["original"] == names["mask"] == names["instances"]
        for name in names["original"]:
            uuid.UUID(Path(name).stem)
            image = cv2.imread(str(out / split / "original" / name), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(str(out / split / "mask" / name), cv2.IMREAD_UNCHANGED)
            inst = cv2.imread(str(out / split / "instances" / name), cv2.IMREAD_UNCHANGED)
            assert image.shape == (120, 160, 3) and image.dtype == np.uint8
            assert mask.shape == (120, 160, 3) and set(np.unique(mask)) <= {0, 255}
            assert np.all(mask == mask[..., :1])
            assert inst.shape == (120, 160) and inst.dtype == np.uint16
            np.testing.assert_array_equal(mask[..., 0], mask_from_instances(inst))
    # Files hold RGB images: the first training image equals its render, channel order and all.
    first = sorted((out / "train" / "original").iterdir())
    name = _image_name(5, 0, 0) + ".png"
    assert name in [p.name for p in first]
    image, inst = render_smear(_image_rng(5, 0, 0), 160, 120, "bbbc041")
    on_disk = cv2.cvtColor(cv2.imread(str(out / "train" / "original" / name)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(on_disk, image)
    assert not [p for p in tmp_path.iterdir() if p.name != "ds"], "temp folder left behind"


def test_same_seed_byte_identical_different_seed_differs(tmp_path):
    a = _files(write_dataset(tmp_path / "a", 3, 1, size=(128, 96), seed=7))
    b = _files(write_dataset(tmp_path / "b", 3, 1, size=(128, 96), seed=7))
    c = _files(write_dataset(tmp_path / "c", 3, 1, size=(128, 96), seed=8))
    assert a == b
    assert set(a) != set(c)
    assert sorted(a.values()) != sorted(c.values())


def test_per_image_rng_makes_subsets_reproducible(tmp_path):
    small = _files(write_dataset(tmp_path / "s", 2, 0, size=(128, 96), seed=3))
    large = _files(write_dataset(tmp_path / "l", 4, 0, size=(128, 96), seed=3))
    assert small.pop(DATASET_JSON) != large.pop(DATASET_JSON)  # records n_train
    assert small and all(large[k] == v for k, v in small.items())


def test_existing_output(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match=str(out)):
        write_dataset(out, 1, 0, size=(96, 96))
    assert (out / "keep.txt").read_text() == "x"
    write_dataset(out, 1, 0, size=(96, 96), overwrite=True)
    assert not (out / "keep.txt").exists() and len(list((out / "train" / "mask").iterdir())) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    write_dataset(empty, 1, 0, size=(96, 96))  # an empty folder is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "empty"]


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    real_imwrite = cv2.imwrite
    calls = {"n": 0}

    def flaky(path, array, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError("disk full (simulated)")
        return real_imwrite(path, array, *args)

    monkeypatch.setattr(writer.cv2, "imwrite", flaky)
    with pytest.raises(OSError, match="simulated"):
        write_dataset(tmp_path / "ds", 3, 1, size=(96, 96))
    assert list(tmp_path.iterdir()) == []

    # A failing overwrite keeps the previous dataset intact.
    monkeypatch.setattr(writer.cv2, "imwrite", real_imwrite)
    before = _files(write_dataset(tmp_path / "ds", 1, 0, size=(96, 96)))
    calls["n"] = 0
    monkeypatch.setattr(writer.cv2, "imwrite", flaky)
    with pytest.raises(OSError):
        write_dataset(tmp_path / "ds", 3, 1, size=(96, 96), seed=1, overwrite=True)
    assert _files(tmp_path / "ds") == before
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


BASE = {"n_train": 200, "n_test": 40}


def test_dataset_key_stable_with_defaults_filled_in():
    key = dataset_key(**BASE)
    assert key == dataset_key(**BASE)
    assert key.startswith("mixed-200x40-256x256-seed0-") and len(key.rsplit("-", 1)[1]) == 10
    explicit = dict(
        BASE,
        size=[256, 256],
        seed=0,
        style="mixed",
        cell_diameter_frac=None,
        native_aspect=4 / 3,
        overwrite=True,
    )  # overwrite does not change the files
    assert dataset_key(**explicit) == key
    assert cache_path("data/synthetic", **BASE) == Path("data/synthetic") / key
    assert dataset_params(**BASE)["size"] == [256, 256]


@pytest.mark.parametrize(
    "change",
    [
        {"n_train": 201},
        {"n_test": 41},
        {"size": (256, 192)},
        {"size": (192, 256)},
        {"seed": 1},
        {"style": "bccd"},
        {"cell_diameter_frac": 0.08},
        {"native_aspect": None},
        {"native_aspect": 1.0},
    ],
)
def test_dataset_key_changes_with_every_parameter(change):
    assert dataset_key(**dict(BASE, **change)) != dataset_key(**BASE)


def test_dataset_key_changes_with_generator_version(monkeypatch):
    before = dataset_key(**BASE)
    monkeypatch.setattr(writer, "GENERATOR_VERSION", GENERATOR_VERSION + 1)
    assert dataset_key(**BASE) != before
    monkeypatch.undo()
    assert dataset_key(**BASE) == before


def test_dataset_key_covers_every_write_dataset_argument():
    names = set(inspect.signature(write_dataset).parameters)
    # a new write_dataset argument must get a canonical type (and so enter the key)
    assert names == set(writer._CANONICAL) | set(writer._NOT_CONTENT)
    with pytest.raises(TypeError):
        dataset_key(**BASE, cell_diameter=0.1)  # typo: not silently ignored
    with pytest.raises(TypeError):
        dataset_key(n_train=1)  # n_test missing
    with pytest.raises(ValueError, match="mixed"):
        dataset_key(**BASE, style="../giemsa")


def test_dataset_json_records_parameters(tmp_path):
    args = {"n_train": 1, "n_test": 1, "size": (96, 64), "seed": 2, "native_aspect": None}
    out = write_dataset(cache_path(tmp_path, **args), **args)
    info = json.loads((out / DATASET_JSON).read_text())
    assert info["key"] == out.name == dataset_key(**args)
    assert info["generator_version"] == GENERATOR_VERSION
    assert info["params"] == dataset_params(**args)
    assert info["params"]["size"] == [96, 64] and info["params"]["native_aspect"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temp folder left


def test_gallery_needs_real_data(tmp_path):
    from bloodseg.report.gallery import make_gallery

    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        make_gallery(tmp_path / "g.png", real_root=missing)
    assert not (tmp_path / "g.png").exists()
