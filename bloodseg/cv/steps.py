"""One step of a fold (``bloodseg-train``, ``bloodseg-tune``, ``bloodseg-evaluate``) as a
timed subprocess, its output in a log.

Each step is its command run as a user would (``python -m bloodseg.cli.<command>``), so a
fold's run folder is exactly what the command leaves, and a crash, a leak or a CUDA context
ends with the step. The CPU time is the child's own (``RUSAGE_CHILDREN`` before and after), so
a fold's cost is what its training used, whatever else the machine was doing.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["COMMANDS", "children_cpu", "command", "run_logged", "tail"]

#: the command line of each step, before its overrides (tests put a stand-in here)
COMMANDS = {name: [sys.executable, "-m", f"bloodseg.cli.{name}"]
            for name in ("train", "tune", "evaluate")}


def command(step: str, overrides: Sequence[str]) -> list[str]:
    """The command line of ``step`` (``train``, ``tune``, ``evaluate``) with ``overrides``."""
    return [*COMMANDS[step], *overrides]


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_logged(cmd: Sequence[str], log: Path, cwd: Path | None = None, append: bool = False
               ) -> tuple[int, float, float]:
    """(exit code, wall s, CPU s) of ``cmd`` run in ``cwd`` without standard input, its
    output written to ``log`` (``append``: after the log's earlier steps, each headed by its
    command line)."""
    env = os.environ | {"HYDRA_FULL_ERROR": "1", "PYTHONUNBUFFERED": "1"}
    cpu0, t0 = children_cpu(), time.perf_counter()
    with open(log, "ab" if append else "wb") as out:
        if append:
            out.write(f"$ {shlex.join(cmd)}\n".encode())
            out.flush()
        rc = subprocess.run(list(cmd), cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, env=env).returncode
    return rc, time.perf_counter() - t0, children_cpu() - cpu0


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` of a log ("" when there is none)."""
    if not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
