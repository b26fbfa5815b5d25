"""Training augmentation: one random draw moves an image and its instance labels together.

Library: OpenCV (already our pixel library), 7x faster per sample than torchvision.v2 on a CPU.

    >>> aug = build_augment(cfg.augment)        # a conf/augment/*.yaml dict; None = no augment
    >>> image, instances = aug(image, instances) # HxWxC uint8, HxW int labels -> same types

``conf/augment/``: ``none`` (nothing), ``flips`` (the study's random horizontal/vertical flips),
``strong`` (flips, rot90, scale jitter and photometric ops for smears that vary in stain,
brightness, focus and orientation). Every key of :data:`DEFAULTS` may be set; ``<op>_p`` is the
probability of an op and ``<op>`` its ``[low, high]`` range, drawn uniformly.

* Geometric ops move image and labels: flips and quarter turns alone are exact numpy views.
  Scale jitter and the small-angle rotation are one affine warp about the image centre (flips
  and quarter turns drawn with them join the same warp), bilinear for the image and
  nearest-neighbour for the labels, so label ids never blend and no new id appears. The output
  keeps the input's height and width: zooming in crops the centre; zooming out (or rotating)
  fills the uncovered border with label 0 and the image's background colour (the mean of its
  label-0 pixels), not reflections, which would copy cells without their labels. A non-square
  image turns by 180 degrees only (90 would swap H and W).
* Photometric ops change the image only: brightness, contrast and gamma as one 256-entry
  lookup table; saturation and hue as one 3x3 colour matrix in YIQ space (RGB only, skipped
  for gray); Gaussian blur (focus); additive Gaussian noise (std as a fraction of 255), added
  after any warp so that interpolation does not smooth it.
* Randomness: torch's global RNG only (``seed_everything(workers=True)`` and checkpointed RNG
  states make runs repeatable; numpy's global RNG is never touched). Each call draws
  ``torch.rand(2)`` for the flips first (as the dataset did before this module, so ``flips``
  repeats the study's flips exactly), then one ``torch.rand(2 * n)`` for the n other enabled
  ops (apply?, value) in the order of :data:`DEFAULTS`, then the noise itself.

Cost on one CPU core, 384x384 RGB: ``strong`` 2.3 ms per sample on average (every op at once
5.5 ms; flips 0.01 ms); the same ops with torchvision.transforms.v2's tensor kernels take
~15 ms (its affine warp of image + mask 9.6 ms vs 1.9 here, hue 11-20 ms vs 0.15, blur 5-10 ms
vs 0.3). Albumentations would be as fast (it is OpenCV too) but draws from numpy's RNG, and
its maintained successor is AGPL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import torch

# every key build_augment understands, with its default; all ops default to off (p = 0)
DEFAULTS: dict[str, Any] = {
    "hflip_p": 0.0, "vflip_p": 0.0,           # left-right / up-down flip
    "rot90_p": 0.0,                           # rotate by k*90 degrees, k uniform in {1, 2, 3}
    "scale_p": 0.0, "scale": (0.85, 1.15),    # zoom factor (>1 zooms in)
    "rotate_p": 0.0, "rotate": (-10.0, 10.0),  # small rotation, degrees (counter-clockwise)
    "brightness_p": 0.0, "brightness": (0.8, 1.2),  # multiply intensities
    "contrast_p": 0.0, "contrast": (0.8, 1.2),  # blend with the mean gray level
    "gamma_p": 0.0, "gamma": (0.8, 1.25),     # x -> x ** gamma on [0, 1]
    "saturation_p": 0.0, "saturation": (0.7, 1.3),  # 0 = gray (RGB only)
    "hue_p": 0.0, "hue": (-10.0, 10.0),       # hue rotation, degrees (RGB only)
    "blur_p": 0.0, "blur": (0.3, 1.2),        # Gaussian sigma, px
    "noise_p": 0.0, "noise": (0.0, 0.03),     # additive Gaussian std, fraction of 255
}
RANDOM_OPS = tuple(k for k in DEFAULTS if k.endswith("_p") and not k.endswith("flip_p"))
COLOR_OPS = ("saturation", "hue")
# the values each range may take
_BOUNDS = {"scale": (1e-3, 10.0), "rotate": (-180.0, 180.0), "brightness": (0.0, 10.0),
           "contrast": (0.0, 10.0), "gamma": (1e-3, 10.0), "saturation": (0.0, 10.0),
           "hue": (-180.0, 180.0), "blur": (1e-3, 20.0), "noise": (0.0, 1.0)}

_RGB2YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = np.linalg.inv(_RGB2YIQ)


def build_augment(spec: Mapping | None) -> Augment | None:
    """An :class:`Augment` from a ``conf/augment`` dict, or None when it enables nothing."""
    if spec is None:
        return None
    spec = dict(spec)
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown augment key(s) {unknown}; valid: {', '.join(DEFAULTS)}")
    params: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        value = spec.get(key, default)
        if key.endswith("_p"):
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"augment.{key} is a probability in [0, 1], got {value}")
        else:
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ValueError(f"augment.{key} must be [low, high], got {value!r}") from None
            low, high = _BOUNDS[key]
            if not low <= lo <= hi <= high:
                raise ValueError(f"augment.{key} needs {low:g} <= low <= high <= {high:g}, "
                                 f"got {[lo, hi]}")
            value = (lo, hi)
        params[key] = value
    aug = Augment(params)
    return aug if aug.enabled else None


class Augment:
    """``image, instances = aug(image, instances)``; build it with :func:`build_augment`."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = {**DEFAULTS, **params}
        self.flips = (self.params["hflip_p"], self.params["vflip_p"])
        self.ops = [k[:-2] for k in RANDOM_OPS if self.params[k] > 0]

    @property
    def enabled(self) -> bool:
        return any(self.flips) or bool(self.ops)

    def __repr__(self) -> str:
        on = [f"{k}={v}" for k, v in self.params.items()
              if self.params[k if k.endswith("_p") else k + "_p"] > 0]
        return f"Augment({', '.join(on)})"

    def __call__(self, image: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """HxWxC (or HxW) uint8 image, HxW integer labels -> the same shapes and dtypes.

        Outputs may share memory with the inputs (flips are views): do not write into them.
        """
        if image.dtype != np.uint8:
            raise TypeError(f"augment needs a uint8 image, got {image.dtype}")
        if image.ndim not in (2, 3) or image.ndim == 3 and image.shape[2] not in (1, 3):
            raise ValueError(f"augment needs an HxW, HxWx1 or HxWx3 image, got {image.shape}")
        if image.shape[:2] != instances.shape or instances.ndim != 2:
            raise ValueError(f"image {image.shape} and instances {instances.shape} differ in size")
        channel_axis = image.ndim == 3 and image.shape[2] == 1
        img = image[:, :, 0] if channel_axis else image   # OpenCV drops a size-1 channel axis
        draw = self.draw(rgb=img.ndim == 3)
        if not draw:
            return image, instances
        # pointwise ops and blur commute with flips and quarter turns: run them first, on the
        # contiguous input; then one warp (or free views) moves image and labels together
        img = photometric(img, draw)
        if "scale" in draw or "rotate" in draw:
            img, lab = warp(img, instances, geometry(instances.shape, draw))
            img = add_noise(img, draw.get("noise"))   # after the warp, which would smooth it
        else:
            img = add_noise(img, draw.get("noise"))
            img, lab = flip_rotate(img, instances, draw)
        return (img[:, :, None] if channel_axis else img), lab

    def draw(self, rgb: bool = True) -> dict[str, float]:
        """This call's random ops and values, from torch's global RNG in a fixed order: the
        flips' ``torch.rand(2)`` first, then (apply?, value) pairs for the other enabled ops;
        hue and saturation only for ``rgb``."""
        out: dict[str, float] = {}
        if any(self.flips):
            u = torch.rand(2).tolist()  # the draw of transforms.random_flips
            out.update({op: 1.0 for op, p, v in zip(("hflip", "vflip"), self.flips, u) if v < p})
        ops = [op for op in self.ops if rgb or op not in COLOR_OPS]
        if ops:
            u = torch.rand(2 * len(ops)).tolist()
            out.update({op: self._value(op, u[2 * i + 1])
                        for i, op in enumerate(ops) if u[2 * i] < self.params[op + "_p"]})
        return out

    def _value(self, op: str, u: float) -> float:
        if op == "rot90":
            return 1 + min(int(u * 3), 2)   # quarter turns
        lo, hi = self.params[op]
        return lo + (hi - lo) * u


def quarter_turns(hw: tuple[int, int], draw: Mapping[str, float]) -> int:
    """Quarter turns to make: 0-3 on a square image, 0 or 2 otherwise (keeps H and W)."""
    k = int(draw.get("rot90", 0))
    return k if hw[0] == hw[1] or k == 0 else 2


def flip_rotate(img: np.ndarray, lab: np.ndarray, draw: Mapping[str, float]):
    """Exact flips and quarter turns as views (horizontal flip first, as transforms.flip)."""
    if "hflip" in draw:
        img, lab = img[:, ::-1], lab[:, ::-1]
    if "vflip" in draw:
        img, lab = img[::-1], lab[::-1]
    k = quarter_turns(lab.shape, draw)
    return (np.rot90(img, k), np.rot90(lab, k)) if k else (img, lab)


def geometry(hw: tuple[int, int], draw: Mapping[str, float]) -> np.ndarray:
    """The 2x3 map of :func:`flip_rotate` followed by zoom and rotation about the centre."""
    h, w = hw
    m = np.eye(3)
    if "hflip" in draw:
        m = np.array([[-1.0, 0, w - 1], [0, 1, 0], [0, 0, 1]]) @ m
    if "vflip" in draw:
        m = np.array([[1.0, 0, 0], [0, -1, h - 1], [0, 0, 1]]) @ m
    for _ in range(quarter_turns(hw, draw)):    # np.rot90: (x, y) -> (y, w - 1 - x)
        m = np.array([[0.0, 1, 0], [-1, 0, w - 1], [0, 0, 1]]) @ m
        h, w = w, h
    zoom = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), draw.get("rotate", 0.0),
                                   draw.get("scale", 1.0))
    return zoom @ m


def warp(img: np.ndarray, lab: np.ndarray, matrix: np.ndarray):
    """Apply a 2x3 affine ``matrix`` (source -> output px), keeping H and W: the image
    bilinear, the labels nearest-neighbour; uncovered pixels get label 0 and the image's
    background colour (mean of its label-0 pixels)."""
    h, w = lab.shape
    img, lab = np.ascontiguousarray(img), np.ascontiguousarray(lab)
    sub, sub_lab = img[::4, ::4], lab[::4, ::4]   # a sparse sample is enough for a mean
    bg = sub[sub_lab == 0] if (sub_lab == 0).any() else sub.reshape(-1, *img.shape[2:])
    fill = np.atleast_1d(bg.mean(axis=0)).tolist()
    img = cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    dtype = lab.dtype
    if dtype not in (np.int32, np.uint16, np.int16, np.uint8):  # OpenCV's label types
        lab = lab.astype(np.int32)
    lab = cv2.warpAffine(lab, matrix, (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return img, lab.astype(dtype, copy=False)


def photometric(img: np.ndarray, draw: Mapping[str, float]) -> np.ndarray:
    """Tone table, colour matrix and blur of ``draw`` (those present) on a uint8 image."""
    if not {"brightness", "contrast", "gamma", "saturation", "hue", "blur"} & draw.keys():
        return img
    img = np.ascontiguousarray(img)
    if {"brightness", "contrast", "gamma"} & draw.keys():
        img = cv2.LUT(img, tone_table(img, draw.get("brightness", 1.0),
                                      draw.get("contrast", 1.0), draw.get("gamma", 1.0)))
    if "saturation" in draw or "hue" in draw:
        img = cv2.transform(img, color_matrix(draw.get("saturation", 1.0), draw.get("hue", 0.0)))
    if "blur" in draw:
        img = cv2.GaussianBlur(img, (0, 0), draw["blur"], borderType=cv2.BORDER_REFLECT_101)
    return img


def add_noise(img: np.ndarray, std: float | None) -> np.ndarray:
    """Add Gaussian noise of ``std`` (fraction of 255) from torch's RNG; None: unchanged."""
    if std is None:
        return img
    noise = torch.randn(img.shape).mul_(std * 255.0).round_().to(torch.int16)
    out = noise.add_(torch.from_numpy(np.ascontiguousarray(img)))
    return out.clamp_(0, 255).to(torch.uint8).numpy()


def tone_table(img: np.ndarray, brightness: float, contrast: float, gamma: float) -> np.ndarray:
    """uint8 lookup table: multiply by ``brightness``, blend with the mean gray level by
    ``contrast`` (as torchvision's ``adjust_contrast``), then ``x ** gamma``; clipped."""
    x = np.arange(256, dtype=np.float64) / 255.0
    x = np.clip(x * brightness, 0.0, 1.0)
    if contrast != 1.0:
        means = cv2.mean(img)
        gray = float(np.dot(_RGB2YIQ[0], means[:3])) if img.ndim == 3 else means[0]
        mean = min(gray / 255.0 * brightness, 1.0)
        x = np.clip(contrast * x + (1.0 - contrast) * mean, 0.0, 1.0)
    x = x ** gamma
    return np.rint(x * 255.0).astype(np.uint8)


def color_matrix(saturation: float, hue: float) -> np.ndarray:
    """3x3 RGB matrix scaling chroma by ``saturation`` and rotating hue by ``hue`` degrees
    (the YIQ rotation NVIDIA DALI's ``hsv`` uses; luma is kept)."""
    c, s = np.cos(np.deg2rad(hue)), np.sin(np.deg2rad(hue))
    yiq = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]) * [[1.0], [saturation],
                                                                    [saturation]]
    return (_YIQ2RGB @ yiq @ _RGB2YIQ).astype(np.float32)
