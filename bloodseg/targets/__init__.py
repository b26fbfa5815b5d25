"""What a network learns from instance labels: one module per target, found by name.

``target=<name>`` is ``conf/target/<name>.yaml`` (its fields, as users set them) and the
:class:`~bloodseg.targets.base.Target` subclass of ``bloodseg/targets/<name>.py`` (its
channels, encoding, decoding, foreground, default loss and post-processor):

- ``binary.py``: one foreground channel, the study's (+ the U-Net paper's weight map);
- ``contour.py``: background / interior / border classes;
- ``distance.py``: foreground + each cell's normalised distance to its own boundary;
- ``distance_contour.py``: those two + a border channel (where cells touch), learned jointly.

    >>> target = from_config({"name": "contour", "width": 2})
    >>> arrays = target.encode(instances, mask)   # {"target": int64 HxW} for the loss
    >>> probs = target.decode(logits)              # (B, 3, H, W) softmax

A new target is one module here and one config there, nothing else
(``tests/test_target_contract.py`` holds every pair to the contract). Model files name
targets too: :func:`bloodseg.spec.target_from_dict` checks their names against ``conf/target`` and
their fields against the class's annotations before anything is built.
"""

from __future__ import annotations

from bloodseg.targets.base import Target
from bloodseg.targets.binary import unet_weight_map
from bloodseg.targets.contour import contour_target
from bloodseg.targets.distance import distance_target
from bloodseg.targets.registry import channel_mismatch, from_config, names, target_class

# the encoders are also functions here, for scripts that draw training targets themselves
__all__ = ["Target", "channel_mismatch", "contour_target", "distance_target", "from_config",
           "names",
           "target_class", "unet_weight_map"]
