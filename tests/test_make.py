"""The Makefile's main jobs, in the quick profile: demo and reproduce end to end."""

from __future__ import annotations

import csv
import os
import re
import subprocess
from pathlib import Path

import pytest

from bloodseg.data.synthetic import write_dataset
from tests.conftest import REPO

README_STUB = """# test readme
before
<!-- results:begin -->
old results
<!-- results:end -->
between
<!-- demo:begin -->
old demo
<!-- demo:end -->
after
"""


def make(*args: str, timeout: int = 900, **env_extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | env_extra
    return subprocess.run(["make", "-C", str(REPO), *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env=env, timeout=timeout)


def image_links(readme: Path) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme.read_text())


def test_reproduce_without_data_stops_with_download_instructions(tmp_path):
    proc = make("reproduce", f"DATA_DIR={tmp_path / 'absent'}", timeout=120)
    assert proc.returncode != 0
    assert "no dataset at" in proc.stderr and "bloodseg-data download --out data/" in proc.stderr
    assert "Traceback" not in proc.stderr  # it stops before training starts


@pytest.mark.slow
def test_reproduce_quick_on_a_real_layout_folder(tmp_path):
    data = write_dataset(tmp_path / "BCCD Dataset with mask", n_train=8, n_test=2,
                         size=(96, 72), seed=1)
    readme = tmp_path / "README.md"
    readme.write_text(README_STUB)
    proc = make("reproduce", f"DATA_DIR={data}", "EPOCHS=1", "PROFILE=quick",
                "EXPERIMENTS=unet_grayscale,resunet_grayscale_scheduler",
                f"RUNS_DIR={tmp_path / 'runs'}", f"FIGURES_DIR={tmp_path / 'fig'}",
                f"README={readme}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "fig" / "results.csv")))
    assert sorted(r["experiment"] for r in rows) == ["ResUnet_grayscale_scheduler",
                                                     "Unet_grayscale"]
    assert all(r["data_kind"] == "real" for r in rows)
    for name in ("Unet_grayscale", "ResUnet_grayscale_scheduler"):
        for kind in ("iou", "loss", "panel"):
            assert (tmp_path / "fig" / f"{name}_{kind}.png").stat().st_size > 10_000
    text = readme.read_text()
    assert "old results" not in text and "old demo" in text and text.endswith("after\n")
    links = image_links(readme)
    assert links and all((tmp_path / link).is_file() for link in links)


@pytest.mark.slow
def test_demo_quick_profile_reports(tmp_path):
    """`make demo` in the quick profile: the report code is exercised on every CI run."""
    readme = tmp_path / "README.md"
    readme.write_text(README_STUB)
    proc = make("demo", "MODELS=unet,attunet", "DEMO_ARGS=profile=quick",
                f"DEMO_DIR={tmp_path / 'demo'}", f"README={readme}",
                BLOODSEG_DATA_DIR=str(tmp_path / "data"))  # synthetic data off the repo
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = tmp_path / "demo" / "figures"
    rows = list(csv.DictReader(open(fig / "results.csv")))
    # the two runs, then Otsu + watershed (default, tuned) on the same test images
    assert [r["experiment"] for r in rows] == ["attunet_gray", "unet_gray", "Otsu + watershed",
                                               "Otsu + watershed, tuned"]
    assert all(r["data_kind"] == "synthetic" for r in rows)
    assert all(0 <= float(r["f1"]) <= 1 for r in rows)
    assert (fig / "counts.png").is_file()
    text = readme.read_text()
    assert "old demo" not in text and "old results" in text
    assert "Synthetic demo data" in text
    assert all((tmp_path / link).is_file() for link in image_links(readme))


# `make weights` trains for ~15 CPU-min: its two commands are stubs here that record how they
# were called and what the data folder held at that moment
STUB = """#!{python}
import json, os, sys
from pathlib import Path
call = {{"cmd": Path(sys.argv[0]).name, "args": sys.argv[1:]}}
for arg in sys.argv[1:]:
    if arg.startswith("data.root="):
        root = Path(arg.split("=", 1)[1].strip("'"))
        call["data"] = {{f"{{s}}/{{k}}": sorted((p.name, str(p.resolve())) for p in
                                             (root / s / k).iterdir() if p.is_symlink())
                        for s in ("train", "test") for k in ("original", "mask")}}
with open(os.environ["STUB_LOG"], "a") as f:
    f.write(json.dumps(call) + "\\n")
sys.exit(1 if call["cmd"] == os.environ.get("STUB_FAIL") else 0)
"""


def stub_venv(folder: Path) -> Path:
    import sys

    for name in ("python", "bloodseg-export"):
        path = folder / "bin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(0o755)
    (folder / ".installed").touch()  # newer than pyproject.toml: install has nothing to do
    return folder


def weights_calls(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list]:
    import json

    log = tmp_path / "calls.jsonl"
    proc = make("weights", f"VENV={stub_venv(tmp_path / 'venv')}",
                f"WEIGHTS_DIR={tmp_path / 'weights'}", f"WEIGHTS_OUT={tmp_path / 'out.pt'}",
                timeout=120, STUB_LOG=str(log), **env)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


@pytest.mark.real
def test_weights_trains_count_real_on_all_mini_pairs_then_bundles_it(tmp_path, shared_data):
    proc, calls = weights_calls(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    train, export = calls
    run = tmp_path / "weights" / "count_real"
    assert train["cmd"] == "python" and train["args"] == [
        "train.py", "experiment=count_real", f"data.root='{tmp_path / 'weights' / 'data'}'",
        "logger=csv", f"hydra.run.dir='{run}'"]  # quoted for Hydra
    mini = (shared_data / "bbbc041seg-mini").resolve()
    for split, pairs in (("train", 40), ("test", 10)):
        images, masks = train["data"][f"{split}/original"], train["data"][f"{split}/mask"]
        assert len(images) == len(masks) == pairs
        assert [Path(n).stem for n, _ in images] == [Path(n).stem for n, _ in masks]
        want = {str(p.resolve()) for s in (("train", "test") if split == "train" else ("test",))
                for p in (mini / s / "original").iterdir()}
        assert {target for _, target in images} == want  # links to the real files
    assert export == {"cmd": "bloodseg-export", "args": [
        f"ckpt_path='{run / 'checkpoints' / 'best.ckpt'}'", "format=bundle",
        f"output='{tmp_path / 'out.pt'}'", "overwrite=true",
        f"hydra.run.dir='{tmp_path / 'weights' / 'export'}'"]}


@pytest.mark.real
def test_weights_keeps_the_shipped_bundle_when_training_fails(tmp_path, shared_data):
    proc, calls = weights_calls(tmp_path, STUB_FAIL="python")
    assert proc.returncode != 0
    assert [c["cmd"] for c in calls] == ["python"]  # bloodseg-export never ran


def test_weights_without_the_data_says_where_it_looked(tmp_path):
    proc, calls = weights_calls(tmp_path, WEIGHTS_DATA=str(tmp_path / "absent"))
    assert proc.returncode != 0 and calls == []
    assert f"no bbbc041seg-mini at '{tmp_path / 'absent'}'" in proc.stderr
    assert "make weights WEIGHTS_DATA=" in proc.stderr
