"""``bloodseg-tune``: choose a model's post-processing on images with known instances.

    bloodseg-tune ckpt_path=<run>/checkpoints/best.ckpt data.root=<Kaggle-layout folder>
    bloodseg-tune ckpt_path=... data.root=... tune.metric=count_mae tune.max_images=null
    bloodseg-tune ckpt_path=... data.root=... 'tune.grid={marker_threshold:[0.4,0.5,0.6]}'

As StarDist's ``optimize_thresholds`` does, it runs the network once per training image
(``tune.split=train``: train + val; ``val``: the seeded validation split) through the one
inference path, tries a grid of post-processing values (the post-processor's own
``tune_grid()`` unless ``tune.grid``), and keeps the best by ``tune.metric``. The test split is
never looked at. The choice goes beside the weights (``postprocess.json``, tied to the weights
by their sha256; ``bloodseg-evaluate`` and ``bloodseg-predict`` pick it up) and never into
the checkpoint; ``output=`` puts it elsewhere (then pass ``postprocess_file=``). An existing
``postprocess.json`` is replaced only with ``overwrite=true``. What it does lives in
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
from bloodseg.model_stages import tune


@hydra_override_hints  # a clear hint for unquoted paths, before Hydra parses
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="tune")
def main(cfg: DictConfig) -> None:
    try:
        tune(cfg)
    except (DataError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
