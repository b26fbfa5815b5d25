"""Training framework: composed configs, every experiment file, sweeps, DDP, W&B offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from bloodseg.config import job_gpu, wandb_offline
from bloodseg.ddp import hydra_ddp_command
from bloodseg.losses import build_loss
from bloodseg.modelfile import load_model
from bloodseg.targets import target_class
from bloodseg.training import train
from tests.conftest import CONF, REPO
from tests.helpers.cli import run
from tests.helpers.runs import TINY as TINY_DATA
from tests.helpers.runs import read_csv

# every experiment file, the cross-validation's recipes (experiment=bench/<name>) included
EXPERIMENTS = sorted(p.relative_to(CONF / "experiment").with_suffix("").as_posix()
                     for p in (CONF / "experiment").rglob("*.yaml"))


def shrink_models(cfg) -> None:
    """Narrow the from-scratch networks so CPU tests take seconds (architecture unchanged)."""
    with open_dict(cfg):
        if "base_channels" in cfg.model:
            cfg.model.base_channels = 8


def test_experiment_files_exist_for_the_study():
    assert set(EXPERIMENTS) >= {
        "unet_grayscale", "unet_rgb", "resunet_grayscale", "resunet_grayscale_scheduler",
        "vgg11unet", "vgg16unet", "attunet",
    }


@pytest.mark.slow  # a fast_dev_run trains a batch
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_runs_fast_dev_run(hydra_cfg, tmp_path, experiment):
    # crops and tuning shrunk to the tiny images (count_real and its bench/ recipes crop and tune)
    cfg = hydra_cfg(tmp_path, [f"experiment={experiment}", *TINY_DATA, "data.crop_size=32",
                               "tune.max_images=2", "trainer.fast_dev_run=true"])
    shrink_models(cfg)
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    assert "test/dice" in metrics and "test/count_mae" in metrics
    meta = json.loads((out / "meta.json").read_text())
    assert meta["name"] == cfg.name and meta["data_kind"] == "synthetic"
    # fast_dev_run suppresses loggers (no metrics.csv); the run still writes its own metrics
    assert (out / "test_metrics.json").is_file() and (out / "per_image.csv").is_file()


def test_study_hyperparameters_compose(hydra_cfg, tmp_path):
    cfg = hydra_cfg(tmp_path, ["experiment=resunet_grayscale_scheduler"])
    assert cfg.model._target_.endswith("ResUNet") and cfg.data.color == "gray"
    assert cfg.optimizer.lr == 1e-4 and cfg.data.batch_size == 4 and cfg.trainer.max_epochs == 100
    assert cfg.scheduler._target_.endswith("StepLR") and cfg.scheduler.gamma == 0.95
    assert cfg.callbacks.early_stopping.patience == 10
    cfg = hydra_cfg(tmp_path, ["experiment=vgg16unet"])
    assert cfg.scheduler._target_.endswith("ReduceLROnPlateau")
    assert (cfg.scheduler.factor, cfg.scheduler.patience, cfg.scheduler.min_lr) == (0.5, 5, 1e-6)
    cfg = hydra_cfg(tmp_path, ["experiment=unet_grayscale"])
    assert cfg.callbacks.early_stopping is None and cfg.name == "Unet_grayscale"
    assert cfg.model.in_channels == 1
    cfg = hydra_cfg(tmp_path, ["experiment=unet_rgb"])
    assert cfg.model.in_channels == 3
    cfg = hydra_cfg(tmp_path, ["scheduler=cosine", "trainer.max_epochs=7"])
    sched = instantiate(cfg.scheduler)(optimizer=torch.optim.SGD([torch.zeros(1)], lr=1.0))
    assert sched.T_max == 7 and sched.eta_min == 1e-5


@pytest.mark.slow
def test_short_training_learns_and_checkpoint_round_trips(hydra_cfg, tmp_path):
    cfg = hydra_cfg(tmp_path, [*TINY_DATA, "model=unet", "model.base_channels=8",
                               "trainer.max_epochs=6", "data.synthetic.n_train=16",
                               "optimizer.lr=3e-3", "scheduler=plateau"])
    metrics = train(cfg)
    out = Path(cfg.paths.output_dir)
    rows = read_csv(out / "metrics.csv")
    val = [r for r in rows if r.get("val/dice")]
    assert len(val) == 6
    # learning: validation loss falls and Dice climbs well above chance
    assert float(val[-1]["val/loss"]) < float(val[0]["val/loss"])
    assert metrics["test/dice"] > 0.6
    for key in ("val/count_mae_trainres", "val/f1_trainres", "train/loss_epoch", "lr-Adam"):
        assert any(r.get(key) for r in rows), key
    best = out / "checkpoints" / "best.ckpt"
    assert best.is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    spec, net = load_model(best)
    assert spec.preprocess.color == "gray" and spec.preprocess.image_size == (64, 64)
    assert spec.provenance["epochs"] >= 1 and spec.provenance["config_sha256"]
    assert "val/loss" in spec.provenance["metrics"]
    x = torch.zeros(1, 1, 64, 64)
    assert net(x).shape == (1, 1, 64, 64)


@pytest.mark.parametrize("name", ["bce", "dice", "bce_dice"])
def test_losses(name):
    loss = build_loss(name)
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good, bad = loss(target * 20 - 10, target), loss(10 - target * 20, target)
    assert good < bad


def test_unknown_loss_lists_choices():
    with pytest.raises(KeyError, match="bce, bce_dice, binary, contour, dice, distance"):
        build_loss("focal")


def test_wandb_offline_unless_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_offline() is True
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert wandb_offline() is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_offline() is True


def test_job_gpu_without_cuda_is_one_device():
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectation")
    assert job_gpu() == 1


def test_ddp_worker_command_replays_the_job_not_the_sweep(hydra_cfg, tmp_path, monkeypatch):
    cfg = hydra_cfg(tmp_path, ["model=resunet"])
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "model=unet,resunet"])
    command, cwd = hydra_ddp_command(local_rank=1)
    assert command[1:3] == ["-m", "bloodseg.cli.train"]  # python -m: the module, not a sweep
    assert "-m" not in command[3:] and "model=unet,resunet" not in command
    assert command[command.index("--config-path") + 1] == str(tmp_path / "run" / ".hydra")
    assert f'hydra.run.dir="{tmp_path / "run"}"' in command
    assert cwd == cfg.hydra.runtime.cwd  # workers start where the user started the sweep


@pytest.mark.slow
def test_sweep_of_models_cli_with_wandb_offline(tmp_path):
    """The user's command, as typed: one job per model, own output dir, W&B offline."""
    sweep = tmp_path / "sweep"
    proc = run(REPO / "train.py", [
        "-m", "model=unet,attunet", "model.base_channels=8",
        *[a for a in TINY_DATA if a != "logger=csv"], "trainer.max_epochs=1",
        "trainer.limit_train_batches=2", f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep}"], tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    # named by their overrides (conf/hydra/default.yaml), cut to whole overrides
    assert [j[:2] for j in jobs] == ["0_", "1_"], jobs
    assert jobs[0].startswith("0_data-synthetic+model-unet+trainer-cpu+"), jobs
    assert jobs[1].startswith("1_data-synthetic+model-attunet+trainer-cpu+"), jobs
    assert all(len(j) <= 160 and "," not in j and "=" not in j for j in jobs), jobs
    for job in jobs:
        d = sweep / job
        assert (d / "metrics.csv").is_file() and (d / "test_metrics.json").is_file()
        assert list((d / "wandb").glob("offline-run-*")), "W&B must run offline, no prompt"
        cfg = (d / ".hydra" / "resolved.yaml").read_text()
        assert "group: sweep" in cfg  # jobs of one sweep share a W&B group


@pytest.mark.slow
def test_ddp_inside_multirun_on_cpu(tmp_path):
    """trainer=ddp in a -m sweep: each job's 2 workers train that job, in that job's dir."""
    sweep = tmp_path / "sweep"
    proc = run(REPO / "train.py", [
        "-m", "model=unet,resunet", "model.base_channels=8", *TINY_DATA, "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "trainer.sync_batchnorm=false", "trainer.fast_dev_run=true",
        f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweep.dir={sweep}"], tmp_path,
        in_process=True)  # rank 0 here, as in the sweep's own process; rank 1: new processes
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    # one folder per job (no nested sweeps from the workers), named by its overrides
    assert [j[:2] for j in jobs] == ["0_", "1_"], jobs
    assert jobs[1].startswith("1_data-synthetic+model-resunet+"), jobs
    for job in jobs:
        d = sweep / job
        assert (d / "train_ddp_process_1.log").is_file()  # the worker ran in this job's dir
        assert (d / "test_metrics.json").is_file()
    assert not (tmp_path / "experiments").exists() and not (tmp_path / "outputs").exists()


PROFILES = sorted(p.stem for p in (CONF / "profile").glob("*.yaml"))
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("model", MODELS)
def test_every_profile_model_pair_composes_and_builds(hydra_cfg, tmp_path, profile, model):
    from hydra.utils import instantiate

    cfg = hydra_cfg(tmp_path, [f"profile={profile}", f"model={model}"])
    # a profile shrinks a run but never chooses its data (the default stays the real layout)
    assert cfg.data.kind == "real" and cfg.data.image_size <= 128
    channels = target_class(cfg.target.name).channels  # what SegmentationModule gives it
    net = instantiate(cfg.model, classes=channels).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, cfg.data.in_channels, 64, 64))
    assert out.shape == (1, channels, 64, 64)
    if model in ("unet", "resunet", "attunet"):
        assert cfg.model.base_channels == cfg.profile_network.base_channels <= 16, \
            "profiles narrow the from-scratch networks"
    if model.startswith("vgg"):
        assert cfg.model.batch_norm is True, "profiles train the VGG encoders with BatchNorm"


def test_a_profile_leaves_explicit_widths_alone(hydra_cfg, tmp_path):
    plain = hydra_cfg(tmp_path, ["model=unet"])
    assert plain.model.base_channels == 64 and "profile_network" not in plain
    cfg = hydra_cfg(tmp_path, ["data=synthetic", "profile=quick", "model=unet",
                               "model.base_channels=24"])
    assert cfg.model.base_channels == 24
    vgg = hydra_cfg(tmp_path, ["model=vgg11unet"])
    assert vgg.model.batch_norm is False


@pytest.mark.slow
def test_wandb_gets_test_panels_as_a_table_with_masks(hydra_cfg, tmp_path, monkeypatch):
    """Offline W&B: the test panels land as a table (one row per saved test image) whose
    images carry the predicted and true instances as masks; the model Artifact is only
    logged online."""
    from bloodseg import training as train_module

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logged = []
    real_log_wandb = train_module.log_wandb

    def spy(run, scored, weights, out):
        real_log_wandb(SpyRun(run, logged), scored, weights, out)

    monkeypatch.setattr(train_module, "log_wandb", spy)
    cfg = hydra_cfg(tmp_path, [*[a for a in TINY_DATA if a != "logger=csv"], "logger=wandb",
                               "model.base_channels=4", "trainer.max_epochs=1", "n_samples=2"])
    train(cfg)
    out = Path(cfg.paths.output_dir)
    tables = list((out / "wandb").glob("offline-run-*/files/media/table/test/panels_*.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:4] == ["image", "file", "cells", "truth"]
    assert len(table["data"]) == 2
    [panels] = [entry["test/panels"] for entry in logged if "test/panels" in entry]
    for image in panels.get_column("image"):
        assert set(image._masks) == {"prediction", "truth"}
    assert not [e for e in logged if e == "artifact"]  # offline: no Artifact


class SpyRun:
    """A W&B run that records what is logged, then passes it on."""

    def __init__(self, run, logged: list) -> None:
        self.run, self.logged = run, logged

    def log(self, data: dict) -> None:
        self.logged.append(data)
        self.run.log(data)

    def log_artifact(self, *args, **kwargs) -> None:
        self.logged.append("artifact")

    def __getattr__(self, name):
        return getattr(self.run, name)
