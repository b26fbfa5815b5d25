"""DDP inside Hydra runs and sweeps: each job's DDP workers run that job's config.

Lightning starts DDP workers by re-running the script with ``sys.argv`` plus
``hydra.run.dir=<run dir>``. Inside a ``-m`` sweep that replays the whole sweep in every
worker and points the workers at the wrong folder (lightning-hydra-template issues #393,
#90). Here workers instead load the job's own *resolved* config (``.hydra/resolved.yaml``,
written by :func:`bloodseg.training.train`) and use the job's output folder as their run dir.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

RESOLVED_CONFIG = "resolved"


def hydra_ddp_command(local_rank: int) -> tuple[Sequence[str], str]:
    """Command and cwd for DDP worker ``local_rank`` of the current Hydra job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import get_original_cwd

    from bloodseg.quoting import quote_value

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    command = [
        sys.executable, "-m", "bloodseg.cli.train",
        "--config-path", str(out / ".hydra"),
        "--config-name", RESOLVED_CONFIG,
        f"hydra.run.dir={quote_value(str(out))}",  # run dirs may hold spaces, quotes, '='...
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
    ]
    return command, get_original_cwd()


def install() -> None:
    """Route Lightning's Hydra-aware DDP launcher through :func:`hydra_ddp_command`."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    subprocess_script._hydra_subprocess_cmd = hydra_ddp_command


# Set by Lightning in the launching process; left behind they make the next job of a
# sweep believe its workers already exist ("creates_processes_externally").
DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED")


def snapshot_env() -> dict[str, str | None]:
    import os

    return {k: os.environ.get(k) for k in DDP_ENV}


def reset(snapshot: dict[str, str | None]) -> None:
    """Undo one job's DDP state so the next job in this process starts clean."""
    import os

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in snapshot.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
