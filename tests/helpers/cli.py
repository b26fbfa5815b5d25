"""Running a command as a user would: ``run(command, args, cwd)``, or ``start`` it in the
background.

``command`` is a module, run as ``python -m <module>`` (``"bloodseg.cli.predict"``), or a
script, run as ``python <script>`` (``REPO / "train.py"``, a name ending in ``.py``). A new
process is what a test of the process itself needs: exit on a signal, locks between processes,
DDP workers, an installed copy, a command's start-up. It also costs seconds, spent importing
torch and Lightning, so where a test is about what the command does rather than the process
around it, ``in_process=True`` calls the command's ``main`` in this process instead, as the
process would: with its ``sys.argv``, working folder, environment, stdout and stderr, the exit
status taken from ``SystemExit`` (an exception that escapes prints its traceback and gives 1,
as Python does), and Hydra's global state, the logging it configures, the warning filters and
torch's thread count and deterministic mode a run sets undone afterwards. Hydra parses the
same command line and writes the same run folder and logs either way.

Commands get this process's environment without W&B settings (the code itself must keep W&B
offline and quiet) and with this checkout first on ``PYTHONPATH``; ``env`` adds to it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: scripts that only call a command module's ``main`` (ARCHITECTURE.md: ``train.py`` is a shim)
SHIMS = {REPO / "train.py": "bloodseg.cli.train"}


def environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """What a command's process gets: ours, no ``WANDB_*``, this checkout importable, ``env``."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                        if p)
    out.update(env or {})
    return out


def _script(command: str | Path) -> Path | None:
    if str(command).endswith(".py"):
        path = Path(command)
        return path if path.is_absolute() else REPO / path
    return None


def command_line(command: str | Path, args: Sequence[object]) -> list[str]:
    script = _script(command)
    head = [str(script)] if script else ["-m", str(command)]
    return [sys.executable, *head, *map(str, args)]


def run(command: str | Path, args: Sequence[object], cwd: str | Path, *,
        env: Mapping[str, str] | None = None, timeout: float = 600,
        in_process: bool = False) -> subprocess.CompletedProcess:
    """The command's exit status, stdout and stderr (text), run to the end."""
    if in_process:
        return _call_main(command, [str(a) for a in args], Path(cwd), env)
    return subprocess.run(command_line(command, args), cwd=cwd, env=environment(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def start(command: str | Path, args: Sequence[object], cwd: str | Path, *,
          env: Mapping[str, str] | None = None, **popen) -> subprocess.Popen:
    """The command started in a new process (text mode, no stdin); ``popen`` as for Popen."""
    return subprocess.Popen(command_line(command, args), cwd=cwd, env=environment(env),
                            stdin=subprocess.DEVNULL, text=True, **popen)


# -- in this process ---------------------------------------------------------------------------


def _call_main(command: str | Path, args: list[str], cwd: Path,
               env: Mapping[str, str] | None) -> subprocess.CompletedProcess:
    from hydra.core.global_hydra import GlobalHydra

    script = _script(command)
    module = SHIMS.get(script) if script else str(command)
    if module is None:
        raise ValueError(f"{command}: no command module known to run in this process")
    main = importlib.import_module(module).main
    argv0 = str(script) if script else importlib.util.find_spec(module).origin
    out, err = io.StringIO(), io.StringIO()
    GlobalHydra.instance().clear()
    try:
        with _as_a_process(argv0, args, cwd, env), contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            code = _exit_status(main)
    finally:
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess([argv0, *args], code, out.getvalue(), err.getvalue())


def _exit_status(main) -> int:
    try:
        main()
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    except Exception:  # noqa: BLE001 - what the interpreter does with it, then exit 1
        traceback.print_exc()
        return 1
    return 0


@contextlib.contextmanager
def _as_a_process(argv0: str, args: list[str], cwd: Path,
                  env: Mapping[str, str] | None) -> Iterator[None]:
    argv, here, environ = sys.argv, os.getcwd(), dict(os.environ)
    loggers, torch_state = _logging_state(), _torch_state()
    try:
        with warnings.catch_warnings():
            sys.argv = [argv0, *args]
            os.chdir(cwd)
            os.environ.clear()
            os.environ.update(environment(env))
            yield
    finally:
        sys.argv = argv
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        _restore_logging(loggers)
        _restore_torch(torch_state)


def _torch_state() -> tuple | None:
    """What a run may set for the whole process: Lightning's DDP on a CPU sets the thread
    count, ``trainer.deterministic`` the deterministic algorithms."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    return (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())


def _restore_torch(state: tuple | None) -> None:
    torch = sys.modules.get("torch")
    if torch is None or state is None:
        return
    threads, deterministic, warn_only = state
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                   if isinstance(logger, logging.Logger))]


def _logging_state() -> dict[logging.Logger, tuple]:
    return {lg: (lg.handlers[:], lg.filters[:], lg.level, lg.propagate, lg.disabled)
            for lg in _loggers()}


def _restore_logging(state: dict[logging.Logger, tuple]) -> None:
    """Undo what the run configured: Hydra's job logging replaces the root's handlers, a job
    callback filters Lightning's loggers (bloodseg.console.quiet_lightning)."""
    for logger in _loggers():
        handlers, filters, level, propagate, disabled = state.get(
            logger, ([], [], logging.NOTSET, True, False))
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:], logger.filters[:] = handlers, filters
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled
