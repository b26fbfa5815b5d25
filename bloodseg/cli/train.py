"""``bloodseg-train`` / ``python train.py``: fit -> tune -> test one configured experiment.

    python train.py model=attunet data=synthetic trainer.max_epochs=5
    python train.py experiment=resunet_grayscale_scheduler
    python train.py -m model=unet,resunet,vgg11unet,vgg16unet,attunet          # sweep
    python train.py -m model=unet,attunet hydra/launcher=joblib trainer=gpu    # 1 job/GPU

Each run writes a run folder (its files: :mod:`bloodseg.rundir`). After fitting, ``tune``
chooses the post-processing on the training images and writes ``postprocess.json`` beside the
weights; the test stage then scores the best checkpoint through the one inference path
(:mod:`bloodseg.evaluation`), exactly as ``bloodseg-evaluate`` would. What a run does lives in
:mod:`bloodseg.training` (and its outcome in :mod:`bloodseg.outcome`); this module is the
command: Hydra, the sweep objective it returns, and the exit status of a refused run folder or
model file.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from bloodseg.cli.errors import hydra_override_hints, user_errors
from bloodseg.config import CONF_DIR


@hydra_override_hints  # a clear hint for unquoted paths, before Hydra parses
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from bloodseg import rundir
    from bloodseg.outcome import run_recorded
    from bloodseg.training import check_objective, objective

    check_objective(cfg)
    with user_errors(rundir.RunFolderTaken):
        metrics = run_recorded(cfg)
    # the scalar Hydra sweepers (hparams_search=optuna) optimise: a validation metric
    return objective(cfg, metrics)


if __name__ == "__main__":
    main()
