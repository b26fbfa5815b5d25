"""OmegaConf resolvers used by the configs in ``conf/`` (registered on import of bloodseg).

- ``${channels:${data.color}}``: 1 for gray, 3 for rgb, so models follow the data.
- ``${job_gpu:}``: ``[k mod N]`` for sweep job k on a machine with N GPUs, so a joblib
  sweep puts one job on each GPU (lightning-hydra-template issues #415, #514).
- ``${gpu_jobs:}``: how many jobs joblib runs at once: the GPU count, else 2.
- ``${wandb_offline:}``: W&B stays offline (no prompt, no network) unless the user is
  logged in or sets ``WANDB_MODE``.
- ``${wandb_group:}``: runs of one sweep share a W&B group (the sweep folder's name).
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from omegaconf import OmegaConf

# conf/ sits beside the package (editable installs and checkouts); an absolute path keeps
# Hydra from resolving it as a Python package when the entry point is imported by a shim.
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


def _channels(color: str) -> int:
    from bloodseg.data.datamodule import channels

    return channels(color)


def _hydra_cfg():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def job_gpu() -> list[int] | int:
    """The GPU of this sweep job (job number mod GPU count); 1 device if not a sweep."""
    n = _gpu_count()
    hc = _hydra_cfg()
    num = hc.job.get("num") if hc is not None else None
    if n == 0 or num is None:
        return 1
    return [int(num) % n]


def gpu_jobs() -> int:
    return _gpu_count() or 2


def wandb_offline() -> bool:
    mode = os.environ.get("WANDB_MODE")
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        rc = netrc.netrc(os.environ.get("NETRC"))
        return rc.authenticators("api.wandb.ai") is None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return True


def wandb_group() -> str | None:
    from hydra.types import RunMode

    hc = _hydra_cfg()
    if hc is None or hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).name


def register_resolvers() -> None:
    for name, fn in {
        "channels": _channels,
        "job_gpu": job_gpu,
        "gpu_jobs": gpu_jobs,
        "wandb_offline": wandb_offline,
        "wandb_group": wandb_group,
    }.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)
