"""What a training prints: one log line per epoch off a terminal, and less of Lightning's noise.

Under nohup, SLURM or CI, Rich's live bar is drawn once, when training ends, and never
reaches ``train.log``. There :class:`EpochLog` logs one line per epoch through Python logging
(so to stdout and to the Hydra job log)::

    epoch 3/12  train/loss 0.1234  val/loss 0.1012  val/count_mae_trainres 2.4  41 s  ETA 6.2 min

In a terminal the Rich bar stays (:class:`RichProgressBar`, which steps aside off a terminal).
:class:`ModelSummary` logs the model table without the FLOPs column Lightning fills with
zeros when the module has no ``example_input_array``; :func:`bloodseg.jobs.quiet_lightning`
(run for each Hydra job, see ``conf/hydra/default.yaml``) drops Lightning's
advertising tips and a deprecation warning Lightning itself triggers inside torch. All of it
is configured in ``conf/callbacks/default.yaml``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelSummary as _ModelSummary
from pytorch_lightning.callbacks import RichProgressBar as _RichProgressBar

from bloodseg.progress import Eta, duration

log = logging.getLogger(__name__)

__all__ = ["EpochLog", "ModelSummary", "RichProgressBar", "is_terminal"]

DEFAULT_METRICS = ("train/loss", "val/loss", "val/count_mae_trainres")


def is_terminal() -> bool:
    """Whether stdout is a live terminal, decided as Rich decides whether to animate its bar
    (so the bar and the epoch lines never both show, nor both hide)."""
    from rich import get_console

    console = get_console()
    return bool(console.is_terminal or console.is_jupyter)


class RichProgressBar(_RichProgressBar):
    """Lightning's Rich bar in a terminal; off one it disables itself (it would only print
    its final state once training ends) and :class:`EpochLog` reports instead."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not is_terminal():
            self.disable()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):  # e.g. a tensor of several values
        return None


class EpochLog(pl.Callback):
    """One INFO line per finished training epoch: the epoch, ``metrics`` (3-4 significant
    digits), the epoch's time and the ETA of ``max_epochs``.

    Args:
        metrics: names as logged; ``train/loss`` also finds ``train/loss_epoch``. A metric
            not logged (yet) is left out of the line; validation metrics appear only in
            epochs that validated.
        always: log even when a live progress bar shows the progress (default: only off a
            terminal, or when the trainer has no enabled progress bar).
    """

    def __init__(self, metrics: Sequence[str] = DEFAULT_METRICS, always: bool = False) -> None:
        self.metrics = list(metrics)
        self.always = always
        self.active = False
        self._eta: Eta | None = None
        self._first_epoch = 0
        self._epoch_start = 0.0
        self._validated = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        bar = trainer.progress_bar_callback
        live_bar = bar is not None and not bar.is_disabled and is_terminal()
        self.active = trainer.is_global_zero and (self.always or not live_bar)
        self._first_epoch = trainer.current_epoch  # > 0 after a resume
        max_epochs = trainer.max_epochs
        self._eta = Eta(max_epochs - self._first_epoch) if max_epochs and max_epochs > 0 \
            else None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.monotonic()
        self._validated = False

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                                ) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def line(self, trainer: pl.Trainer) -> str:
        epoch = trainer.current_epoch + 1  # epochs done, as "epoch 3/12" reads
        total = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {epoch}{total}"]
        logged = trainer.callback_metrics
        for name in self.metrics:
            if name.startswith("val/") and not self._validated:
                continue
            value = next((_number(logged[k]) for k in (name, f"{name}_epoch") if k in logged),
                         None)
            if value is not None:
                parts.append(f"{name} {value:.4g}")
        parts.append(duration(time.monotonic() - self._epoch_start))
        if trainer.should_stop:
            parts.append("stopping early")
        elif self._eta is not None:
            left = self._eta.remaining(epoch - self._first_epoch)
            if left:
                parts.append(f"ETA {duration(left)}")
        return "  ".join(parts)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.active and not trainer.sanity_checking:
            log.info("%s", self.line(trainer))


class ModelSummary(_ModelSummary):
    """Lightning's model table, logged (so it reaches the job's log file, which Lightning's
    own logger does not), without the FLOPs column and total when nothing measured them
    (Lightning counts FLOPs only for a module with an ``example_input_array``)."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int,
                  trainable_parameters: int, model_size: float,
                  total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        # Lightning's own formatter, so the table looks as it always did
        from pytorch_lightning.utilities.model_summary.model_summary import (
            _format_summary_table,
        )

        if not total_flops:
            summary_data = [col for col in summary_data if col[0] != "FLOPs"]
        table = _format_summary_table(total_parameters, trainable_parameters, model_size,
                                      total_training_modes, total_flops, *summary_data)
        if not total_flops:
            table = "\n".join(ln for ln in table.splitlines() if not ln.endswith("Total Flops"))
        log.info("model:\n%s", table)
