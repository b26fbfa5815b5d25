"""Refusals: checkpoints that cannot run code, failures that surface early and stay visible."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import open_dict

from bloodseg.data.datamodule import BloodCellDataModule
from bloodseg.io import DataError
from bloodseg.modelfile import CheckpointError, load_checkpoint, load_model
from bloodseg.outcome import run_recorded
from tests.conftest import REPO
from tests.helpers.cli import run
from tests.helpers.runs import TINY

# -- 1, 2: checkpoints (booby-trapped ones: test_modelfile.py) ----------------------------------


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", os.urandom(2048),
                                     b"PK\x03\x04truncated zip"])
def test_broken_checkpoint_errors_name_the_file(tmp_path, content):
    path = tmp_path / "broken.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "not a bloodseg model file" in msg
    assert "ckpt_path=" in msg and "weights_only" not in msg  # not PyTorch's advice


def test_checkpoint_without_a_model_is_named(tmp_path):
    path = tmp_path / "weights.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(ValueError, match=f"{path}: not a bloodseg model file"):
        load_model(path)


# -- 3: fail before training, with the error in the run folder ---------------------------------


def test_bad_test_mask_fails_before_the_first_step(hydra_cfg, tmp_path, synthetic_root):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(synthetic_root, root)
    bad = next((root / "test" / "mask").iterdir())
    cv2.imwrite(str(bad), np.full((96, 96), 128, np.uint8))  # not binary
    cfg = hydra_cfg(tmp_path, ["logger=csv", "trainer=cpu", "callbacks.progress_bar=null",
                               "data.image_size=64", "data.num_workers=0", "trainer.max_epochs=50",
                               "model.base_channels=4"])
    with open_dict(cfg):
        cfg.data.root = str(root)
    with pytest.raises(DataError, match=f"{bad}: mask is not binary"):
        run_recorded(cfg)
    out = Path(cfg.paths.output_dir)
    assert not (out / "checkpoints").exists(), "training ran before the test split was checked"
    assert "mask is not binary" in (out / "error.txt").read_text()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "failed" and "mask is not binary" in meta["error"]


@pytest.mark.parametrize(("option", "value", "message"), [
    ("batch_size", 0, "data.batch_size must be a positive number"),
    ("image_size", 0, "data.image_size must be positive"),
    ("image_size", [64, -1], "data.image_size must be positive"),
    ("val_fraction", 1.5, r"data.val_fraction must be in \[0, 1\)"),
])
def test_bad_options_are_named(synthetic_root, option, value, message):
    with pytest.raises(DataError, match=message):
        BloodCellDataModule(root=str(synthetic_root), **{option: value})


def test_val_fraction_leaving_no_training_image_is_named(synthetic_root):
    dm = BloodCellDataModule(root=str(synthetic_root), val_fraction=0.99, image_size=32,
                             expected_counts={})
    with pytest.raises(DataError, match="data.val_fraction=0.99 leaves no training image"):
        dm.setup("fit")


# -- 4: a mistyped data path never trains on fake data ----------------------------------------


def test_typo_data_root_never_generates_synthetic_data(tmp_path):
    """A profile never switches the data source: profile=quick with a data.root reads that
    folder (and says it is not there), never the synthetic smears; data=synthetic with a
    data.root names both."""
    typo = tmp_path / "real" / "BCCD Datset with mask"
    proc = run("bloodseg.cli.train", ["profile=quick", f"data.root={typo}",
                                      f"hydra.run.dir={tmp_path / 'run'}"], REPO,
               in_process=True)
    assert proc.returncode == 2
    assert f"{typo}: dataset folder not found" in proc.stderr + proc.stdout
    assert "given with data=synthetic" not in proc.stderr + proc.stdout  # never typed by the user
    assert not typo.exists() and not (tmp_path / "real").exists()
    proc = run("bloodseg.cli.train", ["data=synthetic", "profile=quick", f"data.root={typo}",
                                      f"hydra.run.dir={tmp_path / 'run1'}"], REPO,
               in_process=True)
    assert proc.returncode == 2
    assert f"data.root={typo} was given with data=synthetic" in proc.stderr + proc.stdout
    proc = run("bloodseg.cli.train", ["profile=quick", f"hydra.run.dir={tmp_path / 'run3'}"],
               REPO, in_process=True)
    assert proc.returncode == 2 and "data=synthetic" in proc.stderr  # what to pass, said
    # and with real data chosen explicitly, the existing clear DataError
    proc = run("bloodseg.cli.train", ["profile=quick", "data=bbbc041seg", f"data.root={typo}",
                                      f"hydra.run.dir={tmp_path / 'run2'}"], REPO,
               in_process=True)
    assert proc.returncode != 0 and "dataset folder not found" in proc.stderr + proc.stdout
    assert not typo.exists()


def test_synthetic_data_goes_only_under_its_cache_dir(hydra_cfg, tmp_path):
    from hydra.utils import instantiate

    cfg = hydra_cfg(tmp_path, [*TINY])
    dm = instantiate(cfg.data)
    assert Path(dm.root).parent == Path(cfg.paths.data_dir) / "synthetic"
    other = hydra_cfg(tmp_path, [*TINY, "data.synthetic.n_train=9"])
    assert instantiate(other.data).root != dm.root, "another parameter must not reuse the cache"


# -- 5: sweeps report every failure -----------------------------------------------------------


@pytest.mark.slow
def test_sweep_runs_every_job_and_reports_each_failure(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run("bloodseg.cli.train", [
        "-m", "optimizer.lr=-1,1e-3,-2", "data=synthetic", "profile=quick", "test=false",
        "trainer.max_epochs=1", f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep}"], REPO, in_process=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "3 jobs: 1 ok, 2 failed" in out
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert len(jobs) == 3
    for job, failed in zip(jobs, (True, False, True)):
        assert (job / "error.txt").is_file() == failed
        if failed:
            assert "Invalid learning rate" in (job / "error.txt").read_text()
            assert str(job) in out
            log_text = "".join(p.read_text() for p in job.glob("*.log"))
            assert "Invalid learning rate" in log_text, "the job log must hold the error"
        else:
            assert json.loads((job / "meta.json").read_text())["status"] == "completed"
