"""``target=binary``: the study's target, one foreground channel (cell or not).

Separation of touching cells is left to the post-processing (``postprocess=binary``:
:class:`bloodseg.postprocess.Watershed`, a distance-transform watershed of the foreground).
``weight_map=unet`` weights its BCE pixel by pixel with the U-Net paper's map, heavy on the
narrow gaps between cells:

    >>> weight = unet_weight_map(inst, w0=10, sigma=5)   # float32 HxW per-pixel loss weights
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import cv2
import numpy as np

from bloodseg.targets.base import Target, as_labels, boxes

if TYPE_CHECKING:  # torch loads only where a network runs (start-up)
    import torch

__all__ = ["Binary", "unet_weight_map"]

# unet_weight_map ignores cells further than this many sigmas from a pixel: the border term
# it drops is below w0 * exp(-8) = 3.4e-4 * w0.
_WEIGHT_CUTOFF_SIGMAS = 4.0
#: the loss of ``weight_map=unet``: BCE that takes the per-pixel weights
WEIGHTED_LOSS = {"_target_": "bloodseg.losses.WeightedBCELoss"}


@dataclass(frozen=True)
class Binary(Target):
    """One sigmoid foreground channel; trained with ``loss=binary`` (BCE, the study's).

    ``weight_map``: ``None`` or ``"unet"``, the U-Net paper's pixel-weighted BCE (w0, sigma
    in px: :func:`unet_weight_map`), which replaces the configured loss.
    """

    name: ClassVar[str] = "binary"
    channels: ClassVar[int] = 1
    channel_names: ClassVar[tuple[str, ...]] = ("foreground",)

    weight_map: Literal["unet"] | None = None
    w0: float = 10.0
    sigma: float = 5.0

    def __post_init__(self) -> None:
        if self.weight_map not in (None, "unet"):
            raise ValueError(f"target.weight_map must be null or 'unet', got {self.weight_map!r}")

    def encode(self, instances: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """``{"target": float32 1xHxW mask}``, + ``"weight"`` (1xHxW) with ``weight_map``."""
        out = {"target": mask.astype(np.float32)[None]}
        if self.weight_map == "unet":
            weight = unet_weight_map(instances, w0=self.w0, sigma=self.sigma)
            out["weight"] = weight.astype(np.float32)[None]
        return out

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """Sigmoid of the foreground logit."""
        import torch

        return torch.sigmoid(logits.float())

    def foreground(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs[:, :1]

    def training_loss(self, configured: str | dict | None) -> str | dict | None:
        # the weight map weights BCE pixel by pixel: it replaces whatever loss was chosen
        if self.weight_map == "unet":
            return dict(WEIGHTED_LOSS)
        return super().training_loss(configured)


def unet_weight_map(
    inst: np.ndarray, w0: float = 10.0, sigma: float = 5.0, class_balance: bool = True
) -> np.ndarray:
    """Per-pixel loss weights of the U-Net paper (Ronneberger et al. 2015, eq. 2), float32 HxW.

    ``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))^2 / (2 sigma^2))`` on background pixels and
    ``w(x) = w_c(x)`` on cell pixels, where ``d1`` / ``d2`` are the Euclidean distances (px,
    between pixel centres) to the nearest and second-nearest cell: large in the narrow gaps
    between touching cells, so the loss insists on them. Cells further than
    ``4 sigma`` from a pixel are ignored (a change below ``3.4e-4 * w0``), which keeps this to
    one small EDT per cell.

    ``w_c``: with ``class_balance``, ``N / (K * N_c)`` for a pixel of class ``c`` (cell or
    background) with ``N_c`` pixels, ``N`` pixels in all and ``K`` classes present, so both
    classes carry the same total weight and ``w_c`` averages 1; an image with one class only
    (e.g. no cells) gets ``w_c = 1``. Without ``class_balance``, ``w_c = 1``.
    """
    lab = as_labels(inst)
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    fg = lab > 0
    n_fg = int(np.count_nonzero(fg))
    n = lab.size
    out = np.ones(lab.shape, np.float32)
    if class_balance and 0 < n_fg < n:
        out[fg] = n / (2.0 * n_fg)
        out[~fg] = n / (2.0 * (n - n_fg))
    if n_fg == 0 or w0 == 0:
        return out
    reach = int(math.ceil(_WEIGHT_CUTOFF_SIGMAS * sigma))
    d1 = np.full(lab.shape, np.inf, np.float32)
    d2 = np.full(lab.shape, np.inf, np.float32)
    for k, box in boxes(lab, pad=reach):
        notk = (lab[box] != k).view(np.uint8)
        d = cv2.distanceTransform(notk, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        b1, b2 = d1[box], d2[box]
        np.minimum(b2, np.maximum(b1, d), out=b2)  # keep the two smallest per pixel
        np.minimum(b1, d, out=b1)
    near = ~fg & np.isfinite(d2)
    s = d1[near] + d2[near]
    out[near] += np.float32(w0) * np.exp(-(s * s) / np.float32(2.0 * sigma * sigma))
    return out
