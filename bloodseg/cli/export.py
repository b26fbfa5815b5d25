"""``bloodseg-export``: a trained model as one file for other runtimes, or as a bloodseg bundle.

    bloodseg-export ckpt_path=run/checkpoints/best.ckpt format=onnx output=counter.onnx
    bloodseg-export weights=count_real format=torchscript output=counter.ts
    bloodseg-export ckpt_path=run/checkpoints/best.ckpt format=bundle output=count_real.pt

Formats:

- ``onnx``: the network and its target's decoding (:meth:`bloodseg.targets.base.Target.decode`:
  sigmoid, or softmax over the contour classes) in one graph. Input ``image``: a normalised
  float32 ``(batch, C, height, width)`` image; output ``probabilities``: ``(batch, channels,
  height, width)``, what :meth:`bloodseg.inference.Predictor.network_outputs` returns. Batch,
  height and width are dynamic: the graph pads any size to the network's ``size_divisor``
  (reflect, as :class:`~bloodseg.models.common.SegmentationNet` does) and crops back (the
  graph ``predict.backend=onnxruntime`` runs, :mod:`bloodseg.runtimes`); the file is checked
  with onnxruntime against PyTorch before it is kept.
- ``torchscript``: the same module, traced (dynamic sizes too); ``torch.jit.load`` runs it
  without bloodseg. PyTorch deprecates TorchScript: prefer ONNX where the runtime allows.
- ``bundle``: a weights-only bloodseg model file (:func:`bloodseg.modelfile.save_bundle`:
  float16 weights + the spec), what ``bloodseg-predict weights=`` / ``ckpt_path=`` read.

The model is read through the one inference path (:func:`bloodseg.inference.model_file`,
:meth:`~bloodseg.inference.Predictor.load`: a validated spec, nothing instantiated from the
file), so every format carries the post-processing bloodseg-predict would use: the tuned
``postprocess.json`` beside the weights if it was tuned for exactly these weights.

ONNX and TorchScript files get their description beside them, ``<output>.json`` (also in the
ONNX ``metadata_props`` under ``bloodseg``, and in the TorchScript archive as
``bloodseg.json``): how to prepare an image (color, contrast, size, normalisation), what the
output channels are, and the full model spec (``spec``) with its post-processing. In Python,
:func:`network_input` prepares an image exactly as the predictor does.

An existing output is replaced only with ``overwrite=true``; every file is written atomically.
What an export does lives in :mod:`bloodseg.exporting`; this module is the command.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from bloodseg.cli.errors import model_options, run_hydra_main, user_errors
from bloodseg.config import CONF_DIR

EXAMPLE = "bloodseg-export weights=count_real format=onnx output=counter.onnx"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def run(cfg: DictConfig) -> None:
    if model_options(cfg, "bloodseg-export", EXAMPLE):
        return
    from bloodseg.exporting import ExportError, export

    with user_errors(ExportError, OSError):
        export(cfg)


def main() -> None:
    run_hydra_main(run)


if __name__ == "__main__":
    main()
