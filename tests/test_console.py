"""Feedback outside a terminal: one line per epoch, k/N and an ETA for the tuning grid, a
quiet console, and callbacks.progress_bar=null meaning no bar at all."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate

from bloodseg.config import instantiate_group
from bloodseg.console import EpochLog, is_terminal
from bloodseg.jobs import quiet_lightning
from bloodseg.postprocess import Watershed
from bloodseg.progress import Eta, duration
from bloodseg.training import train
from bloodseg.tuning import TuningItem, search
from tests.helpers.runs import TINY


def test_durations_read_as_a_person_says_them():
    assert [duration(s) for s in (4.23, 41, 390, 75 * 60, 2 * 3600 + 5 * 60)] == [
        "4.2 s", "41 s", "6.5 min", "1 h 15 min", "2 h 05 min"]


def test_eta_is_mean_step_time_times_steps_left_and_logs_about_ten_lines():
    now = [0.0]
    eta = Eta(96, clock=lambda: now[0])
    now[0] = 30.0
    assert eta.line(3) == "3/96, 30 s, ETA 16 min"  # 10 s a step, 93 left: 15.5 min
    assert eta.line(96) == "96/96, 30 s"             # done: no ETA
    due = [k for k in range(1, 97) if eta.due(k)]
    assert due[0] == 1 and due[-1] == 96 and 10 <= len(due) <= 11
    assert [k for k in range(1, 4) if Eta(3).due(k)] == [1, 2, 3]


def test_tuning_logs_k_of_n_with_an_eta_in_a_few_lines(caplog):
    lab = np.zeros((64, 96), np.int32)
    for i, (y, x) in enumerate([(20, 20), (20, 46), (44, 70)], 1):
        cv2.circle(lab, (x, y), 11, i, -1)
    items = [TuningItem(f"im{i}", (lab > 0)[None].astype(np.float32), lab) for i in range(2)]
    grid = {"split_ratio": [0.7, 0.8, 0.9], "min_distance_frac": [0.3, 0.4, 0.5, 0.6],
            "cut_cell_frac": [0.0, 0.2, 0.4]}
    with caplog.at_level(logging.INFO, logger="bloodseg.tuning"):
        result = search(Watershed(), items, grid)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    n = len(result.rows)  # 4 x 4 x 3: the current split_ratio 0.85 joins the grid
    assert n == 48 and lines[0] == f"tuning the post-processing on 2 images: {n} tries"
    progress = lines[1:]
    assert 10 <= len(progress) <= 12, progress  # not one line per try
    assert progress[0].startswith(f"tuning 1/{n}, ") and "ETA" in progress[0]
    assert progress[-1].startswith(f"tuning {n}/{n}, ") and "ETA" not in progress[-1]
    assert all("best so far F1" in line for line in progress)


@pytest.mark.slow
def test_epoch_lines_model_summary_and_no_bar_off_a_terminal(hydra_cfg, tmp_path, caplog):
    """pytest captures stdout, so this is the nohup/SLURM/CI case."""
    assert not is_terminal()
    cfg = hydra_cfg(tmp_path, [*TINY, "model=unet", "model.base_channels=4",
                               "trainer.max_epochs=3", "callbacks.early_stopping.patience=1"])
    with caplog.at_level(logging.INFO, logger="bloodseg.console"):
        metrics = train(cfg)
    lines = [r.getMessage() for r in caplog.records]
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    # "epoch 1/3  train/loss 0.6949  val/loss 0.6876  val/count_mae_trainres 23  5.2 s  ETA 10 s"
    number = r"-?\d+(\.\d+)?(e[+-]\d+)?"
    pattern = (rf"epoch (\d)/3  train/loss {number}  val/loss {number}  "
               rf"val/count_mae_trainres {number}  \d+(\.\d)? s(  (ETA .+|stopping early))?")
    assert epochs and all(re.fullmatch(pattern, ln) for ln in epochs), epochs
    assert epochs[0].startswith("epoch 1/3") and "ETA" in epochs[0]
    assert all(len(v) <= 6 for ln in epochs for v in re.findall(r"\d+\.\d+", ln))  # ~4 digits
    history = pd.read_csv(Path(cfg.paths.output_dir) / "metrics.csv")
    val = history["val/loss"].dropna()
    assert len(epochs) == len(val)  # one line per epoch run (early stopping may cut it short)
    assert f"val/loss {val.iloc[0]:.4g}" in epochs[0]
    # the table, logged (so in train.log), without Lightning's all-zero FLOPs
    [summary] = [ln for ln in lines if ln.startswith("model:")]
    assert "UNet" in summary and "Total params" in summary and "FLOPs" not in summary
    assert "Flops" not in summary
    # the objective a sweeper gets: the checkpoint's best val/loss, not a test metric
    assert metrics["val/loss"] == pytest.approx(val.min(), abs=1e-4)


def test_null_progress_bar_means_no_bar_at_all(hydra_cfg, tmp_path):
    cfg = hydra_cfg(tmp_path, [*TINY])  # TINY sets callbacks.progress_bar=null
    trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.callbacks), logger=False)
    assert trainer.progress_bar_callback is None  # Lightning added no default TQDM/Rich bar
    cfg = hydra_cfg(tmp_path, [a for a in TINY if "progress_bar" not in a])
    trainer = instantiate(cfg.trainer, callbacks=instantiate_group(cfg.callbacks), logger=False)
    bar = trainer.progress_bar_callback
    assert type(bar).__module__ == "bloodseg.console" and bar.is_disabled  # not a terminal


def test_epoch_log_stays_quiet_under_a_live_bar(monkeypatch):
    monkeypatch.setattr("bloodseg.console.is_terminal", lambda: True)
    from bloodseg.console import RichProgressBar

    bar = RichProgressBar()
    trainer = pl.Trainer(callbacks=[bar, EpochLog()], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, max_epochs=1)
    [log_cb] = [c for c in trainer.callbacks if isinstance(c, EpochLog)]
    log_cb.on_train_start(trainer, None)
    assert not bar.is_disabled and not log_cb.active
    always = EpochLog(always=True)
    always.on_train_start(trainer, None)
    assert always.active


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_quiet_lightning_drops_the_tips_and_the_pytree_warning_only():
    from pytorch_lightning.utilities._pytree import _tree_flatten

    lightning, seen = logging.getLogger("pytorch_lightning"), Lines()
    lightning.addHandler(seen)
    try:
        pl.Trainer(logger=False, enable_model_summary=False, enable_progress_bar=False)
        assert any("Tip" in ln for ln in seen.lines)  # what there is to silence
        seen.lines.clear()
        quiet_lightning()
        pl.Trainer(logger=False, enable_model_summary=False, enable_progress_bar=False)
    finally:
        lightning.removeHandler(seen)
    assert not any("Tip" in ln for ln in seen.lines)
    assert any("GPU available" in ln for ln in seen.lines)  # the rest of Lightning speaks
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()  # its filter goes in front of "always"
        _tree_flatten({"a": torch.zeros(1)})  # Lightning's helper builds a LeafSpec
        warnings.warn("something else", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
