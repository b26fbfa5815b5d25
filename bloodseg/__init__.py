"""bloodseg: PyTorch Lightning + Hydra experiments for blood-cell segmentation and counting.

The layers, where each concept lives and how to add a network, loss or dataset:
ARCHITECTURE.md. The commands are ``bloodseg.cli`` (nothing imports them); a model file is
read by ``bloodseg.modelfile`` and run by ``bloodseg.inference.Predictor`` (its spec:
``bloodseg.spec``).
"""

from bloodseg.config import register_resolvers

__version__ = "0.1.0"

register_resolvers()
