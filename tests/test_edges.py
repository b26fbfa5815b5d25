"""A user's ordinary mistakes get one line naming the option and the fix, exit 2, no traceback,
before any heavy library loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bloodseg.options import OptionError, check_predict

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("block,match", [
    ({"mode": "tiles"}, "predict.mode=tiles: not one of auto, whole, tile, resize"),
    ({"tta": "yes"}, "predict.tta=yes: not one of false, true, none, flips, d4"),
    ({"device": "gpu"}, "predict.device=gpu: not one of auto, cpu, cuda"),
    ({"scale": 0}, r"predict.scale=0: must be a number > 0"),
    ({"overlap": 1.5}, r"predict.overlap=1.5: must be a number in \[0, 1\)"),
    ({"batch_size": 0}, r"predict.batch_size=0: must be an integer > 0"),
    ({"scale": float("nan")}, r"predict.scale=nan"),
])
def test_predict_options_outside_their_set_name_the_valid_ones(block, match):
    with pytest.raises(OptionError, match=match):
        check_predict(block)
    check_predict({"mode": "tile", "tta": "d4", "device": "cuda:1", "scale": 0.5})


def run(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args,first_line", [
    (["weights=count_real", "output=o"], "error: input= is missing: the image or folder to count"),
    (["weights=count_real", "input=x.png", "output=o", "predict.mode=tiles"],
     "error: predict.mode=tiles: not one of auto, whole, tile, resize"),
    (["weights=count_real", "input=x.png", "output=o", "predict.tta=yes"],
     "error: predict.tta=yes: not one of false, true, none, flips, d4"),
    (["input=x.png", "output=o"], "error: bloodseg-predict needs a model: weights=<name>"),
])
def test_predict_mistakes_are_one_line_and_exit_2(tmp_path, args, first_line):
    proc = run("bloodseg.cli.predict", *args, f"hydra.run.dir={tmp_path / 'h'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-1500:]
    assert proc.stderr.splitlines()[0] == first_line or \
        proc.stderr.splitlines()[0].startswith(first_line), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_device_cuda_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    image = REPO.parent / "shared" / "data" / "bbbc041seg-sample" / "original.png"
    if not image.is_file():
        pytest.skip("real data not found")
    proc = run("bloodseg.cli.predict", "weights=count_real", f"input={image}",
               f"output={tmp_path / 'o'}", "predict.device=cuda", f"hydra.run.dir={tmp_path}/h",
               cwd=tmp_path)
    assert proc.returncode == 2
    assert "predict.device=cuda: this machine has no CUDA GPU" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("module", ["bloodseg.cli.evaluate", "bloodseg.cli.tune",
                                    "bloodseg.cli.export"])
def test_weights_list_works_in_every_command_that_takes_weights(module, tmp_path):
    proc = run(module, "weights=list", f"hydra.run.dir={tmp_path / 'h'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert "count_real" in proc.stdout and "bloodseg-predict weights=<name>" in proc.stdout


def test_a_mixed_folder_counts_the_smear_and_says_why_the_rest_was_not_counted(tmp_path):
    """Real smear, black, white, 8x8 and noise: one count, four rows with the reason, a warning
    each, exit 1 (look at them), and no masks or overlays for the refused ones."""
    import csv

    import cv2
    import numpy as np

    smear = REPO.parent / "shared" / "data" / "bbbc041seg-sample" / "original.png"
    if not smear.is_file():
        pytest.skip("real data not found")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "smear.png").symlink_to(smear)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(folder / "black.png"), np.zeros((1200, 1600, 3), np.uint8))
    cv2.imwrite(str(folder / "white.png"), np.full((1200, 1600, 3), 255, np.uint8))
    cv2.imwrite(str(folder / "tiny.png"), np.full((8, 8, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "noise.png"), rng.integers(0, 256, (600, 800, 3), np.uint8))
    out = tmp_path / "out"
    proc = run("bloodseg.cli.predict", "weights=count_real", f"input={folder}", f"output={out}",
               f"hydra.run.dir={tmp_path / 'h'}", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    with open(out / "counts.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"smear.png", "black.png", "white.png", "tiny.png", "noise.png"}
    assert int(rows["smear.png"]["cell_count"]) > 30 and rows["smear.png"]["problem"] == ""
    expected = {"black.png": "blank or near-uniform", "white.png": "saturated",
                "tiny.png": "too small", "noise.png": "no image structure"}
    for name, reason in expected.items():
        assert rows[name]["cell_count"] == "" and rows[name]["problem"].startswith(reason), \
            rows[name]
        assert f"{name}: not counted: {reason}" in proc.stderr + proc.stdout
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["smear.png"]
    assert "4 image(s) not counted" in proc.stdout


def test_no_training_smear_is_refused_by_the_screening():
    import cv2

    from bloodseg.screening import screen

    root = REPO.parent / "shared" / "data" / "bbbc041seg-mini"
    images = sorted(root.glob("*/original/*"))
    if not images:
        pytest.skip("real data not found")
    for path in images:
        image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert screen(image, 0.5) is None, path.name
