"""Shared fixtures: synthetic data in tmp folders, real-data paths, composed Hydra configs."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

import bloodseg  # noqa: F401  (resolvers)
from tests.helpers.runs import TINY

# A shell without job control starts background jobs with SIGINT ignored, and an ignored
# signal stays ignored in every child: Ctrl+C tests (a subprocess sent SIGINT) would hang.
# A handler is not inherited across exec, so restoring one here gives children the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

# Under pytest-xdist (make test runs one worker per core) each worker and the commands it
# starts get one torch thread: two workers of two threads each on two cores lose to contention.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# predict.backend=auto caches each model's exported graph: in one folder all workers share,
# never the user's ~/.cache (a test of the cache itself points it elsewhere).
os.environ.setdefault("BLOODSEG_CACHE", str(Path(tempfile.gettempdir()) /
                                            f"bloodseg-test-cache-{os.getuid()}"))

# Tests never talk to W&B servers; the code itself must not prompt either (see test_train).
os.environ.setdefault("WANDB_SILENT", "true")


def pytest_collection_modifyitems(config, items):
    import torch

    for item in items:
        if "real" in item.keywords and not SHARED_DATA.is_dir():
            item.add_marker(pytest.mark.skip(reason=f"real data not found at {SHARED_DATA}"))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the Kaggle layout (+ instances), made once per session."""
    from bloodseg.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("synthetic") / "data"
    return write_dataset(root, n_train=12, n_test=4, size=(96, 96), seed=0)


def compose_cfg(tmp_path: Path, overrides: list[str] | None = None,
                config_name: str = "train") -> DictConfig:
    """Compose the real config the way the CLI does, shrunk for CPU tests in ``tmp_path``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, return_hydra_config=True,
                      overrides=overrides or [])
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.data_dir = str(tmp_path / "data")
        cfg.paths.output_dir = str(tmp_path / "run")
        cfg.hydra.runtime.output_dir = str(tmp_path / "run")
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def hydra_cfg():
    yield compose_cfg
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A briefly trained U-Net (narrow, CPU) and its run folder (fit, test, samples), made once
    per session: every test that needs *a* trained model file uses this one (the way
    lightning-hydra-template shares ``cfg_train_global``) instead of training its own."""
    from bloodseg.training import train

    tmp = tmp_path_factory.mktemp("trained")
    cfg = compose_cfg(tmp, [
        *TINY, "data.synthetic.n_train=12", "data.synthetic.n_test=3",
        "data.synthetic.size=[128,128]", "data.image_size=128", "data.batch_size=4",
        "trainer.max_epochs=3", "model=unet", "model.base_channels=8", "optimizer.lr=3e-3",
    ])
    train(cfg)
    GlobalHydra.instance().clear()
    return Path(cfg.paths.output_dir)
