"""bloodseg: PyTorch Lightning + Hydra experiments for blood-cell segmentation and counting.

Library layout (data flows one way): ``data/`` (files -> tensors) -> ``models/`` +
``module.py`` (networks, LightningModule) -> ``postprocess.py`` (watershed instances) ->
``metrics.py`` / ``callbacks.py`` (counts, instance quality) -> ``report.py`` (figures).
Entry points: ``train.py``, ``evaluate.py``, ``predict.py``, ``data/cli.py``, ``report.py``.
"""

from bloodseg.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
