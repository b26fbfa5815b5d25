"""Sweeps: the objective a sweeper optimises is a validation metric, an Optuna study runs,
debug presets compose and run, and sweep job folders are named by their overrides."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bloodseg.config import DIRNAME_MAX, dirname
from bloodseg.jobs import job_outcomes
from bloodseg.report import find_runs
from bloodseg.training import check_objective, objective, train
from tests.conftest import CONF, REPO
from tests.helpers.cli import run
from tests.helpers.runs import TINY

DEBUG_PRESETS = sorted(p.stem for p in (CONF / "debug").glob("*.yaml"))


# -- the objective ---------------------------------------------------------------------------


def test_the_objective_is_a_validation_metric(hydra_cfg, tmp_path, caplog):
    cfg = hydra_cfg(tmp_path, [])
    assert cfg.optimized_metric == "val/loss"
    check_objective(cfg)
    assert objective(cfg, {"val/loss": 0.25, "test/loss": 0.1}) == 0.25
    with caplog.at_level(logging.ERROR, logger="bloodseg.training"):
        assert objective(cfg, {"train/loss": 0.3, "test/loss": 0.1}) is None
    assert "optimized_metric=val/loss was not logged by the fit; logged: train/loss" in caplog.text
    cfg = hydra_cfg(tmp_path, ["optimized_metric=test/loss"])
    with pytest.raises(ValueError, match="a sweep would select on the test split"):
        check_objective(cfg)


def test_a_test_objective_is_refused_before_anything_runs(tmp_path):
    proc = run(REPO / "train.py", ["optimized_metric=test/count_mae", "data=synthetic",
                                   "profile=quick",
                                   f"hydra.run.dir={tmp_path / 'run'}",
                                   f"paths.data_dir={tmp_path / 'd'}"], tmp_path, in_process=True)
    assert proc.returncode != 0
    assert "optimized_metric=test/count_mae: a sweep would select on the test split" in \
        proc.stderr
    assert not (tmp_path / "run" / "meta.json").exists() and not (tmp_path / "d").exists()


# -- Optuna ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_trial_optuna_study_on_synthetic_data(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep = tmp_path / "sweep"
    proc = run(REPO / "train.py", [
        "-m", "hparams_search=optuna", "data=synthetic", "profile=quick",
        "hydra.sweeper.n_trials=2",
        "model.base_channels=choice(4,8)",  # the command line narrows a range
        f"hydra.sweep.dir={sweep}", f"paths.data_dir={tmp_path / 'data'}"], tmp_path,
        in_process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(result["best_params"]) == {"optimizer.lr", "optimizer.weight_decay",
                                          "model.base_channels", "postprocess.marker_threshold"}
    jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
    assert [j.name[:2] for j in jobs] == ["0_", "1_"]
    scores = []
    for job in jobs:
        # the folder names the trial's values; the run is a contour-target AdamW run
        assert "+optimizer.lr-" in job.name and "postprocess.marker_threshold-" in job.name
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["optimizer"]["_target_"] == "torch.optim.AdamW"
        assert config["target"]["name"] == "contour"
        history = pd.read_csv(job / "metrics.csv")
        scores.append(history["val/count_mae_trainres"].dropna().iloc[-1])
    # the study optimised the validation count error of each trial, as it ended
    assert result["best_value"] == pytest.approx(min(scores))
    # the sweep summary and the report find the trials under their new names
    assert [status for _, status, _ in job_outcomes(sweep)] == ["ok", "ok"]
    assert find_runs([sweep]).runs == [j.resolve() for j in jobs]


# -- debug presets ---------------------------------------------------------------------------


def test_debug_presets_are_those_of_the_template():
    assert set(DEBUG_PRESETS) == {"default", "fdr", "overfit", "limit", "profiler"}


@pytest.mark.parametrize("preset", DEBUG_PRESETS)
def test_debug_preset_composes(hydra_cfg, tmp_path, preset):
    cfg = hydra_cfg(tmp_path, [f"debug={preset}"])
    assert cfg.name == "debug" and cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1
    assert cfg.data.num_workers == 0 and cfg.trainer.detect_anomaly
    assert cfg.hydra.job_logging.loggers.bloodseg.level == "DEBUG"
    assert "WandbLogger" not in str(cfg.logger)
    expected = {"default": ("max_epochs", 1), "fdr": ("fast_dev_run", True),
                "overfit": ("overfit_batches", 3), "limit": ("limit_train_batches", 5),
                "profiler": ("max_epochs", 1)}[preset]
    assert cfg.trainer[expected[0]] == expected[1]
    if preset == "overfit":
        assert cfg.callbacks.early_stopping is None and not cfg.augment
    if preset == "profiler":
        assert cfg.trainer.profiler._target_.endswith("SimpleProfiler")


@pytest.mark.slow
def test_debug_fdr_runs(hydra_cfg, tmp_path):
    cfg = hydra_cfg(tmp_path, [*TINY, "model.base_channels=4", "debug=fdr"])
    metrics = train(cfg)
    assert "test/dice" in metrics and "val/loss" in metrics
    assert (Path(cfg.paths.output_dir) / "test_metrics.json").is_file()


# -- sweep folder names ----------------------------------------------------------------------


def test_sweep_folder_names_are_one_safe_path_component():
    assert dirname("model-unet+optimizer.lr-0.001", "unet_gray") == \
        "model-unet+optimizer.lr-0.001"
    assert dirname("", "unet_gray") == "unet_gray"  # no overrides: the run name
    # a path, a list, quotes, spaces and non-ASCII: nothing Hydra would need quoted
    assert dirname("data.size-[64,64]+x-'a b'/c+y-dätä") == "x-_a_b__c+y-d_t+data.size-_64_64"
    assert dirname("optimizer.lr-0.00035090148857968553+wd-1.2760186458599516e-05+n-8+"
                   "t-0.5") == "wd-1.276e-05+n-8+t-0.5+optimizer.lr-0.0003509"
    # group choices first (Hydra sorts "data.x=1" before "data=synthetic"), so that the
    # cut keeps them
    assert dirname("data.batch_size-2+data-synthetic+model.base_channels-8+model-unet") == \
        "data-synthetic+model-unet+data.batch_size-2+model.base_channels-8"
    items = "+".join(f"key{i:02d}-value{i:02d}" for i in range(20))  # 13 characters each
    name = dirname(items)
    assert len(name) <= DIRNAME_MAX and name.endswith("+key09-value09")  # whole overrides
