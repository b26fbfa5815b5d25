"""bloodseg: PyTorch Lightning + Hydra experiments for blood-cell segmentation and counting.

The layers, where each concept lives and how to add a network, loss or dataset:
ARCHITECTURE.md. Entry points (commands only; nothing imports them): ``train.py``,
``evaluate.py``, ``tune.py``, ``predict.py``, ``export.py``, ``data/cli.py``,
``report/__main__.py``, ``weights/__main__.py``, ``models/__main__.py``; their logic lives in
``training``, ``model_stages``, ``prediction``, ``exporting``, ``data.kaggle`` and
``report.build``. A model file is read through ``bloodseg.inference.Predictor.load`` (its
spec: ``bloodseg.spec``).
"""

from bloodseg.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
