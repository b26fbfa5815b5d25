"""Pixel transforms shared by training, evaluation and prediction: one normalization.

Images enter the networks as float CxHxW normalized with ImageNet statistics (the VGG
encoders' pre-training; gray uses their luminance mean), whoever feeds them: the
DataModule, ``bloodseg-predict`` or a notebook.

    >>> x = normalize(image_uint8, "gray")       # HxW or HxWxC uint8 -> float32 CxHxW
    >>> rgb = denormalize(batch["image"][0])     # back to HxWx3 uint8 for pictures
    >>> maps = upsample(outputs, (1200, 1600))   # (C, h, w) maps -> native size
    >>> img = adjust_contrast(img, "percentile") # pale and dark smears alike
    >>> small = prepare_image(img, "gray", "percentile", (600, 800))  # the network's view
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # torch loads only where a network runs (start-up)
    import torch

MEAN = {"rgb": (0.485, 0.456, 0.406), "gray": (0.449,)}
STD = {"rgb": (0.229, 0.224, 0.225), "gray": (0.226,)}
COLORS = tuple(MEAN)


def channels(color: str) -> int:
    """Number of input channels for ``color`` (used by the configs' ``${channels:...}``)."""
    if color not in MEAN:
        raise ValueError(f"data.color must be 'gray' or 'rgb', got {color!r}")
    return len(MEAN[color])


def to_color(image: np.ndarray, color: str) -> np.ndarray:
    """An RGB or gray uint8 image as ``color`` (HxW for gray, HxWx3 for rgb)."""
    channels(color)
    if color == "gray" and image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if color == "rgb" and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return image


def normalize(image: np.ndarray, color: str) -> np.ndarray:
    """HxW / HxWxC uint8 (already in ``color``) -> normalized float32 CxHxW."""
    img = image[:, :, None] if image.ndim == 2 else image
    mean = np.asarray(MEAN[color], np.float32)
    std = np.asarray(STD[color], np.float32)
    return ((img.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)


def denormalize(image: torch.Tensor) -> np.ndarray:
    """A normalized CxHxW tensor back to the HxWx3 uint8 (RGB) image it came from."""
    color = "gray" if image.shape[0] == 1 else "rgb"
    import torch

    mean = torch.tensor(MEAN[color]).view(-1, 1, 1)
    std = torch.tensor(STD[color]).view(-1, 1, 1)
    x = (image.detach().float().cpu() * std + mean).clamp(0, 1) * 255
    out = x.round().byte().permute(1, 2, 0).numpy()
    return cv2.cvtColor(out[:, :, 0], cv2.COLOR_GRAY2RGB) if color == "gray" else out.copy()


def upsample(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(C, h, w) probability maps -> (C, H, W), bilinear (the native scoring size)."""
    if maps.shape[1:] == tuple(shape):
        return maps
    hwc = cv2.resize(np.ascontiguousarray(maps.transpose(1, 2, 0)), (shape[1], shape[0]),
                     interpolation=cv2.INTER_LINEAR)
    return (hwc[:, :, None] if hwc.ndim == 2 else hwc).transpose(2, 0, 1)


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An int32 label map resized to ``shape`` (H, W), nearest with pixel centres aligned as
    :func:`upsample` aligns them (``INTER_NEAREST`` would shift by half a pixel)."""
    if labels.shape == tuple(shape):
        return labels
    return cv2.resize(labels.astype(np.int32, copy=False), (shape[1], shape[0]),
                      interpolation=cv2.INTER_NEAREST_EXACT)


def stretch_contrast(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Per-image, per-channel percentile stretch of a uint8 image to the full 0..255 range.

    Smears differ in stain strength and exposure (a pale, low-contrast smear looks nothing
    like a dark one to a network that saw few of them); the percentile normalization of
    StarDist/Cellpose maps every image to one range first. Written with numpy because
    OpenCV's normalize uses min/max, which one speck of dust sets.
    """
    img = image[:, :, None] if image.ndim == 2 else image
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        lo, hi = np.percentile(img[:, :, c], (low, high))
        scale = 255.0 / max(float(hi - lo), 1.0)
        lut = np.clip((np.arange(256, dtype=np.float32) - lo) * scale, 0, 255)
        out[:, :, c] = lut.round().astype(np.uint8)[img[:, :, c]]
    return out[:, :, 0] if image.ndim == 2 else out


CONTRAST = {"none": None, "percentile": stretch_contrast}


def adjust_contrast(image: np.ndarray, mode: str | None) -> np.ndarray:
    """``mode``: ``none`` (as read) or ``percentile`` (:func:`stretch_contrast`)."""
    if mode in (None, "none"):
        return image
    if mode not in CONTRAST:
        raise ValueError(f"data.contrast must be one of {', '.join(CONTRAST)}, got {mode!r}")
    return CONTRAST[mode](image)


def scaled_hw(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """``hw`` shrunk (or grown) by ``scale``, each side at least 1 px."""
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def prepare_image(image: np.ndarray, color: str, contrast: str | None,
                  size_hw: tuple[int, int]) -> np.ndarray:
    """An RGB or gray uint8 image as a network sees it, before :func:`normalize`: in ``color``,
    contrast adjusted on the whole image, then resized to ``size_hw`` (INTER_AREA, the
    antialiasing choice when shrinking). Training data and every inference path go through
    this one function, so a model sees the same pixels in training and in use."""
    image = adjust_contrast(to_color(image, color), contrast)
    if image.shape[:2] != tuple(size_hw):
        interp = cv2.INTER_AREA if size_hw[0] < image.shape[0] else cv2.INTER_LINEAR
        image = cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=interp)
    return image
