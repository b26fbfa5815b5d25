"""Resume after a real SIGKILL: same run folder, continued epochs, full metrics history, and
the same weights as a run that was never interrupted."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers.cli import start
from tests.helpers.runs import TINY, read_csv

MAX_EPOCHS = 3  # killed in the last epoch (>= 2), resumed there
TRAIN_IMAGES = 60  # 27 steps of 2 images an epoch: long enough to kill mid-epoch reliably
OVERRIDES = [
    *TINY, f"data.synthetic.n_train={TRAIN_IMAGES}", "data.synthetic.size=[32,32]",
    "data.image_size=32", "model=unet", "model.base_channels=4",
    "trainer.deterministic=true", "trainer.log_every_n_steps=1", "seed=7",
    f"trainer.max_epochs={MAX_EPOCHS}", "test=false",
]


def start_training(tmp_path: Path, run: Path, *extra: str) -> subprocess.Popen:
    log = open(tmp_path / f"{run.name}.log", "a")
    with log:  # the same thread count in every run: the same float sums
        return start("bloodseg.cli.train", [
            *OVERRIDES, f"paths.data_dir={tmp_path / 'data'}", f"hydra.run.dir={run}",
            *extra], tmp_path, env={"OMP_NUM_THREADS": "1"}, stdout=log,
            stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, tmp_path: Path, run: Path, timeout: float = 120) -> None:
    rc = proc.wait(timeout=timeout)
    assert rc == 0, (tmp_path / f"{run.name}.log").read_text()[-3000:]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def step_epochs(run: Path) -> set[int]:
    """Epochs with a per-step training row in metrics.csv so far (the file may be mid-write)."""
    try:
        rows = read_csv(run / "metrics.csv")
    except (OSError, csv.Error):
        return set()
    return {int(r["epoch"]) for r in rows
            if r.get("train/loss_step") and (r.get("epoch") or "").isdigit()}


def kill_mid_epoch(proc: subprocess.Popen, tmp_path: Path, run: Path,
                   timeout: float = 90) -> None:
    """SIGKILL once last.ckpt holds epoch >= 1 and the next epoch has logged steps."""
    last = run / "checkpoints" / "last.ckpt"
    seen, epoch = None, None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"training ended before it could be killed (last.ckpt: epoch {epoch}; "
                        "it must be rewritten every epoch):\n"
                        + (tmp_path / f"{run.name}.log").read_text()[-3000:])
        if last.is_file() and last.stat().st_mtime_ns != seen:
            seen = last.stat().st_mtime_ns
            epoch = load(last)["epoch"]  # ModelCheckpoint writes atomically (fsspec rename)
        if epoch is not None and epoch >= 1 and epoch + 1 in step_epochs(run):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            return
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"no last.ckpt of epoch >= 1 within {timeout}s (last.ckpt: epoch {epoch})")


def test_csv_logger_continues_metrics_csv(tmp_path):
    from bloodseg.loggers import CSVLogger

    first = CSVLogger(tmp_path, name="", version="")
    for step in range(4):
        first.log_metrics({"loss": float(step)}, step=step)
    first.save()
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("9.0")  # a row cut short by the kill
    # resumed from a checkpoint at step 2: the old rows of steps 2 and 3 are the stale tail
    resumed = CSVLogger(tmp_path, name="", version="")
    resumed.log_metrics({"loss": 20.0, "lr": 0.5}, step=2)  # a new column rewrites the header
    resumed.save()
    rows = [(r["step"], r["loss"], r["lr"]) for r in read_csv(tmp_path / "metrics.csv")]
    assert rows == [("0", "0.0", ""), ("1", "1.0", ""), ("2", "20.0", "0.5")]


@pytest.mark.slow
def test_resume_after_sigkill_continues_the_run(tmp_path):
    """Needs last.ckpt rewritten every epoch and the RNG states in the checkpoint."""
    full, run = tmp_path / "full", tmp_path / "run"
    uninterrupted = start_training(tmp_path, full)  # side by side, one thread each
    try:
        proc = start_training(tmp_path, run)
        kill_mid_epoch(proc, tmp_path, run)
        finish(uninterrupted, tmp_path, full)
    finally:
        if uninterrupted.poll() is None:
            uninterrupted.kill()
            uninterrupted.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = load(run / "checkpoints" / "last.ckpt")
    resumed_epoch = killed_at["epoch"] + 1
    assert 2 <= resumed_epoch < MAX_EPOCHS, "the kill must leave epochs to resume"
    before = read_csv(run / "metrics.csv")
    assert any(int(r["step"]) >= killed_at["global_step"] for r in before), \
        "no rows logged after the checkpoint: the stale tail a resume drops is not exercised"

    finish(start_training(tmp_path, run, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"),
           tmp_path, run)

    # (a) the counters continued from the checkpoint to where an uninterrupted run ends
    want, got = load(full / "checkpoints" / "last.ckpt"), load(run / "checkpoints" / "last.ckpt")
    assert got["epoch"] == want["epoch"] == MAX_EPOCHS - 1
    assert got["global_step"] == want["global_step"]

    # (b) one metrics.csv with the whole history: the rows logged before the checkpoint are
    # kept as they were, every epoch has its train and val rows once, none twice
    rows = read_csv(run / "metrics.csv")
    assert not list(run.glob("metrics-v*.csv"))
    kept = [r for r in before if int(r["step"]) < killed_at["global_step"]]
    assert rows[:len(kept)] == kept
    for key in ("val/loss", "train/loss_epoch"):
        epochs = [int(r["epoch"]) for r in rows if r.get(key)]
        assert epochs == list(range(MAX_EPOCHS)), (key, epochs)
    steps = [(int(r["epoch"]), int(r["step"])) for r in rows if r.get("train/loss_step")]
    assert steps == sorted(set(steps)) and len(steps) == want["global_step"]
    resumed_steps = [int(r["step"]) for r in rows[len(kept):] if r.get("train/loss_step")]
    assert resumed_steps[0] == killed_at["global_step"]  # continued, not restarted at 0
    # deterministic training: the resumed history is the uninterrupted one, value for value
    assert rows == read_csv(full / "metrics.csv")

    # (c) bit-identical weights (and optimizer state) to the uninterrupted run
    assert got["state_dict"].keys() == want["state_dict"].keys()
    for name, tensor in want["state_dict"].items():
        assert torch.equal(got["state_dict"][name], tensor), name
    for a, b in zip(got["optimizer_states"][0]["state"].values(),
                    want["optimizer_states"][0]["state"].values()):
        for k in b:
            assert torch.equal(a[k], b[k]), k
