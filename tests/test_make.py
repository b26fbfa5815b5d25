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
    assert all(0 <= float(r["inst_f1"]) <= 1 for r in rows)
    assert (fig / "counts.png").is_file()
    text = readme.read_text()
    assert "old demo" not in text and "old results" in text
    assert "Synthetic demo data" in text
    assert all((tmp_path / link).is_file() for link in image_links(readme))
