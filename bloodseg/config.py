"""OmegaConf resolvers used by the configs in ``conf/`` (registered on import of bloodseg).

Also the config groups as registries: :func:`group_names`, :func:`group_config`.

- ``${channels:${data.color}}``: 1 for gray, 3 for rgb, so models follow the data.
- ``${job_gpu:}``: ``[k mod N]`` for sweep job k on a machine with N GPUs, so a joblib
  sweep puts one job on each GPU (lightning-hydra-template issues #415, #514).
- ``${cuda:}``: whether a GPU is present (pinned-memory loaders).
- ``${gpu_jobs:}``: how many jobs joblib runs at once: the GPU count, else 2.
- ``${wandb_offline:}``: W&B stays offline (no prompt, no network) unless the user is
  logged in or sets ``WANDB_MODE``.
- ``${wandb_group:}``: runs of one sweep share a W&B group (the sweep folder's name).
- ``${is_set:callbacks.progress_bar}``: whether that key holds a value (not null, not
  missing), so ``callbacks.progress_bar=null`` also turns off Lightning's default bar.
- ``${dirname:${hydra.job.override_dirname},${name}}``: a sweep job's folder name from its
  overrides, as one safe path component (see :func:`dirname`).
"""

from __future__ import annotations

import netrc
import os
import re
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf


def conf_dir() -> Path:
    """The config folder: ``bloodseg/conf`` inside an installed wheel (pyproject.toml maps
    ``conf/`` there), else ``conf/`` beside the package (a checkout or an editable install)."""
    installed = Path(str(resources.files("bloodseg"))) / "conf"
    if (installed / "train.yaml").is_file():
        return installed
    return Path(__file__).resolve().parents[1] / "conf"


# an absolute path keeps Hydra from resolving it as a Python package when the entry point is
# imported by a shim
CONF_DIR = str(conf_dir().resolve())


def _channels(color: str) -> int:
    from bloodseg.transforms import channels

    return channels(color)


class UnknownNameError(KeyError):
    """``KeyError`` for an unknown name, whose message lists the valid ones."""

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message, quoting it and escaping its newlines
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, valid: list[str]) -> UnknownNameError:
    return UnknownNameError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}")


def group_names(group: str) -> list[str]:
    """The options of a config group (``conf/<group>/*.yaml``): the group's registry."""
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def group_config(group: str, name: str, **overrides) -> dict:
    """``conf/<group>/<name>.yaml`` as a plain dict, with ``overrides`` merged in.

    Values that interpolate other groups (e.g. ``in_channels: ${data.in_channels}``) and are
    not overridden are dropped, so the class default applies; ``oc.select`` values with a
    default (what a profile may set) keep that default.
    """
    path = Path(CONF_DIR) / group / f"{name}.yaml"
    if not path.is_file():
        raise unknown_name(group, name, group_names(group))
    cfg = OmegaConf.load(path)
    raw = OmegaConf.to_container(cfg, resolve=False)
    for key in list(cfg.keys()):
        if key in overrides:
            del cfg[key]
        elif OmegaConf.is_interpolation(cfg, key):
            try:  # on its own: ${oc.select:profile_network.base_channels,64} gives its default
                cfg[key] = OmegaConf.create({"v": raw[key]}).v
            except Exception:  # noqa: BLE001  (it needs another group: ${data.in_channels})
                del cfg[key]
    cfg.pop("defaults", None)
    return {**OmegaConf.to_container(cfg, resolve=True), **overrides}


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


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


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


def is_set(key: str, *, _root_) -> bool:
    return OmegaConf.select(_root_, key, default=None) is not None


DIRNAME_MAX = 150  # characters; file systems allow 255 bytes per folder name


def _short(value: float) -> str:
    text = f"{value:.4g}"
    return f"{value:.0f}" if "e+" in text else text  # "+" separates overrides


def dirname(overrides: str, fallback: str = "") -> str:
    """``overrides`` (Hydra's ``override_dirname``) as one folder name that a Hydra override
    can name unquoted (``ckpt_path=<sweep>/<job>/checkpoints/last.ckpt``): characters other
    than letters, digits and ``_ . + - @ %`` become ``_`` (no ``/``, ``=``, ``,`` or spaces),
    long decimals keep 4 significant digits, config-group choices come first, and the name
    ends after the last whole override within :data:`DIRNAME_MAX` characters (the job number
    in front keeps names unique);
    ``fallback`` (the run name) when there are no overrides."""
    def safe(text: str) -> str:
        # sampled floats (Optuna's 0.00035090148857968553) to 4 significant digits: the
        # exact values are in the job's .hydra/overrides.yaml
        text = re.sub(r"\d*\.\d{5,}(?:e[-+]?\d+)?", lambda m: _short(float(m.group())),
                      str(text))
        return re.sub(r"[^\w.+\-@%]", "_", text, flags=re.ASCII).strip("_.")

    # config-group choices (model-unet) before values (data.batch_size-2): what a sweep
    # varies most often survives the cut; "+" is conf/hydra/default.yaml's item_sep
    items = safe(overrides).split("+")
    items.sort(key=lambda item: "." in item.split("-", 1)[0])
    name = "+".join(i for i in items if i) or safe(fallback)
    if len(name) > DIRNAME_MAX:  # whole overrides (item_sep "+") rather than half of one
        cut = name[:DIRNAME_MAX]
        name = cut.rsplit("+", 1)[0] if "+" in cut else cut
    return name.rstrip("_.+-") or "job"


def to_plain(value):
    """A (Dict/List)Config as plain containers, resolved; anything else as it is."""
    from omegaconf import DictConfig, ListConfig

    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def instantiate_group(group) -> list:
    """Instantiate every non-null entry of a callbacks/logger group."""
    from hydra.utils import instantiate

    return [instantiate(c) for c in (group or {}).values() if c and "_target_" in c]


def state_dir(command: str = "") -> str:
    """Where commands that are not training keep their Hydra/log folders unless told
    otherwise: ``$XDG_STATE_HOME/bloodseg`` (``~/.local/state/bloodseg``), never the current
    folder, which may be a read-only data share."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(base) / "bloodseg" / command)


def register_resolvers() -> None:
    for name, fn in {
        "channels": _channels,
        "job_gpu": job_gpu,
        "gpu_jobs": gpu_jobs,
        "cuda": cuda,
        "wandb_offline": wandb_offline,
        "wandb_group": wandb_group,
        "is_set": is_set,
        "dirname": dirname,
        "state_dir": state_dir,
    }.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)
