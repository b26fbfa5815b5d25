"""One benchmark step (``train.py``, ``bloodseg-tune``, ``bloodseg-evaluate``) as a timed
subprocess with its output in a log: what ``real_cv`` and ``cv_ensemble`` both run.

The CPU time is the child's own (``RUSAGE_CHILDREN`` before and after), so a fold's cost is
what its training used, whatever else the machine was doing.
"""

from __future__ import annotations

import os
import resource
import shlex
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def children_cpu() -> float:
    """User + system CPU seconds of this process's finished children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_logged(cmd: Sequence[str], log: Path, cwd: Path, append: bool = False
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
