"""Training one configured experiment: fit -> tune -> test.

:func:`train` fits with Lightning, then chooses the post-processing on the training images
(:mod:`bloodseg.tuning`; ``postprocess.json`` beside the weights) and scores the best
checkpoint through the one inference path (:mod:`bloodseg.evaluation`), exactly as
``bloodseg-evaluate`` would; it writes the run folder's files (:mod:`bloodseg.rundir`). A resume
(``ckpt_path=``) checks the checkpoint's stored spec before Lightning reads it.
:func:`check_objective` and :func:`objective` are what a Hydra sweeper optimises. The run's
outcome (``meta.json`` status, interruptions) is :mod:`bloodseg.outcome`; the command is
``bloodseg-train`` (:mod:`bloodseg.cli.train`).
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import bloodseg  # noqa: F401  (registers the config resolvers)
from bloodseg import ddp, evaluation, rundir, tuning
from bloodseg.config import instantiate_group
from bloodseg.data.bbbc041seg import image_digests, list_split
from bloodseg.data.boxes import boxes_for
from bloodseg.inference import Predictor
from bloodseg.io import CheckpointError, DataError, write_text_atomic
from bloodseg.modelfile import check_model_file, load_model, write_tuned
from bloodseg.module import SegmentationModule

log = logging.getLogger(__name__)


def instantiate_data(config: DictConfig):
    """The DataModule of ``config``; a data mistake it names (a missing folder, data.root with
    data=synthetic) surfaces as itself, not wrapped in Hydra's InstantiationException."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(config)
    except InstantiationException as err:
        if isinstance(err.__cause__, DataError):
            raise err.__cause__ from None
        raise


def build_module(cfg: DictConfig) -> SegmentationModule:
    module = SegmentationModule(
        model=cfg.model,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.get("scheduler") or None,
        channels_last=cfg.get("channels_last", False),
        target=cfg.get("target"),
        postprocess=cfg.get("postprocess"),
    )
    module.provenance = {"run": str(cfg.get("name")), "config_sha256": config_hash(cfg)}
    if cfg.get("init_from"):
        init_weights(module, str(cfg.init_from))
    if cfg.get("compile"):
        module.net = torch.compile(module.net)
    return module


def init_weights(module: SegmentationModule, source: str) -> Path:
    """Start from another model's network weights (fine-tuning, or pretraining on synthetic
    smears first): a checkpoint or bundle file, or a shipped model's name. Its network and
    target must be this run's; the optimizer, schedule and epochs start afresh (``ckpt_path``
    resumes a run instead). Returns the model file."""
    from bloodseg.weights import weights_names, weights_path

    path = Path(source)
    if not path.is_file():
        if source not in weights_names():
            raise CheckpointError(
                f"init_from={source}: no such file and no shipped model of that name; pass a "
                f"checkpoint or bundle path, or one of: {', '.join(weights_names())}")
        path = weights_path(source)
    spec, net = load_model(path)
    mine, theirs = module.network, spec.network
    if (theirs.name, theirs.kwargs) != (mine.name, mine.kwargs):
        raise CheckpointError(
            f"{path}: its network {theirs.name} {theirs.kwargs} is not this run's {mine.name} "
            f"{mine.kwargs}; init_from needs the same network (use the model's own recipe, "
            "e.g. experiment=count_real for count_real)")
    if spec.target.name != module.target.name:
        raise CheckpointError(
            f"{path}: it was trained for target={spec.target.name}, this run learns "
            f"target={module.target.name}; pass target={spec.target.name}")
    module.net.load_state_dict(net.state_dict())
    log.info("network initialised from %s (%s, %s epochs on %s)", path, theirs.name,
             spec.provenance.get("epochs", "?"), spec.provenance.get("data_kind", "?"))
    return path


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the resolved config minus paths (same experiment, same hash)."""
    import hashlib

    plain = OmegaConf.to_container(cfg, resolve=False)
    for key in ("paths", "hydra"):
        plain.pop(key, None)
    return hashlib.sha256(OmegaConf.to_yaml(OmegaConf.create(plain)).encode()).hexdigest()[:16]


def is_ddp_worker() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) > 0


class FitMetrics(pl.Callback):
    """The metrics logged by the fit, kept as it ends, with the checkpoint's monitored metric
    at its best value (the checkpoint that is tested): what :func:`objective` hands to a
    sweeper."""

    def __init__(self) -> None:
        self.metrics: dict[str, float] = {}

    def on_fit_end(self, trainer: pl.Trainer, pl_module) -> None:
        self.metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        ckpt = trainer.checkpoint_callback
        if ckpt is not None and ckpt.monitor and ckpt.best_model_score is not None:
            self.metrics[ckpt.monitor] = float(ckpt.best_model_score)


def train(cfg: DictConfig) -> dict:
    """Fit, test the best checkpoint, and write run metadata; returns the metrics of the fit
    as it ended (:class:`FitMetrics`) and the test metrics."""
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if HydraConfig.initialized() and not is_ddp_worker():
        # DDP workers rebuild this exact job from the resolved config (see bloodseg.ddp).
        write_text_atomic(out / ".hydra" / f"{ddp.RESOLVED_CONFIG}.yaml",
                          OmegaConf.to_yaml(cfg, resolve=True))
    ddp.install()
    ddp_env = ddp.snapshot_env()
    pl.seed_everything(cfg.seed, workers=True)

    # a bad tune option fails before training
    tune = tuning.TuneOptions.from_config(cfg.get("tune"))
    if cfg.get("ckpt_path"):
        check_model_file(cfg.ckpt_path)  # a stranger's file is checked before Lightning reads it
    datamodule = instantiate_data(cfg.data)
    # Load and check every split the run will touch now: a bad test mask must stop the run
    # before the first epoch, not after the last.
    datamodule.prepare_data()
    if cfg.get("train", True):
        datamodule.setup("fit")
    if cfg.get("test", True):
        datamodule.setup("test")
    module = build_module(cfg)
    if cfg.get("train", True):  # by content: evaluate warns when it is given these images
        module.provenance["train_images"] = image_digests(list_split(datamodule.root, "train"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    fit_metrics = FitMetrics()
    loggers = instantiate_group(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=[*callbacks, fit_metrics],
                                      logger=loggers or False)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for lg in loggers:
        lg.log_hyperparams(resolved)  # W&B and CSV carry the full experiment config

    try:
        test_metrics = fit_and_test(cfg, out, trainer, module, datamodule, tune)
        return {**fit_metrics.metrics, **test_metrics}
    finally:
        finish_wandb(loggers)
        if not is_ddp_worker():
            ddp.reset(ddp_env)


def finish_wandb(loggers: list) -> None:
    """Close the W&B run: the next job of a sweep (same process) must get a run of its own."""
    from pytorch_lightning.loggers import WandbLogger

    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()


def fit_and_test(cfg: DictConfig, out: Path, trainer: pl.Trainer, module, datamodule,
                 tune: tuning.TuneOptions | None = None) -> dict:
    """fit -> tune -> test; returns the test metrics (empty where there was no test)."""
    started = time.time()
    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    train_time = time.time() - started

    weights = None
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("train", True) and best and Path(best).is_file():
        weights = best
    elif not cfg.get("train", True):
        weights = cfg.get("ckpt_path")
    test_metrics: dict = {}
    # the stages after fit run once, on rank 0: every rank holds the same weights. Without a
    # checkpoint (fast_dev_run, checkpointing off) they use the weights in memory.
    if trainer.is_global_zero and (tune or cfg.get("test", True)) and (
            weights or cfg.get("train", True)):
        test_metrics = tune_and_test(cfg, out, trainer, datamodule, weights, tune, module)
    if trainer.is_global_zero:
        write_run_files(cfg, out, trainer, module, datamodule, test_metrics, train_time)
    return test_metrics


def tune_and_test(cfg: DictConfig, out: Path, trainer: pl.Trainer, datamodule,
                  weights: str | None, tune: tuning.TuneOptions | None,
                  module: SegmentationModule) -> dict:
    """The tuning and test stages on ``weights`` (None: the module's weights in memory),
    through the one inference path."""
    p = cfg.get("predict") or {}  # conf/predict/default.yaml, as bloodseg-predict reads it
    device = p.get("device", "auto")
    options = {"device": str(trainer.strategy.root_device) if device == "auto" else device,
               "mode": p.get("mode", "auto"), "scale": p.get("scale"),
               "overlap": float(p.get("overlap", 0.25)), "tta": p.get("tta", False),
               "batch_size": int(p.get("batch_size", 8)),
               "postprocess_at": p.get("postprocess_at", "native")}
    if weights:
        # a run's numbers never depend on the runtime: auto scores with PyTorch here
        backend = str(p.get("backend", "auto"))
        predictor = Predictor.load(weights, backend="torch" if backend == "auto" else backend,
                                   **options)
    else:
        log.info("no checkpoint was written: testing the weights in memory")
        predictor = Predictor(module.model_spec(), copy.deepcopy(module.net), **options)
    root = datamodule.root
    if tune:
        samples = tuning.tuning_samples(root, tune.split, tune.max_images,
                                        datamodule.val_fraction, datamodule.seed)
        result = tuning.tune_stage(predictor, samples, tune)
        chosen = tuning.tuned_postprocess(result)
        record = tuning.tuning_record(tune, result, len(samples), predictor.tta_mode)
        rundir.write_tuning(out, record)
        if weights:
            log.info("wrote %s", write_tuned(weights, chosen, record, out / rundir.TUNED))
        predictor = predictor.with_postprocess(chosen)
    if not cfg.get("test", True):
        return {}
    scored = evaluation.test_stage(predictor, list_split(root, "test"), out,
                                   weights or "(weights in memory)",
                                   datamodule.describe(), int(cfg.get("n_samples", 4)),
                                   boxes_for(root, datamodule.boxes))
    log_test(trainer, scored, weights, out)
    return scored.metrics


def log_test(trainer: pl.Trainer, scored: evaluation.Scored, weights: str | None = None,
             out: Path | None = None) -> None:
    """Test metrics to every logger (CSV, W&B); W&B also gets the size histogram, the test
    panels as a table with interactive masks and, when online, the model as an Artifact."""
    from pytorch_lightning.loggers import WandbLogger

    for lg in trainer.loggers:
        lg.log_metrics(scored.metrics, step=trainer.global_step)
        lg.save()
        if isinstance(lg, WandbLogger):
            log_wandb(lg.experiment, scored, weights, out)


def log_wandb(run, scored: evaluation.Scored, weights: str | None, out: Path | None) -> None:
    import numpy as np
    import wandb

    from bloodseg.config import wandb_offline

    areas = np.concatenate(scored.stats.areas) if scored.stats.areas else np.zeros(0)
    rows = {r["file"]: r for r in scored.stats.rows}
    table = wandb.Table(columns=["image", "file", "cells", "truth", "count_error", "f1"])
    for p in scored.pictures:
        row = rows.get(p["name"], {})
        # toggle the predicted and true instances over the image in the W&B UI
        image = wandb.Image(p["image"], masks={
            "prediction": {"mask_data": p["instances"].astype(np.int32)},
            "truth": {"mask_data": p["truth"].astype(np.int32)}})
        table.add_data(image, p["name"], int(p["instances"].max()), p["true_count"],
                       row.get("count_error"), row.get("f1"))
    run.log({"test/cell_area_px": wandb.Histogram(areas, num_bins=30), "test/panels": table})
    if weights and Path(weights).is_file() and not wandb_offline():
        model = wandb.Artifact(f"model-{run.id}", type="model",
                               metadata={k: v for k, v in scored.metrics.items()})
        model.add_file(str(weights))
        tuned = out / rundir.TUNED if out is not None else None
        if tuned is not None and tuned.is_file():
            model.add_file(str(tuned))
        run.log_artifact(model, aliases=["best"])


def write_run_files(cfg, out: Path, trainer: pl.Trainer, module, datamodule,
                    test_metrics: dict, train_time: float) -> None:
    stopper = trainer.early_stopping_callback
    ckpt_cb = trainer.checkpoint_callback
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    meta = {
        "name": cfg.name,
        "status": "completed",
        "model": choices.get("model", cfg.model.get("_target_", "")),
        "experiment": choices.get("experiment"),
        "params": sum(p.numel() for p in module.parameters()),
        "epochs_run": trainer.current_epoch,
        "stopped_epoch": (stopper.stopped_epoch or None) if stopper else None,
        "best_ckpt": ckpt_cb.best_model_path if ckpt_cb else "",
        "best_val_loss": float(ckpt_cb.best_model_score) if ckpt_cb and
        ckpt_cb.best_model_score is not None else None,
        "train_time_s": round(train_time, 2),
        "loss": choices.get("loss") or cfg.loss.get("_target_"),
        "optimizer": OmegaConf.to_container(cfg.optimizer, resolve=True),
        "scheduler": OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.get("scheduler")
        else None,
        "max_epochs": cfg.trainer.get("max_epochs"),
        "batch_size": datamodule.batch_size,
        **datamodule.describe(),
    }
    rundir.write_meta(out, meta)  # test_metrics.json is the test stage's (weights, TTA, data)
    log.info("run files written to %s", out)




# -- the sweep objective ----------------------------------------------------------------------


def check_objective(cfg: DictConfig) -> None:
    """Refuse a test metric as ``optimized_metric`` before anything runs: a sweeper would
    choose hyper-parameters by the test split, and the test scores would no longer be
    held-out estimates."""
    name = cfg.get("optimized_metric")
    if name and str(name).startswith("test/"):
        raise ValueError(
            f"optimized_metric={name}: a sweep would select on the test split; choose a "
            "validation metric, e.g. optimized_metric=val/loss or val/count_mae_trainres")


def objective(cfg: DictConfig, metrics: dict | None) -> float | None:
    """``metrics[cfg.optimized_metric]`` (see :class:`FitMetrics`), or None with an error
    naming what was logged."""
    name = cfg.get("optimized_metric")
    if not name or metrics is None:
        return None
    if name not in metrics:
        if cfg.get("train", True):
            logged = sorted(k for k in metrics if not k.startswith("test/"))
            log.error("optimized_metric=%s was not logged by the fit; logged: %s", name,
                      ", ".join(logged) or "nothing")
        return None
    return metrics[name]
