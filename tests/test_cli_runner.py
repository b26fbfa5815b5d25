"""tests/helpers/cli.py: a command run in this process answers as its own process does."""

from __future__ import annotations

import logging
import os
import sys

from tests.helpers.cli import run


def test_in_process_runs_answer_as_the_process_does(tmp_path):
    """Exit status, stdout and the messages on stderr of a command that stops before Hydra
    (an unquoted path: exit 2 and the fix) and of one that prints (the shipped models). (A
    Hydra job's run folder and log, in-process: test_predict.py; a new process for it costs
    seconds of importing Lightning.)"""
    for command, args in (("bloodseg.cli.predict", ["ckpt_path=x", "input=/data/dätä"]),
                          ("bloodseg.cli.weights", [])):
        process = run(command, args, tmp_path)
        inside = run(command, args, tmp_path, in_process=True)
        assert inside.returncode == process.returncode, (command, inside.stderr)
        assert inside.stdout == process.stdout, command
        assert [line for line in process.stderr.splitlines() if line in inside.stderr] == \
            process.stderr.splitlines(), (command, process.stderr, inside.stderr)
    assert process.returncode == 0 and process.stdout.startswith("count_real")


def test_in_process_runs_leave_this_process_as_it_was(tmp_path):
    root = logging.getLogger()
    before = (sys.argv[:], os.getcwd(), dict(os.environ), root.handlers[:], root.level)
    done = run("bloodseg.cli.predict", ["weights=list", f"hydra.run.dir={tmp_path / 'h'}"],
               tmp_path, env={"EXTRA": "1"}, in_process=True)
    assert done.returncode == 0
    assert (sys.argv, os.getcwd(), dict(os.environ), root.handlers, root.level) == before
