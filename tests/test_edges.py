"""A user's ordinary mistakes get one line naming the option and the fix, exit 2, no traceback,
before any heavy library loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bloodseg.options import OptionError, check_predict
from tests.helpers import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("block,match", [
    ({"mode": "tiles"}, "predict.mode=tiles: not one of auto, whole, tile, resize"),
    ({"tta": "yes"}, "predict.tta=yes: not one of false, true, none, flips, d4"),
    ({"device": "gpu"}, "predict.device=gpu: not one of auto, cpu, cuda"),
    ({"scale": 0}, r"predict.scale=0: must be a number > 0"),
    ({"overlap": 1.5}, r"predict.overlap=1.5: must be a number in \[0, 1\)"),
    ({"batch_size": 0}, r"predict.batch_size=0: must be an integer > 0"),
    ({"scale": float("nan")}, r"predict.scale=nan"),
    ({"postprocess_at": "half"}, "predict.postprocess_at=half: not one of native, network"),
])
def test_predict_options_outside_their_set_name_the_valid_ones(block, match):
    with pytest.raises(OptionError, match=match):
        check_predict(block)
    check_predict({"mode": "tile", "tta": "d4", "device": "cuda:1", "scale": 0.5})


def run(module: str, *args: str, cwd: Path, env: dict | None = None
        ) -> subprocess.CompletedProcess:
    """The command as a user runs it, in this process (tests/helpers/cli.py): what it prints
    and its exit status are the process's, without seconds of start-up each."""
    return cli.run(module, list(args), cwd, env=env, in_process=True)


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


@pytest.mark.slow
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


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log"}


@pytest.mark.slow
def test_ctrl_c_keeps_finished_images_and_resume_gives_the_same_files(tmp_path):
    """A real SIGINT in the middle of a batch: exit 130, one line saying how far it got, a
    consistent folder (every counted row has its files, no half file); resume=true does the
    rest, and the result equals an uninterrupted run's, byte for byte."""
    import os
    import signal
    import time

    smears = sorted((REPO.parent / "shared" / "data" / "bbbc041seg-mini" / "test" / "original"
                     ).glob("*"))[:3]
    if len(smears) < 3:
        pytest.skip("real data not found")
    folder = tmp_path / "in"
    folder.mkdir()
    for s in smears:
        (folder / s.name).symlink_to(s)
    args = ["weights=count_real", f"input={folder}"]
    full = tmp_path / "full"
    proc = run("bloodseg.cli.predict", *args, f"output={full}", f"hydra.run.dir={tmp_path}/h0",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bloodseg.cli.predict", *args, f"output={out}",
           f"hydra.run.dir={tmp_path}/h1"]
    child = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    counts = out / "counts.csv"
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if counts.is_file() and len(counts.read_text().splitlines()) >= 2:  # 1 image done
            break
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if x.startswith("interrupted after"))
    done = int(line.split()[2].split("/")[0])
    assert 1 <= done < 3 and line.split()[2].endswith("/3") and "resume=true" in line
    rows = counts.read_text().splitlines()[1:]
    assert len(rows) == done
    assert sorted(p.name for p in (out / "overlays").iterdir()) == \
        sorted(p.name for p in (full / "overlays").iterdir())[:done]
    assert not [p for p in out.rglob("*.tmp")], "a half-written file was left"

    proc = run("bloodseg.cli.predict", *args, f"output={out}", "resume=true",
               f"hydra.run.dir={tmp_path}/h2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{done} done earlier" in proc.stdout
    assert _tree(out) == _tree(full)


def test_resume_refuses_another_batch_and_overwrite_keeps_old_results_until_done(tmp_path):
    smear = REPO.parent / "shared" / "data" / "bbbc041seg-sample" / "original.png"
    if not smear.is_file():
        pytest.skip("real data not found")
    out = tmp_path / "out"
    proc = run("bloodseg.cli.predict", "weights=count_real", f"input={smear}", f"output={out}",
               "resume=true", f"hydra.run.dir={tmp_path}/h0", cwd=tmp_path)
    assert proc.returncode == 2 and "holds no interrupted bloodseg-predict batch" in proc.stderr
    proc = run("bloodseg.cli.predict", "weights=count_real", f"input={smear}", f"output={out}",
               f"hydra.run.dir={tmp_path}/h1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run("bloodseg.cli.predict", "weights=count_real", f"input={smear}", f"output={out}",
               "resume=true", "predict.tta=true", f"hydra.run.dir={tmp_path}/h2", cwd=tmp_path)
    assert proc.returncode == 2 and "records another batch" in proc.stderr


def test_a_data_mistake_in_train_is_one_line_and_exit_2(tmp_path):
    import shutil

    image = REPO.parent / "shared" / "data" / "bbbc041seg-sample" / "original.png"
    if not image.is_file():
        pytest.skip("real data not found")
    root = tmp_path / "unpaired"
    for split in ("train", "test"):
        (root / split / "original").mkdir(parents=True)
        (root / split / "mask").mkdir(parents=True)
        shutil.copy(image, root / split / "original" / f"{split}.png")  # no masks
    proc = cli.run(REPO / "train.py", ["data=bbbc041seg", f"data.root={root}", "logger=csv",
                                       "trainer=cpu", f"hydra.run.dir={tmp_path / 'run'}"],
                   tmp_path, in_process=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert errors == [f"error: {root}/train/original/train.png: image has no mask (expected "
                      f"{root}/train/mask/train.png); add the mask or remove the image"]
    assert "Traceback" in (tmp_path / "run" / "error.txt").read_text()  # kept for a bug report


@pytest.mark.parametrize("place,value,why", [
    (("preprocess", "image_size"), [100000, 100000], "more than this bloodseg runs at once"),
    (("postprocess", "fields", "threshold"), float("nan"), "not a finite number"),
    (("postprocess", "fields", "threshold"), 5.0, "not in [0, 1]"),
    (("postprocess", "fields", "marker_threshold"), -0.1, "is negative"),
    (("postprocess", "fields", "min_area"), -3, "is negative"),
    (("postprocess", "fields", "cut_cell_frac"), 1.5, "not in [0, 1]"),
    (("network", "kwargs", "base_channels"), -16, "is negative"),
])
def test_model_file_values_are_bounded(tmp_path, place, value, why):
    """A stranger's bundle is typed and bounded: sizes fit in memory, thresholds are finite
    and in range, counts are non-negative; the error names the file and the key."""
    import copy

    import torch

    from bloodseg.io import CheckpointError
    from bloodseg.modelfile import load_model
    from bloodseg.spec import SPEC_KEY
    from bloodseg.weights import weights_path

    bundle = torch.load(weights_path("count_real"), weights_only=True)
    crafted = copy.deepcopy(bundle)
    d = crafted[SPEC_KEY]
    for k in place[:-1]:
        d = d[k]
    d[place[-1]] = value
    path = tmp_path / "crafted.pt"
    torch.save(crafted, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    msg = str(info.value)
    assert str(path) in msg and ".".join(place) in msg and why in msg, msg


@pytest.mark.slow
def test_evaluate_needs_only_its_split_warns_on_training_images_and_draws_overlays(tmp_path):
    """A folder with test/ alone is enough; scoring count_real on two of its own 40 training
    smears says so (content hashes in its spec), and samples/ get viewable overlays."""
    import cv2

    mini = REPO.parent / "shared" / "data" / "bbbc041seg-mini" / "test"
    if not mini.is_dir():
        pytest.skip("real data not found")
    root = tmp_path / "data"
    for kind in ("original", "mask"):
        (root / "test" / kind).mkdir(parents=True)
        for p in sorted((mini / kind).glob("*"))[:2]:
            (root / "test" / kind / p.name).symlink_to(p)
    out = tmp_path / "eval"
    proc = run("bloodseg.cli.evaluate", "weights=count_real", f"data.root={root}",
               f"hydra.run.dir={out}", "n_samples=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = proc.stdout + proc.stderr
    assert "2 of the 2 image(s) scored are among the model's training images" in log
    overlay = next((out / "samples").glob("*_overlay.png"))
    picture = cv2.imread(str(overlay), cv2.IMREAD_UNCHANGED)
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.std() > 10


def test_commands_write_nothing_into_the_current_folder(tmp_path):
    """From a folder the user did not name (a read-only data share, say), predict keeps its
    Hydra folder inside output=, the others in $XDG_STATE_HOME/bloodseg; the current folder
    stays empty, even for a failed run."""

    cwd, state = tmp_path / "share", tmp_path / "state"
    cwd.mkdir()
    smear = REPO.parent / "shared" / "data" / "bbbc041seg-sample" / "original.png"
    if not smear.is_file():
        pytest.skip("real data not found")
    runs = [("bloodseg.cli.predict", "weights=count_real", f"input={smear}",
             f"output={tmp_path / 'out'}", "predict.mode=tiles"),   # refused: exit 2
            ("bloodseg.cli.export", "weights=count_real", "format=bundle",
             f"output={tmp_path / 'x.pt'}"),
            ("bloodseg.cli.tune", "weights=count_real", "tune.metric=dice")]  # refused
    for module, *args in runs:
        proc = run(module, *args, cwd=cwd, env={"XDG_STATE_HOME": str(state)})
        assert proc.returncode in (0, 2), proc.stderr[-2000:]
        assert list(cwd.iterdir()) == [], (module, list(cwd.iterdir()))
    assert (tmp_path / "x.pt").is_file()
    assert (state / "bloodseg" / "export").is_dir()
