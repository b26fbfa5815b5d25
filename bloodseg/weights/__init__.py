"""Shipped models: weights bundles inside the package, so users count without training.

A bundle (``<name>.pt``) is a weights-only file (:func:`bloodseg.modelfile.save_bundle`): the
model spec with its tuned post-processing, and float16 weights. Its model card
(``<name>.md``) says what it was trained on, how well it counts (cross-validated, with the
command) and where it should not be used.

    bloodseg-predict weights=count_real input=smears/ output=counts/
    bloodseg-weights                      # lists the shipped models
"""

from __future__ import annotations

from bloodseg.weights.shipped import listing, model_card, weights_names, weights_path

__all__ = ["listing", "model_card", "weights_names", "weights_path"]
