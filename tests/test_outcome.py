"""A run stopped by SIGTERM or Ctrl+C is recorded as interrupted, with the command that
resumes it, and the report draws it and says so (not "failed: DataLoader worker killed")."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from bloodseg.outcome import ignore_worker_deaths, was_interrupted
from bloodseg.report import find_runs
from tests.conftest import REPO
from tests.helpers import cli


def test_ctrl_c_however_lightning_rethrows_it_is_an_interruption():
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            sys.exit(1)  # what Lightning does after its graceful shutdown
    except SystemExit as err:
        assert was_interrupted(err)
    assert was_interrupted(KeyboardInterrupt())
    assert not was_interrupted(RuntimeError("DataLoader worker (pid 1) is killed by signal"))
    assert not was_interrupted(SystemExit(1))


@pytest.mark.skipif(not hasattr(signal, "SIGCHLD"), reason="no SIGCHLD on this platform")
def test_a_worker_dying_while_the_interruption_is_recorded_does_not_raise():
    # torch's DataLoader SIGCHLD handler raises in whatever line runs when a worker dies;
    # the SIGTERM that stopped the run kills the workers too (a CI run once crashed so)
    def torch_like(signum, frame):
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.")

    previous = signal.signal(signal.SIGCHLD, torch_like)
    try:
        with pytest.raises(RuntimeError, match="killed by signal"):  # the hazard is real
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            time.sleep(0.2)
        ignore_worker_deaths()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        time.sleep(0.2)
    finally:
        signal.signal(signal.SIGCHLD, previous)


@pytest.mark.slow
def test_sigterm_is_recorded_as_interrupted_with_a_resume_command(tmp_path):
    run = tmp_path / "run"
    # DataLoader workers, as on a cluster: the signal reaches them too and they die first
    args = ["data=synthetic", "profile=quick", "data.num_workers=2", "trainer.max_epochs=500",
            "callbacks.early_stopping=null", f"hydra.run.dir={run}",
            f"paths.data_dir={tmp_path / 'data'}"]
    proc = cli.start(REPO / "train.py", args, tmp_path, stdout=subprocess.PIPE,
                     stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (run / "checkpoints" / "last.ckpt").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no epoch finished"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGTERM)  # as scancel or a CI time limit: the whole group
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, output[-2000:]
    assert "Traceback" not in output  # a stop asked for, not a crash
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["reason"] == "SIGTERM", output[-3000:]
    assert not (run / "error.txt").exists()  # the report and the sweep summary read "failed"
    resume = meta["resume"]
    assert resume.startswith("python train.py data=synthetic profile=quick data.num_workers=2 ")
    assert f"ckpt_path={run}/checkpoints/last.ckpt hydra.run.dir={run}" in resume
    assert f"resume with:\n  {resume}" in output

    # the report draws its curves and lists it with the command
    found = find_runs([run])
    assert found.runs == [run.resolve()] and not found.failed
    [left] = found.unfinished
    assert left.reason.startswith("interrupted at epoch ")
    assert left.reason.endswith(f"/500 (SIGTERM); resume with: {resume}")

    # and Hydra takes the command as it is (--cfg job: compose, do not run)
    argv = shlex.split(resume)
    check = cli.run(REPO / "train.py", [*argv[2:], "--cfg", "job"], tmp_path,
                    in_process=True)
    assert check.returncode == 0, check.stderr[-2000:]
    assert f"ckpt_path: {run}/checkpoints/last.ckpt" in check.stdout


def test_workers_killed_by_the_groups_sigterm_are_that_sigterm():
    """A SIGTERM to the process group can surface first as torch's "DataLoader worker ...
    killed by signal: Terminated" (raised inside Lightning's SIGTERM handler, before ours
    runs): an interruption by SIGTERM (exit 143), not a failure. A worker killed otherwise
    (SIGKILL: the OOM killer) stays a failure."""
    from bloodseg import outcome

    outcome.SIGTERM_SEEN.clear()
    try:
        assert not outcome.was_interrupted(
            RuntimeError("DataLoader worker (pid 7) is killed by signal: Killed. "))
        assert not outcome.SIGTERM_SEEN.is_set()
        assert outcome.was_interrupted(
            RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated. "))
        assert outcome.interrupted_exit().code == 143
    finally:
        outcome.SIGTERM_SEEN.clear()
