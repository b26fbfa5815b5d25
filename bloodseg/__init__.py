"""bloodseg: PyTorch Lightning + Hydra experiments for blood-cell segmentation and counting.

The layers, where each concept lives and how to add a network, loss or dataset:
ARCHITECTURE.md. Entry points: ``train.py``, ``evaluate.py``, ``predict.py``, ``data/cli.py``,
``report/__main__.py``.
"""

from bloodseg.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
