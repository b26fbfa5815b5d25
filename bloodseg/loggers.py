"""``CSVLogger`` that keeps a run's history when training resumes into the same run folder.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts, so
``python train.py ... ckpt_path=<run>/checkpoints/last.ckpt hydra.run.dir=<run>`` used to
restart the curves at the resumed epoch. :class:`CSVLogger` (``logger=csv``) continues the
file instead: the rows logged before the checkpoint stay, the resumed rows follow them with
the epoch/step numbers Lightning restores from the checkpoint, and a new metric column still
rewrites the header the way Lightning does.
"""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from bloodseg.io import naming_errors


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, minus the delete: continues an existing ``metrics.csv``.

    The old rows at or after the first step logged now are dropped once, with the first
    save: the interrupted run logged them after its checkpoint and the resumed run logs
    those steps again. (A fresh run into an old folder thus drops every old row, as before.)
    """

    _continuing = False

    def _check_log_dir_exists(self) -> None:
        # Lightning removes metrics.csv here; keep it and adopt its header, so save() appends
        # (and rewrites the file only when a new metric column appears).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])
            self._continuing = True

    def save(self) -> None:
        with naming_errors(self.metrics_file_path):  # a full disk names metrics.csv
            if self._continuing and self.metrics:
                self._continuing = False
                self._drop_rows_from(min(int(m["step"]) for m in self.metrics))
            super().save()

    def _drop_rows_from(self, step: int) -> None:
        # ExperimentWriter can only append or rewrite the header: truncating is ours
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        # (a row cut short by the kill has missing fields: None)
        kept = [r for r in rows if None not in r.values() and r.get("step", "").isdigit()
                and int(r["step"]) < step]
        if len(kept) < len(rows):
            with self._fs.open(self.metrics_file_path, "w", newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
                writer.writeheader()
                writer.writerows(kept)


class CSVLogger(_LightningCSVLogger):
    """``pytorch_lightning.loggers.CSVLogger`` that continues an existing ``metrics.csv``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
