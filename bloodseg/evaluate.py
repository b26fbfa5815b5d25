"""``bloodseg-evaluate``: score a model file on images with known instances.

    bloodseg-evaluate ckpt_path=experiments/runs/count_real/<time>/checkpoints/best.ckpt
    bloodseg-evaluate ckpt_path=... data.root=/data/other-smears predict.tta=true
    bloodseg-evaluate weights=count_real data.root=../shared/data/bbbc041seg-mini

The model is read from its stored spec (:mod:`bloodseg.spec`: nothing in it is instantiated)
and run through the one inference path with its own preprocessing and its tuned
post-processing (``postprocess.json`` beside the weights), so evaluating a run's checkpoint
on its data reproduces the run's own ``test_metrics.json``. ``data.root`` defaults to the
folder the model was trained on (said in the log); pass it to evaluate other images.

Writes the test files of a run folder (:mod:`bloodseg.rundir`: ``test_metrics.json``,
``per_image.csv``, ``size_hist.csv``, ``samples/``) into the output folder
(``experiments/runs/evaluate/<time>`` unless overridden). What it does lives in
:mod:`bloodseg.model_stages`; this module is the command.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import bloodseg  # noqa: F401  (resolvers)
from bloodseg.checkpoint import CheckpointError
from bloodseg.cli_errors import hydra_override_hints
from bloodseg.config import CONF_DIR
from bloodseg.io import DataError
from bloodseg.model_stages import evaluate


@hydra_override_hints  # a clear hint for unquoted paths, before Hydra parses
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (DataError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
