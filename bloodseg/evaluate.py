"""``bloodseg-evaluate``: test a checkpoint; pixel + instance metrics to JSON and CSV.

    bloodseg-evaluate ckpt_path=experiments/runs/Unet_gray/<time>/checkpoints/best.ckpt
    bloodseg-evaluate ckpt_path=... data=synthetic tta=true

Writes the test files of a run folder (:mod:`bloodseg.rundir`: ``test_metrics.json``,
``per_image.csv``, ``size_hist.csv``, ``samples/``) into the Hydra output folder
(``experiments/runs/evaluate/<time>`` unless overridden).
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

import bloodseg  # noqa: F401  (resolvers)
from bloodseg import rundir
from bloodseg.callbacks import WatershedCallback
from bloodseg.cli_errors import hydra_override_hints
from bloodseg.config import CONF_DIR, instantiate_group
from bloodseg.module import SegmentationModule
from bloodseg.transforms import channels

log = logging.getLogger(__name__)


def follow_checkpoint(cfg: DictConfig, module: SegmentationModule) -> None:
    """Read the data as the network was trained: same color, size/scale and target."""
    info = module.hparams.get("data_info") or {}
    with open_dict(cfg):
        for key in ("color", "image_size", "scale", "target"):
            want = module.hparams.target if key == "target" else info.get(key)
            if (key in info or key == "target") and cfg.data.get(key) != want:
                log.info("data.%s=%s (from the checkpoint)", key, want)
                cfg.data[key] = want
        cfg.data.in_channels = channels(cfg.data.color)


def evaluate(cfg: DictConfig) -> dict:
    out = Path(cfg.paths.output_dir)
    pl.seed_everything(cfg.seed, workers=True)
    module = SegmentationModule.from_checkpoint(cfg.ckpt_path, tta=bool(cfg.tta))
    follow_checkpoint(cfg, module)
    datamodule = instantiate(cfg.data)
    postprocess = cfg.get("postprocess") or module.postprocess_config()  # as trained by default
    callback = WatershedCallback(postprocess, output_dir=str(out), n_samples=cfg.n_samples)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[callback],
                                      logger=instantiate_group(cfg.get("logger")) or False)
    results = trainer.test(module, datamodule=datamodule)
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    rundir.write_test_metrics(out, metrics, cfg.ckpt_path, bool(cfg.tta), datamodule.describe())
    log.info("wrote %s", out / "test_metrics.json")
    return metrics


@hydra_override_hints  # a clear hint for unquoted paths, before Hydra parses
@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
