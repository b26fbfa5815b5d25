"""bloodseg installed from a wheel, outside any checkout: the configs (``conf/`` installs as
``bloodseg/conf``) and the registries they make ship with it, every console script starts,
``bloodseg-predict`` counts and a quick training run finishes from the installed copy.

The wheel is built from a copy of the sources (nothing is written into the checkout) and
installed with ``pip install --target``; every command runs with only that folder on
``PYTHONPATH`` from a folder outside the checkout, and the tests check that ``bloodseg`` was
imported from there.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SCRIPTS = sorted(PYPROJECT["project"]["scripts"])


def run(args: list, cwd: Path, env: dict | None = None, timeout: int = 300
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    assert proc.returncode == 0, f"{args}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_pyproject_lists_every_package():
    """``packages`` is explicit (``bloodseg.conf`` maps to ``conf/``), so a new sub-package
    must be added there or the wheel would miss it."""
    tool = PYPROJECT["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(REPO).parts)
             for p in (REPO / "bloodseg").rglob("__init__.py")}
    missing = sorted(found - set(tool["packages"]))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"
    assert set(tool["packages"]) == found | {"bloodseg.conf"}
    assert tool["package-dir"] == {"bloodseg.conf": "conf"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("bloodseg", "conf"):
        shutil.copytree(REPO / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", tmp / "dist", src], cwd=tmp)
    (whl,) = (tmp / "dist").glob("bloodseg-*.whl")
    return whl


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("installed") / "site"
    run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site,
         wheel], cwd=wheel.parent)
    return site


@pytest.fixture
def outside(site, tmp_path) -> tuple[Path, dict]:
    """A working folder away from the checkout, and an environment that imports bloodseg from
    the installed copy only."""
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled",
           "BLOODSEG_DATA_DIR": str(tmp_path / "data")}
    return work, env


@pytest.mark.slow
def test_wheel_holds_every_module_config_and_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {p.relative_to(REPO).as_posix() for p in (REPO / "bloodseg").rglob("*.py")}
    want |= {"bloodseg/conf/" + p.relative_to(REPO / "conf").as_posix()
             for p in (REPO / "conf").rglob("*.yaml")}
    want |= {p.relative_to(REPO).as_posix() for pattern in ("*.pt", "*.md")
             for p in (REPO / "bloodseg" / "weights").glob(pattern)}
    assert not sorted(want - names), f"missing from the wheel: {sorted(want - names)[:10]}"
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert all(f"{name} = " in text for name in SCRIPTS)


@pytest.mark.slow
def test_installed_copy_finds_its_configs_and_registries(site, outside):
    work, env = outside
    code = ("import json, bloodseg, bloodseg.config as c\n"
            "from bloodseg.models import build_model, model_names\n"
            "from bloodseg.postprocess import Watershed\n"
            "net = build_model('unet', base_channels=8)\n"
            "print(json.dumps({'file': bloodseg.__file__, 'conf': c.CONF_DIR,\n"
            "                  'models': model_names(), 'net': type(net).__name__}))\n")
    got = json.loads(run([sys.executable, "-c", code], work, env).stdout.splitlines()[-1])
    assert Path(got["file"]).is_relative_to(site), "imported the checkout, not the wheel"
    assert Path(got["conf"]) == (site / "bloodseg" / "conf").resolve()
    assert got["models"] == sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml"))
    assert got["net"] == "UNet"


@pytest.mark.slow
def test_every_console_script_starts(site, outside):
    work, env = outside
    procs = {name: subprocess.Popen([site / "bin" / name, "--help"], cwd=work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name in SCRIPTS}  # at once: each spends seconds importing torch
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name} --help:\n{out[-1000:]}\n{err[-3000:]}"
        assert "usage" in out.lower() or "== Config ==" in out, name


@pytest.mark.slow
def test_predict_from_the_installed_copy(site, outside, trained_run):
    from bloodseg.inference import Predictor
    from bloodseg.labels import instance_areas

    work, env = outside
    image = sorted((trained_run / "samples").glob("*_image.png"))[0]
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    run([sys.executable, "-m", "bloodseg.cli.predict", f"ckpt_path={ckpt}", f"input={image}",
         f"output={work / 'counts'}", f"hydra.run.dir={work / 'hydra'}"], work, env)
    (row,) = csv.DictReader(open(work / "counts" / "counts.csv"))
    want = Predictor.load(ckpt, device="cpu")(Predictor.read(image))
    assert row["file"] == image.name and int(row["cell_count"]) == instance_areas(want).size
    assert (work / "counts" / "overlays" / f"{image.stem}.png").is_file()


@pytest.mark.slow
def test_quick_training_from_the_installed_copy(site, outside):
    work, env = outside
    out = work / "run"
    run([sys.executable, "-m", "bloodseg.cli.train", "data=synthetic", "profile=quick",
         "trainer.max_epochs=1",
         "data.synthetic.n_train=4", f"hydra.run.dir={out}"], work, env, timeout=600)
    assert (out / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((out / "test_metrics.json").read_text())["metrics"]
    assert "test/count_mae" in metrics


@pytest.mark.slow
@pytest.mark.real
def test_installed_copy_counts_real_smears_with_the_shipped_model(site, outside, shared_data):
    """The README's third command: the shipped model, no training, no download, from a wheel
    installed outside the repository."""
    work, env = outside
    inputs = shared_data / "bbbc041seg-mini" / "test" / "original"
    out = work / "counts"
    run([site / "bin" / "bloodseg-predict", "weights=count_real", f"input={inputs}",
         f"output={out}", f"hydra.run.dir={work / 'hydra'}"], work, env, timeout=900)
    from bloodseg.io import read_mask
    from bloodseg.labels import instances_from_mask

    rows = list(csv.DictReader(open(out / "counts.csv")))
    assert len(rows) == len(list(inputs.iterdir())) == 10
    masks = shared_data / "bbbc041seg-mini" / "test" / "mask"
    errors = [int(r["cell_count"]) - int(instances_from_mask(
        read_mask(masks / f"{Path(r['file']).stem}.png")).max()) for r in rows]
    # these smears were among its 40 training images: it must count them closely
    assert sum(map(abs, errors)) / len(errors) <= 5, errors
    cells = list(csv.DictReader(open(out / "cells.csv")))
    assert len(cells) == sum(int(r["cell_count"]) for r in rows)
