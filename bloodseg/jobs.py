"""Hydra callbacks around every job and sweep, light enough for every command (no torch, no
Lightning): :class:`QuietLightning` silences Lightning's advertising at the start of each job,
:class:`SweepSummary` reports every job's outcome after a sweep.

End-of-sweep summary: every job's outcome, read from the job folders.

A failed job records its error in its folder (``error.txt``, see :mod:`bloodseg.rundir`) and
the sweep goes on with the other jobs (basic and joblib launchers alike: the jobs' folders
are the one record all launchers share). After the last job, this Hydra callback prints
``3 jobs: 1 ok, 2 failed`` with each failed folder and its error, and makes the command
exit non-zero if any job failed. Registered in ``conf/hydra/default.yaml``.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bloodseg import rundir

log = logging.getLogger(__name__)


def job_outcomes(sweep_dir: str | Path) -> list[tuple[Path, str, str | None]]:
    """``(job folder, "ok" | "failed" | "unfinished", error line)`` for each job of a sweep."""
    outcomes = []
    for job in sorted(p for p in Path(sweep_dir).iterdir() if (p / ".hydra").is_dir()):
        error = rundir.read_error(job)
        if error is not None:
            outcomes.append((job, "failed", error))
            continue
        try:
            status = rundir.read_meta(job).get("status", "completed")
        except rundir.RunDirError:
            status = "unfinished"
        outcomes.append((job, "ok" if status == "completed" else "unfinished", None))
    return outcomes


def summary(outcomes: list[tuple[Path, str, str | None]]) -> str:
    counts = {k: sum(1 for _, s, _ in outcomes if s == k) for k in ("ok", "failed", "unfinished")}
    head = f"{len(outcomes)} jobs: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
    lines = [head + (":" if counts["failed"] or counts["unfinished"] else "")]
    lines += [f"  {job}: {error or status}" for job, status, error in outcomes if status != "ok"]
    return "\n".join(lines)


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        outcomes = job_outcomes(sweep_dir)
        text = summary(outcomes)
        bad = any(status != "ok" for _, status, _ in outcomes)
        (log.error if bad else log.info)("%s", text)
        if bad:
            print(text, flush=True)
            raise SystemExit(1)


# -- Lightning's noise -----------------------------------------------------------------------

# rank_zero_info goes through these loggers (Lightning sets one or the other at import)
_RANK_ZERO_LOGGERS = ("pytorch_lightning.utilities.rank_zero",
                      "lightning_fabric.utilities.rank_zero")


def _not_a_tip(record: logging.LogRecord) -> bool:
    # "💡 Tip: ... try installing litlogger / litmodels": advertising, on every run
    return not str(record.msg).lstrip().startswith("💡 Tip")


def quiet_lightning() -> None:
    """Drop Lightning's "💡 Tip" lines and the ``LeafSpec`` deprecation warning torch raises
    inside Lightning's own ``_pytree`` helper (nothing a user can act on); every other
    message and warning stays. Idempotent."""
    for name in _RANK_ZERO_LOGGERS:
        logger = logging.getLogger(name)
        if _not_a_tip not in logger.filters:
            logger.addFilter(_not_a_tip)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)


class QuietLightning(Callback):
    """Hydra callback: :func:`quiet_lightning` at the start of every job (in the process
    that runs it, launcher workers included)."""

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        quiet_lightning()
