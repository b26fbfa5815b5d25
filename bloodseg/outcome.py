"""A run's outcome: ``meta.json`` status, interruptions and the command that resumes a run.

:func:`run_recorded` wraps :func:`bloodseg.training.train` as LightningHydraTemplate's
``task_wrapper`` does: the run folder is claimed first (a folder another run writes to or left
results in is refused, :class:`bloodseg.rundir.RunFolderTaken`), ``meta.json`` says
``running``, then ``completed`` (written by the run), ``failed`` (+ ``error.txt``) or
``interrupted`` (Ctrl+C / SIGTERM, + the command that resumes it). In a sweep a failed job
returns None so the remaining jobs still run; :class:`bloodseg.jobs.SweepSummary` reports it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bloodseg import rundir
from bloodseg.io import USER_ERRORS
from bloodseg.quoting import quote_value
from bloodseg.training import is_ddp_worker, train

log = logging.getLogger(__name__)


def run_recorded(cfg: DictConfig) -> dict | None:
    """:func:`train`, with its outcome recorded in the run folder (``meta.json`` status and,
    on failure, ``error.txt`` + the job log). In a sweep a failed job returns None so the
    remaining jobs still run; :class:`bloodseg.jobs.SweepSummary` reports it at the end.
    A folder another run writes to or left results in is refused first
    (:class:`bloodseg.rundir.RunFolderTaken`), with nothing written into it."""
    out = Path(cfg.paths.output_dir)
    worker = is_ddp_worker()
    # DDP workers run inside the claim of the process that launched them
    lock = None if worker else rundir.claim(out, cfg.get("ckpt_path"))
    try:
        if not worker:
            rundir.clear_error(out)
            rundir.write_meta(out, {"name": cfg.name, "status": "running"})
        with noting_sigterm():
            return train(cfg)
    except BaseException as err:
        if was_interrupted(err):
            ignore_worker_deaths()
            if not worker:
                record_interrupted(cfg, out)
            raise interrupted_exit() from err
        if isinstance(err, ValueError) and isinstance(err, USER_ERRORS):
            # a user's mistake (bad data folder, model file or option): its one line, which
            # the command prints; error.txt keeps the traceback for a bug report
            log.debug("run failed: %s", err, exc_info=True)
        else:
            log.exception("run failed: %s", err)
        if not worker:
            rundir.write_failure(out, cfg.name, err)
        if in_sweep() and isinstance(err, Exception):
            return None
        raise
    finally:
        if lock is not None:
            lock.release()


# -- interruptions ---------------------------------------------------------------------------

SIGTERM_SEEN = threading.Event()


@contextlib.contextmanager
def noting_sigterm() -> Iterator[None]:
    """Remember a SIGTERM (scancel, kill, a CI time limit) so that :func:`run_recorded`
    records an interruption, not a failure: inside a fit Lightning's handler stops at the
    next batch, or the DataLoader's workers die of the same signal first (a RuntimeError
    "DataLoader worker ... killed"). Outside Lightning's handler (set-up, data loading) the
    signal ends the run as a SystemExit, unwinding like Ctrl+C."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    SIGTERM_SEEN.clear()

    def note(signum: int, frame) -> None:
        SIGTERM_SEEN.set()
        if signal.getsignal(signal.SIGTERM) is note:  # called directly, not by Lightning's
            raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, note)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_worker_deaths() -> None:
    """Switch off torch's SIGCHLD handler for the rest of an interrupted run: the signal that
    stopped the run kills the DataLoader workers too, and that handler raises "DataLoader
    worker ... killed" in whatever Python line runs when the next one dies (a CI run once
    crashed so inside ``record_interrupted``). The process is ending; nothing needs it."""
    sigchld = getattr(signal, "SIGCHLD", None)
    if sigchld is not None and threading.current_thread() is threading.main_thread():
        signal.signal(sigchld, signal.SIG_DFL)


#: how torch reports a DataLoader worker killed by SIGTERM (its SIGCHLD handler)
WORKER_TERMINATED = re.compile(r"DataLoader worker \(pid \d+\) is killed by signal: Terminated")


def was_interrupted(err: BaseException) -> bool:
    """Ctrl+C or SIGTERM, however it surfaced: Lightning turns a KeyboardInterrupt into
    ``sys.exit(1)`` and a SIGTERM into ``SIGTERMException`` (a SystemExit). A SIGTERM sent to
    the whole process group (scancel, a CI limit) also kills the DataLoader workers, and
    torch's SIGCHLD handler can raise "worker ... killed by signal: Terminated" inside
    Lightning's SIGTERM handler, before ours notes the signal: that is the same SIGTERM."""
    if isinstance(err, RuntimeError) and WORKER_TERMINATED.search(str(err)):
        SIGTERM_SEEN.set()
    return (SIGTERM_SEEN.is_set() or isinstance(err, KeyboardInterrupt)
            or isinstance(err.__context__, KeyboardInterrupt))


def _hydra_value(value: str | Path) -> str:
    """``value`` as a Hydra override value: quoted unless Hydra takes it as it is."""
    text = str(value)
    if re.fullmatch(r"[\w/.+\-@%]+", text, flags=re.ASCII):
        return text
    return quote_value(text)  # the one Hydra quoting (bloodseg.quoting), escapes as Hydra parses


def resume_command(cfg: DictConfig, out: Path) -> str:
    """The shell command that continues this run from its ``last.ckpt``, in its own folder
    (so ``metrics.csv`` goes on): the job's overrides, ``ckpt_path`` and ``hydra.run.dir``."""
    task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    keep = [o for o in task
            if o.split("=", 1)[0].lstrip("+~") not in ("ckpt_path", "hydra.run.dir")]
    args = [*keep, f"ckpt_path={_hydra_value(out / 'checkpoints' / 'last.ckpt')}",
            f"hydra.run.dir={_hydra_value(out)}"]
    return " ".join(["python train.py", *map(shlex.quote, args)])


def record_interrupted(cfg: DictConfig, out: Path) -> None:
    """``meta.json`` status ``interrupted``, with how to resume (no ``error.txt``: nothing
    failed, and the report and the sweep summary read that file as a failure)."""
    reason = "SIGTERM" if SIGTERM_SEEN.is_set() else "KeyboardInterrupt"
    resume = resume_command(cfg, out)
    log.warning("run interrupted (%s); resume with:\n  %s", reason, resume)
    rundir.write_meta(out, {
        "name": cfg.name, "status": "interrupted", "reason": reason,
        "max_epochs": cfg.trainer.get("max_epochs"), "data_kind": cfg.data.get("kind"),
        "color": cfg.data.get("color"), "resume": resume})


def interrupted_exit() -> SystemExit:
    """How an interrupted run ends: no traceback (the log says how to resume), and the exit
    status a shell gives a process killed by the signal (130 Ctrl+C, 143 SIGTERM)."""
    return SystemExit(128 + (signal.SIGTERM if SIGTERM_SEEN.is_set() else signal.SIGINT))

def in_sweep() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
