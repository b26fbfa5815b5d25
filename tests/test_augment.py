"""Augmentation (bloodseg.augment): image and labels stay aligned pixel by pixel, labels stay
label ids, photometric ops touch the image only, the conf/augment files build, ``flips`` repeats
the old ``transforms.random_flips`` draw, and torch's global RNG alone drives it all."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bloodseg.augment import COLOR_OPS, DEFAULTS, Augment, build_augment, flip_rotate

CONF = Path(__file__).resolve().parents[1] / "conf" / "augment"
PHOTOMETRIC = ("brightness", "contrast", "gamma", "saturation", "hue", "blur", "noise")
N_CELLS = 28


def spec(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))


def strong_geometry() -> dict:
    """conf/augment/strong.yaml with every photometric op off (and the small rotation on)."""
    return {**spec("strong"), **{f"{op}_p": 0.0 for op in PHOTOMETRIC}, "rotate_p": 0.5}


def cells(h: int, w: int, seed: int = 0, block: int = 1) -> np.ndarray:
    """HxW int32 labels: overlapping ellipses 1..N_CELLS on background 0, drawn at 1/block
    of the size and enlarged, so no feature is thinner than ``block`` px (when ``block``
    divides H and W)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((-(-h // block), -(-w // block)), np.int32)
    for i in range(1, N_CELLS + 1):
        center = (int(rng.integers(0, lab.shape[1])), int(rng.integers(0, lab.shape[0])))
        axes = (int(rng.integers(3, 12)) // block + 1, int(rng.integers(3, 12)) // block + 1)
        cv2.ellipse(lab, center, axes, float(rng.uniform(0, 180)), 0, 360, i, -1)
    return np.kron(lab, np.ones((block, block), np.int32))[:h, :w]


def code(lab: np.ndarray) -> np.ndarray:
    """The image value that encodes each label: 5 + 8 * id (background 5), distinct per id."""
    return (5 + 8 * lab).astype(np.uint8)


def encoded(lab: np.ndarray, channels: int) -> np.ndarray:
    """A uint8 image whose pixels spell the label: (code, 255 - code, code) or (code,)."""
    c = code(lab)
    return np.stack([c, 255 - c, c][:channels], axis=-1)


def decode(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((image[..., 0].astype(float) - 5) / 8), 0, None).astype(np.int32)


def near_border(lab: np.ndarray) -> np.ndarray:
    """Pixels with a different label among their 8 neighbours (the 1-px band at borders);
    the image frame counts as a border (beyond it a warp samples its fill)."""
    h, w = lab.shape
    padded = np.pad(lab, 1, constant_values=-1)
    band = np.zeros(lab.shape, bool)
    for dy in range(3):
        for dx in range(3):
            band |= padded[dy:dy + h, dx:dx + w] != lab
    return band


def assert_aligned(image: np.ndarray, lab: np.ndarray, exact: bool) -> None:
    """Every pixel's value still spells its label (interpolated ops: except at borders)."""
    want = encoded(lab, image.shape[2])
    wrong = (image != want).any(axis=2)
    if exact:
        assert not wrong.any(), f"{wrong.sum()} px no longer match their label"
    else:
        band = near_border(lab)
        stray = wrong & ~band
        assert not stray.any(), f"{stray.sum()} px off their label away from cell borders"
        assert band.mean() < 0.5                  # most pixels are checked exactly


def run(aug: Augment, image: np.ndarray, lab: np.ndarray, seed: int):
    torch.manual_seed(seed)
    return aug(image, lab)


GEOMETRIC = {  # name: (spec, exact)
    "hflip": ({"hflip_p": 1.0}, True),
    "vflip": ({"vflip_p": 1.0}, True),
    "rot90": ({"rot90_p": 1.0}, True),
    "zoom_out": ({"scale_p": 1.0, "scale": [0.85, 0.85]}, False),
    "zoom_in": ({"scale_p": 1.0, "scale": [1.15, 1.15]}, False),
    "scale_jitter": ({"scale_p": 1.0, "scale": [0.85, 1.15]}, False),
    "rotate": ({"rotate_p": 1.0, "rotate": [-10, 10]}, False),
    "strong_geometry": (strong_geometry(), False),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(66, 66), (48, 81)])   # multiples of 3: whole blocks
@pytest.mark.parametrize("name", GEOMETRIC)
def test_geometry_keeps_image_and_labels_aligned(name, hw, channels):
    params, exact = GEOMETRIC[name]
    aug = build_augment(params)
    # an interpolating warp samples labels nearest-neighbour: at a zoom out it may step over
    # a 1-px sliver that the bilinear image still blends in, so those cells are 3-px blocks
    lab = cells(*hw, block=1 if exact else 3)
    image = encoded(lab, channels)
    changed = 0
    for seed in range(8):
        out, out_lab = run(aug, image, lab, seed)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert out_lab.shape == lab.shape and out_lab.dtype == np.int32
        assert set(np.unique(out_lab)) <= set(np.unique(lab)), "a new label id appeared"
        assert_aligned(out, out_lab, exact)
        changed += not np.array_equal(out_lab, lab)
    assert changed >= 4, f"{name} left the labels unchanged in {8 - changed} of 8 draws"


@pytest.mark.parametrize("hw", [(64, 64), (48, 80)])
def test_rot90_is_an_exact_quarter_turn(hw):
    aug = build_augment({"rot90_p": 1.0})
    lab = cells(*hw)
    image = encoded(lab, 3)
    seen = set()
    for seed in range(12):
        out, out_lab = run(aug, image, lab, seed)
        ks = [k for k in (1, 2, 3) if np.array_equal(out_lab, np.rot90(lab, k))]
        assert ks and np.array_equal(out, np.rot90(image, ks[0]))
        seen.add(ks[0])
    # square: every quarter turn occurs; non-square: only 180 degrees keeps H x W
    assert seen == ({1, 2, 3} if hw[0] == hw[1] else {2})


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("hw", [(64, 64), (48, 80)])
def test_flips_and_quarter_turns_inside_a_warp_stay_exact(hw, channels):
    """With a zoom drawn, flips and quarter turns join the one warp: at zoom 1 it must give
    exactly the views."""
    params = {**spec("strong"), **{f"{op}_p": 0.0 for op in PHOTOMETRIC},
              "scale_p": 1.0, "scale": [1.0, 1.0]}
    aug = build_augment(params)
    lab = cells(*hw)
    image = encoded(lab, channels)
    for seed in range(16):
        torch.manual_seed(seed)
        want, want_lab = flip_rotate(image, lab, aug.draw(rgb=channels == 3))
        out, out_lab = run(aug, image, lab, seed)
        assert np.array_equal(out, want) and np.array_equal(out_lab, want_lab)


def test_zoom_out_pads_with_background_and_zoom_in_crops_the_centre():
    lab = cells(64, 64)
    image = encoded(lab, 3)
    out, out_lab = run(build_augment({"scale_p": 1.0, "scale": [0.8, 0.8]}), image, lab, 0)
    border = np.ones(lab.shape, bool)
    border[5:-5, 5:-5] = False                    # 0.8x of 64 px leaves ~6 px on each side
    assert (out_lab[border] == 0).all()
    assert (out[border] == encoded(np.zeros(1, np.int32), 3)).all()   # background colour
    out, out_lab = run(build_augment({"scale_p": 1.0, "scale": [1.25, 1.25]}), image, lab, 0)
    src = np.rint((np.arange(64) - 31.5) / 1.25 + 31.5).astype(int)  # centre pixel i <- src[i]
    assert (out_lab == lab[np.ix_(src, src)]).mean() > 0.99              # ties may round apart


def test_labels_are_never_blended():
    """Ids 1 and 1000 side by side: interpolation would invent ids in between."""
    lab = np.zeros((40, 40), np.int32)
    lab[:, 10:20], lab[:, 20:30] = 1, 1000
    image = np.full((40, 40, 3), 128, np.uint8)
    params = {"scale_p": 1.0, "scale": [0.7, 1.3], "rotate_p": 1.0, "rotate": [-30, 30]}
    aug = build_augment(params)
    for seed in range(10):
        _, out_lab = run(aug, image, lab, seed)
        assert set(np.unique(out_lab)) <= {0, 1, 1000}


@pytest.mark.parametrize("channels", [1, 3])
def test_strong_keeps_types_shapes_and_ids(channels):
    aug = build_augment(spec("strong"))
    lab = cells(72, 96)
    image = encoded(lab, channels)
    before = image.copy(), lab.copy()
    for seed in range(20):
        out, out_lab = run(aug, image, lab, seed)
        assert out.shape == image.shape and out.dtype == np.uint8
        assert out_lab.shape == lab.shape and out_lab.dtype == np.int32
        assert set(np.unique(out_lab)) <= set(np.unique(lab))
    assert np.array_equal(image, before[0]) and np.array_equal(lab, before[1]), "inputs mutated"


def test_gray_without_channel_axis_and_other_label_dtypes():
    lab = cells(64, 64).astype(np.uint16)
    image = code(lab)                                                   # HxW
    out, out_lab = run(build_augment(strong_geometry()), image, lab, 3)
    assert out.shape == image.shape and out_lab.dtype == np.uint16
    lab64 = lab.astype(np.int64)
    _, out_lab = run(build_augment({"scale_p": 1.0}), image, lab64, 3)
    assert out_lab.dtype == np.int64


@pytest.mark.parametrize("name", ["none", None])
def test_none_is_no_augmentation(name):
    params = None if name is None else spec(name)
    assert build_augment(params) is None
    assert build_augment({"hflip_p": 0.0, "scale_p": 0.0, "noise": [0.1, 0.2]}) is None


def random_flips() -> tuple[bool, bool]:
    """The study's flips as the dataset drew them before the augment group (the reference)."""
    h, v = (torch.rand(2) < 0.5).tolist()
    return h, v


def flip(array: np.ndarray, horizontal: bool, vertical: bool) -> np.ndarray:
    if horizontal:
        array = array[:, ::-1]
    if vertical:
        array = array[::-1]
    return array


def test_flips_repeats_the_old_random_flips():
    aug = build_augment(spec("flips"))
    lab = cells(48, 80)
    image = encoded(lab, 1)
    for seed in range(10):
        torch.manual_seed(seed)
        old = []
        for _ in range(6):                  # consecutive draws stay in step too
            h, v = random_flips()
            old.append((flip(image, h, v), flip(lab, h, v)))
        old_state = torch.get_rng_state()
        torch.manual_seed(seed)
        for want_image, want_lab in old:
            out, out_lab = aug(image, lab)
            assert np.array_equal(out, want_image) and np.array_equal(out_lab, want_lab)
        assert torch.equal(torch.get_rng_state(), old_state), "a different amount was drawn"


PHOTO_CASES = {
    "brightness": [1.3, 1.3], "contrast": [0.5, 0.5], "gamma": [1.5, 1.5],
    "saturation": [0.3, 0.3], "hue": [25, 25], "blur": [1.0, 1.0], "noise": [0.05, 0.05],
}


@pytest.mark.parametrize("op", PHOTO_CASES)
@pytest.mark.parametrize("channels", [1, 3])
def test_photometric_ops_change_the_image_only(op, channels):
    aug = build_augment({f"{op}_p": 1.0, op: PHOTO_CASES[op]})
    lab = cells(64, 64)
    image = encoded(lab, channels)
    out, out_lab = run(aug, image, lab, 0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out_lab, lab)
    if channels == 1 and op in COLOR_OPS:
        assert np.array_equal(out, image)                # gray: hue/saturation skipped
    else:
        assert np.abs(out.astype(int) - image).mean() > 1.0


def test_photometric_ops_do_what_they_say():
    image = np.full((16, 16, 3), (200, 100, 50), np.uint8)
    lab = np.zeros((16, 16), np.int32)

    def one(op, value):
        return run(build_augment({f"{op}_p": 1.0, op: [value, value]}), image, lab, 0)[0]

    assert (one("brightness", 1.2)[0, 0] == (240, 120, 60)).all()
    gray = one("saturation", 0.0)[0, 0].astype(int)
    assert np.ptp(gray) <= 1 and abs(gray[0] - (0.299 * 200 + 0.587 * 100 + 0.114 * 50)) <= 1
    hue = one("hue", 120.0)[0, 0].astype(int)
    assert np.argmax(hue) != 0                           # red turned into another colour
    flat = one("contrast", 0.0)[0, 0].astype(int)        # contrast 0: the mean gray level
    assert np.ptp(flat) == 0
    assert (one("gamma", 2.0)[0, 0] < image[0, 0]).all()
    assert (one("blur", 1.0) == image).all()             # a flat image stays flat


def test_same_seed_same_result_and_numpy_rng_untouched():
    aug = build_augment(spec("strong"))
    lab = cells(64, 64)
    image = encoded(lab, 3)
    np.random.seed(123)
    state = np.random.get_state()
    a = run(aug, image, lab, 7)
    b = run(aug, image, lab, 7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, run(aug, image, lab, 8)))
    after = np.random.get_state()
    assert state[0] == after[0] and np.array_equal(state[1], after[1]) and state[2:] == after[2:]


@pytest.mark.parametrize("bad", [
    {"hflip": 0.5}, {"scale_p": 1.5}, {"scale": [1.2, 0.8]}, {"scale": [0.0, 1.0]},
    {"blur": [0.0, 1.0]}, {"noise": 0.1}, {"noise": [0.0, 2.0]}, {"brightness": [-0.1, 1.0]},
])
def test_bad_specs_are_refused(bad):
    with pytest.raises(ValueError, match="augment"):
        build_augment(bad)


def test_bad_inputs_are_refused():
    aug = build_augment({"hflip_p": 1.0})
    with pytest.raises(TypeError):
        aug(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.int32))
    with pytest.raises(ValueError):
        aug(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 9), np.int32))
    with pytest.raises(ValueError):
        aug(np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.int32))


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_group_files_build_and_comment_every_key(path):
    params = spec(path.stem)
    assert set(params) <= set(DEFAULTS)
    aug = build_augment(OmegaConf.load(path))       # as Hydra hands it over: a DictConfig
    assert (aug is None) == (path.stem == "none")
    assert aug is None or aug.params == build_augment(params).params
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and ":" in line:
            assert "#" in line, f"{path.name}: no comment on {line!r}"
    if path.stem == "flips":
        assert params == {"hflip_p": 0.5, "vflip_p": 0.5}
    if path.stem == "strong":
        assert {"hflip", "vflip", "rot90", "scale", "brightness", "contrast", "gamma",
                "saturation", "hue", "blur", "noise"} <= {k[:-2] for k in params
                                                           if k.endswith("_p") and params[k]}
