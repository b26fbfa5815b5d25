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
