"""The target contract: what a network learns from instance labels, and how its outputs read.

A target is one class in one module, ``bloodseg/targets/<name>.py``, registered by one config,
``conf/target/<name>.yaml`` (the name users type: ``target=<name>``). The class holds all of
it, as Cellpose keeps a representation's encoding and decoding together:

- ``channels`` / ``channel_names``: the network's output channels (the module sets the
  network's ``classes`` from them);
- its fields: typed dataclass fields, spelled out with their defaults in its config (the spec
  type-checks them against these annotations when a model file is read);
- :meth:`Target.encode`: instance labels (+ the gap-drawn mask) -> the training arrays;
- :meth:`Target.decode`: logits -> probability maps; :meth:`Target.foreground`: their
  foreground probability (pixel metrics, mask files);
- :meth:`Target.training_loss`: which loss config it trains with (the configured one, unless
  the target replaces it);
- its default loss and post-processor: ``conf/loss/<name>.yaml`` and
  ``conf/postprocess/<name>.yaml``. ``conf/train.yaml`` picks both by the target's name
  (``loss: ${target}``, ``postprocess: ${target}`` in its defaults list), so a default
  cannot be named anything else; :attr:`Target.default_loss` and
  :attr:`Target.default_postprocess` say the same to code that runs without Hydra.

The label helpers the encoders share are here too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:  # torch loads only where a network runs (start-up)
    import torch

__all__ = ["Target"]


class Target:
    """Base of every target; subclasses are frozen dataclasses whose fields are its settings.

    Subclasses set ``name`` (= their module's and config's name), ``channels`` and
    ``channel_names``, and implement :meth:`encode`, :meth:`decode` and :meth:`foreground`.
    """

    name: ClassVar[str]
    channels: ClassVar[int]
    channel_names: ClassVar[tuple[str, ...]]  # what each output channel is, in order
    #: every target class by name (a class registers itself when its module is imported)
    registry: ClassVar[dict[str, type[Target]]] = {}

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if len(cls.channel_names) != cls.channels:
            raise TypeError(f"{cls.__name__}: {cls.channels} channels but channel_names "
                            f"{cls.channel_names}")
        Target.registry[cls.name] = cls

    @property
    def fields(self) -> dict:
        """Its settings (the dataclass fields), as a config or a model file writes them."""
        import dataclasses

        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict:
        """What a model spec stores: the name, the channel count and the fields."""
        return {"name": self.name, "channels": self.channels, **self.fields}

    @property
    def default_loss(self) -> str:
        """The ``conf/loss`` name this target trains with unless told otherwise."""
        return self.name

    @property
    def default_postprocess(self) -> str:
        """The ``conf/postprocess`` name its outputs go through unless told otherwise."""
        return self.name

    def encode(self, instances: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """The training arrays of one item: ``{"target": ...}`` (what the loss compares the
        logits with) and, for pixel-weighted losses, ``"weight"`` (float32, 1xHxW).

        ``instances``: int32 HxW labels (0 = background), already cropped and augmented;
        ``mask``: uint8 HxW foreground with the 1-px gaps drawn between touching cells.
        """
        raise NotImplementedError

    def decode(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, channels, H, W) logits -> float32 probability maps of the same shape."""
        raise NotImplementedError

    def foreground(self, outputs: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) foreground probability of decoded outputs."""
        raise NotImplementedError

    def training_loss(self, configured: str | dict | None) -> str | dict | None:
        """The loss config to train with, given the configured one (``cfg.loss``: a config
        or a ``conf/loss`` name); ``None`` means :attr:`default_loss`."""
        return self.default_loss if configured is None else configured


# -- label helpers shared by the encoders --------------------------------------------------


def as_labels(inst: np.ndarray) -> np.ndarray:
    lab = np.asarray(inst)
    if lab.ndim != 2:
        raise ValueError(f"instance labels must be HxW, got shape {lab.shape}")
    if not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise TypeError(f"instance labels must be integer, got {lab.dtype}")
    if lab.size and lab.min() < 0:
        raise ValueError("instance labels must be non-negative (0 = background)")
    return lab.view(np.uint8) if lab.dtype == bool else lab


def boxes(lab: np.ndarray, pad: int):
    """``(id, box)`` of each instance present: its bounding box grown by ``pad`` px, clipped
    to the image."""
    h, w = lab.shape
    for i, sl in enumerate(ndimage.find_objects(lab)):
        if sl is None:
            continue
        ys, xs = sl
        box = (
            slice(max(ys.start - pad, 0), min(ys.stop + pad, h)),
            slice(max(xs.start - pad, 0), min(xs.stop + pad, w)),
        )
        yield i + 1, box
