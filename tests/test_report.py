"""bloodseg-report on fake run folders shaped exactly like bloodseg-train writes them."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from bloodseg.cli.report import main
from bloodseg.report import (
    assign_labels,
    load_history,
    load_run,
    markers,
    plot_curves,
    plot_panel,
    plot_sizes,
    results_markdown,
    results_table,
    update_readme,
)
from tests.conftest import REPO

BEGIN, END = markers("results")

# CSVLogger writes the union of all logged keys, sorted, as one header
HEADER = [
    "epoch", "lr-Adam", "step", "test/count_bias", "test/count_mae", "test/dice", "test/f1",
    "test/iou", "test/pixel_accuracy", "train/dice", "train/iou", "train/loss_epoch",
    "train/loss_step", "val/count_mae_trainres", "val/dice", "val/f1_trainres", "val/iou",
    "val/loss",
]
STEPS_PER_EPOCH = 4


def val_loss(epoch: int, best: int) -> float:
    """Decreases to ``best`` then rises (what early stopping reacts to)."""
    return round(0.2 + 0.05 * abs(epoch - best), 4)


def write_metrics_csv(path: Path, epochs: int, best: int, test_dice: float) -> None:
    """Sparse rows in the order Lightning logs them: lr, (step loss), val, train, test."""
    rows: list[dict] = []
    for e in range(epochs):
        end = (e + 1) * STEPS_PER_EPOCH - 1
        rows.append({"lr-Adam": 1e-4 * 0.95**e, "step": e * STEPS_PER_EPOCH})
        if e % 2 == 0:  # log_every_n_steps rows land mid-epoch, every few epochs
            rows.append({"epoch": e, "step": end - 2, "train/loss_step": 9.0})
        rows.append({"epoch": e, "step": end, "val/loss": val_loss(e, best),
                     "val/iou": 0.5 + 0.01 * e, "val/dice": 0.6 + 0.01 * e,
                     "val/count_mae_trainres": 10 - e, "val/f1_trainres": 0.3})
        rows.append({"epoch": e, "step": end, "train/loss_epoch": 1.0 / (e + 1),
                     "train/iou": 0.4 + 0.02 * e, "train/dice": 0.5 + 0.02 * e})
    rows.append({"epoch": epochs, "step": epochs * STEPS_PER_EPOCH,
                 "test/dice": test_dice, "test/iou": 0.55, "test/pixel_accuracy": 0.9,
                 "test/count_mae": 2.0, "test/count_bias": -1.0, "test/f1": 0.7})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def disc_sample(seed: int, h: int = 48, w: int = 64) -> tuple[np.ndarray, ...]:
    """An RGB smear with a few discs: image, 0/255 mask, 0..255 probability, 16-bit labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint16)
    for i, (cy, cx) in enumerate([(12, 14), (30, 40), (14, 50), (36, 12)], start=1):
        cv2.circle(labels, (cx + int(rng.integers(-2, 3)), cy), 7, i, -1)
    image = np.full((h, w, 3), (230, 215, 225), np.uint8)
    image[labels > 0] = (190, 90, 110)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    mask = (labels > 0).astype(np.uint8) * 255
    prob = cv2.GaussianBlur(mask, (7, 7), 2)
    return image, mask, prob, labels


def make_run(folder: Path, name: str, *, experiment: str | None, model: str, color: str,
             dice: float, epochs: int = 6, best: int = 3, stopped: int | None = None,
             data_kind: str = "synthetic", test_json: bool = True) -> Path:
    folder.mkdir(parents=True)
    meta = {
        "name": name, "model": model, "experiment": experiment, "params": 31_037_633,
        "epochs_run": epochs, "stopped_epoch": stopped, "best_ckpt": str(folder / "best.ckpt"),
        "best_val_loss": val_loss(best, best), "train_time_s": 123.4, "loss": "bce",
        "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4},
        "scheduler": {"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 1,
                      "gamma": 0.95} if stopped else None,
        "max_epochs": 100, "batch_size": 4, "data_root": "/data", "data_kind": data_kind,
        "color": color, "image_size": [48, 64], "source_size": [1200, 1600],
        "n_train": 10, "n_val": 2, "n_test": 3,
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))
    write_metrics_csv(folder / "metrics.csv", epochs, best, dice)
    if test_json:
        metrics = {"test/dice": dice, "test/iou": dice - 0.1, "test/pixel_precision": 0.8,
                   "test/pixel_recall": 0.85, "test/pixel_accuracy": 0.9,
                   "test/count_mae": 1.5, "test/count_bias": -0.5, "test/precision": 0.7,
                   "test/recall": 0.75, "test/f1": 0.72, "test/ap50": 0.6,
                   "test/mean_matched_iou": 0.8, "test/pred_count_mean": 38.0,
                   "test/true_count_mean": 40.0}
        (folder / "test_metrics.json").write_text(json.dumps(
            {"ckpt_path": meta["best_ckpt"], "tta": False, "data_kind": data_kind,
             "metrics": metrics}))
    pd.DataFrame({
        "file": ["a", "b", "c"], "true_count": [40, 35, 52], "pred_count": [38, 36, 49],
        "count_error": [-2, 1, -3], "abs_count_error": [2, 1, 3], "tp": [36, 34, 47],
        "fp": [2, 2, 2], "fn": [4, 1, 5], "precision": 0.9, "recall": 0.9, "f1": 0.9,
        "ap50": 0.8, "mean_matched_iou": 0.8,
    }).to_csv(folder / "per_image.csv", index=False)
    (folder / "size_hist.csv").write_text("bin_start,bin_end,pred_cells,true_cells\n"
                                          "10.0,20.0,3,4\n20.0,30.0,5,5\n")
    samples = folder / "samples"
    samples.mkdir()
    index = []
    for i in range(2):
        image, mask, prob, labels = disc_sample(i)
        sname = f"smear_{i:03d}"
        cv2.imwrite(str(samples / f"{sname}_image.png"), image[:, :, ::-1])
        cv2.imwrite(str(samples / f"{sname}_mask.png"), mask)
        cv2.imwrite(str(samples / f"{sname}_prob.png"), prob)
        cv2.imwrite(str(samples / f"{sname}_instances.png"), labels)
        index.append({"name": sname, "true_count": 4, "pred_count": int(labels.max())})
    (samples / "index.json").write_text(json.dumps(index))
    return folder


def assert_png(path: Path, min_bytes: int = 15_000) -> np.ndarray:
    assert path.is_file(), f"{path} missing"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes, f"{path}: only {path.stat().st_size} bytes"
    img = cv2.imread(str(path))
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 500
    assert img.std() > 10  # not a blank canvas
    return img


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A sweep folder with two finished runs and one run that never logged metrics."""
    root = tmp_path_factory.mktemp("sweep") / "multirun"
    make_run(root / "0", "Unet_grayscale", experiment="unet_grayscale", model="unet",
             color="gray", dice=0.81)
    make_run(root / "1", "ResUnet_grayscale_scheduler", experiment="resunet_grayscale_scheduler",
             model="resunet", color="gray", dice=0.86, epochs=9, best=4, stopped=8)
    (root / "2").mkdir()
    (root / "2" / "meta.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> tuple[Path, Path, str, str]:
    """``bloodseg-report`` run once over ``sweep``, into a README-relative figures folder."""
    repo = tmp_path_factory.mktemp("repo")
    readme = repo / "README.md"
    readme.write_text(f"# Title\n\nIntro text.\n\n{BEGIN}\nold results\n{END}\n\n## License\nMIT\n")
    readme.chmod(0o644)
    out = repo / "experiments" / "demo" / "figures"
    logs = tmp_path_factory.mktemp("log")
    with pytest.MonkeyPatch.context() as mp, open(logs / "out", "w") as out_f, \
            open(logs / "err", "w") as err_f:
        mp.setattr(sys, "stdout", out_f)
        mp.setattr(sys, "stderr", err_f)
        rc = main([str(sweep), "--out", str(out), "--readme", str(readme)])
    assert rc == 0
    return out, readme, (logs / "out").read_text(), (logs / "err").read_text()


# -- loading ------------------------------------------------------------------------------


def test_load_history_groups_sparse_rows_by_epoch(tmp_path):
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, epochs=4, best=2, test_dice=0.9)
    hist = load_history(path)
    assert hist.index.tolist() == [0, 1, 2, 3]  # the test row's epoch (4) is not an epoch
    assert hist["val/loss"].tolist() == [0.3, 0.25, 0.2, 0.25]
    assert hist["train/loss"].tolist() == [1.0, 0.5, 1 / 3, 0.25]
    assert hist["train/iou"].tolist() == pytest.approx([0.4, 0.42, 0.44, 0.46])
    assert hist["val/count_mae_trainres"].tolist() == [10, 9, 8, 7]
    # LR rows have no epoch in the CSV: each belongs to the epoch it was logged before
    assert hist["lr-Adam"].tolist() == pytest.approx([1e-4 * 0.95**e for e in range(4)])
    assert not any(c.startswith("test/") for c in hist)


def test_load_history_single_epoch_and_missing_columns(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss_step\n0,0,0.9\n0,1,0.7\n")
    hist = load_history(path)
    assert hist.index.tolist() == [0]
    assert hist["train/loss"].tolist() == [pytest.approx(0.8)]  # mean of the step losses
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert load_history(empty).empty


def test_load_run_reads_every_file(sweep):
    run = load_run(sweep / "1")
    assert run.name == run.label == "ResUnet_grayscale_scheduler"
    assert run.test["test/dice"] == 0.86 and run.test["test/ap50"] == 0.6
    assert run.test["test/mean_matched_iou"] == 0.8
    assert run.stopped_epoch == 8 and run.best_epoch == 4
    assert len(run.history) == 9 and len(run.per_image) == 3 and len(run.size_hist) == 2
    assert [s.name for s in run.samples] == ["smear_000", "smear_001"]
    assert run.caption == "synthetic data (demo)"
    assert load_run(sweep / "0").stopped_epoch is None


def test_test_metrics_fall_back_to_metrics_csv(tmp_path):
    folder = make_run(tmp_path / "r", "X", experiment=None, model="unet", color="rgb",
                      dice=0.77, test_json=False)
    run = load_run(folder / "meta.json")
    assert run.test["test/dice"] == 0.77 and run.test["test/count_mae"] == 2.0


def test_bare_run_still_gets_curves(tmp_path):
    """A fast_dev_run-like folder: one epoch, no validation, no tests, almost no meta."""
    folder = tmp_path / "bare"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"name": "bare"}))
    (folder / "metrics.csv").write_text("epoch,step,train/loss_step\n0,0,0.9\n")
    run = load_run(folder)
    assert run.best_epoch is None and run.stopped_epoch is None and run.samples == []
    assert [p.name for p in plot_curves(run, tmp_path / "f")] == ["bare_iou.png", "bare_loss.png"]
    assert plot_panel(run, tmp_path / "f") is None
    table = results_table([run])
    assert table.loc[0, "experiment"] == "bare" and pd.isna(table.loc[0, "dice"])
    assert "| bare | — |" in results_markdown(table)


def test_shared_names_get_distinct_labels(tmp_path):
    a = load_run(make_run(tmp_path / "a", "resunet_gray", experiment="resunet_grayscale",
                          model="resunet", color="gray", dice=0.8))
    b = load_run(make_run(tmp_path / "b", "resunet_gray", experiment="resunet_grayscale_sched",
                          model="resunet", color="gray", dice=0.8))
    assign_labels([a, b])
    assert a.label == "resunet_gray_resunet_grayscale"
    assert b.label == "resunet_gray_resunet_grayscale_sched"
    c = load_run(tmp_path / "b")
    assign_labels([a, b, c])  # same name and experiment: the folder tells them apart
    assert len({a.stem, b.stem, c.stem}) == 3


# -- report files --------------------------------------------------------------------------


def test_report_writes_every_figure(report):
    out, _, stdout, _ = report
    for name in ("Unet_grayscale", "ResUnet_grayscale_scheduler"):
        for kind in ("iou", "loss", "panel"):
            assert_png(out / f"{name}_{kind}.png")
            assert str(out / f"{name}_{kind}.png") in stdout
    assert_png(out / "counts.png")
    assert_png(out / "comparison.png")
    panel = cv2.imread(str(out / "Unet_grayscale_panel.png"))
    assert panel.shape[0] > 600  # two sample rows


def test_results_csv_and_markdown(report):
    out, _, _, _ = report
    table = pd.read_csv(out / "results.csv")
    assert table["experiment"].tolist() == ["ResUnet_grayscale_scheduler", "Unet_grayscale"]
    row = table.set_index("experiment").loc["ResUnet_grayscale_scheduler"]
    assert row["dice"] == 0.86 and row["iou"] == pytest.approx(0.76)  # from test_metrics.json
    assert row["count_mae"] == 1.5 and row["f1"] == 0.72 and row["ap50"] == 0.6
    assert row["pixel_precision"] == 0.8 and row["pixel_recall"] == 0.85
    assert row["stopped_epoch"] == 8 and row["epochs_run"] == 9
    assert row["params_m"] == pytest.approx(31.037633) and row["train_time_s"] == 123.4
    assert row["model"] == "resunet" and row["color"] == "gray"
    assert row["data_kind"] == "synthetic" and row["scheduler"] == "StepLR"
    assert pd.isna(table.set_index("experiment").loc["Unet_grayscale", "stopped_epoch"])
    md = (out / "results.md").read_text()
    assert "Synthetic demo data — not results on BBBC041Seg" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 3 and "Dice" in rows[0]
    assert "| ResUnet_grayscale_scheduler | resunet | gray | synthetic | 0.860 |" in md
    assert "| Unet_grayscale | unet | gray | synthetic | 0.810 |" in md


def test_markdown_names_real_data():
    md = results_markdown(pd.DataFrame([{"experiment": "VGG16Unet", "data_kind": "real",
                                         "dice": 0.9}]))
    assert "| VGG16Unet | — | — | real BBBC041Seg | 0.900 |" in md


def test_readme_section_replaced_between_markers(report):
    out, readme, _, _ = report
    text = readme.read_text()
    before, rest = text.split(BEGIN)
    section, after = rest.split(END)
    assert before == "# Title\n\nIntro text.\n\n"
    assert after == "\n\n## License\nMIT\n"
    assert "old results" not in section
    assert "Synthetic demo data — not results on BBBC041Seg" in section
    assert "| Unet_grayscale |" in section and "| ResUnet_grayscale_scheduler |" in section
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", section)
    assert "experiments/demo/figures/Unet_grayscale_iou.png" in links
    assert len(links) == 2 + 3 * 2  # counts + comparison, then curves x2 + panel per run
    for link in links:
        assert not Path(link).is_absolute()
        assert (readme.parent / link).is_file(), link
    assert "early stop at epoch 8" in section
    assert readme.stat().st_mode & 0o777 == 0o644  # not the atomic temp file's 0600


def test_readme_update_is_idempotent(report):
    out, readme, _, _ = report
    first = readme.read_text()
    update_readme(readme, out, pd.read_csv(out / "results.csv"))
    assert readme.read_text() == first


def test_readme_without_markers_raises(tmp_path, report):
    out, _, _, _ = report
    readme = tmp_path / "README.md"
    readme.write_text(f"# no section\n{BEGIN}\n")
    with pytest.raises(ValueError, match=re.escape(str(readme))):
        update_readme(readme, out, pd.DataFrame({"experiment": ["x"]}))
    assert readme.read_text() == f"# no section\n{BEGIN}\n"


def test_no_run_folder_exits_nonzero(tmp_path, capsys):
    assert main([str(tmp_path)]) != 0
    assert "no run folder" in capsys.readouterr().err
    assert main([str(tmp_path / "missing")]) != 0


def test_bad_readme_fails_before_drawing(sweep, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    assert main([str(sweep), "--out", str(tmp_path / "f"), "--readme", str(readme)]) == 1
    assert f"{readme}: results markers not found" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_run_without_metrics_is_skipped_with_warning(report, sweep):
    out, _, _, stderr = report
    assert f"{(sweep / '2').resolve()}: skipped, no metrics.csv" in stderr
    assert len(pd.read_csv(out / "results.csv")) == 2


def test_report_does_not_import_torch():
    code = "import sys, bloodseg.report; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_loss_axis_turns_logarithmic_for_a_huge_first_epoch(tmp_path):
    """BN-VGG from scratch logs val loss ~140 in epoch 0; linear axes would flatten the rest."""
    from bloodseg.report.figures import _curve_figure

    folder = tmp_path / "vgg"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({"name": "vgg"}))
    rows = ["epoch,step,val/loss,train/loss_epoch", "0,9,140.0,", "0,9,,0.6", "1,19,0.3,",
            "1,19,,0.35", "2,29,0.2,", "2,29,,0.3"]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    run = load_run(folder)
    assert _curve_figure(run, "loss", "BCE loss").axes[0].get_yscale() == "log"
    assert _curve_figure(run, "iou", "IoU").axes[0].get_yscale() == "linear"
    calm = tmp_path / "calm"
    calm.mkdir()
    (calm / "meta.json").write_text(json.dumps({"name": "calm"}))
    (calm / "metrics.csv").write_text("\n".join(rows).replace("140.0", "0.5") + "\n")
    assert _curve_figure(load_run(calm), "loss", "x").axes[0].get_yscale() == "linear"


def test_report_modules_do_not_import_torch():
    """Every module of the package, the CLI and the gallery included."""
    code = ("import sys, bloodseg.cli.report, bloodseg.report.gallery; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# -- cell sizes ----------------------------------------------------------------------------


def test_size_figure_per_run(report, tmp_path):
    out, _, stdout, _ = report
    for name in ("Unet_grayscale", "ResUnet_grayscale_scheduler"):
        assert_png(out / f"{name}_sizes.png", min_bytes=10_000)
        assert str(out / f"{name}_sizes.png") in stdout
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "meta.json").write_text(json.dumps({"name": "bare"}))
    (bare / "metrics.csv").write_text("epoch,step,train/loss_step\n0,0,0.9\n")
    assert plot_sizes(load_run(bare), tmp_path / "f") is None  # no size_hist.csv: no figure


# -- failed and unfinished runs ------------------------------------------------------------


def make_job(folder: Path, log: str = "train") -> Path:
    """A Hydra job folder as the job leaves it before writing any result."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("name: x\n")
    (folder / f"{log}.log").write_text("[INFO] starting\n")
    return folder


@pytest.fixture
def mixed_sweep(tmp_path) -> Path:
    """One finished run, two failed, two unfinished, and job folders that are not runs."""
    root = tmp_path / "sweep"
    good = make_job(root / "0_good")
    (good / "meta.json").write_text(json.dumps({"name": "good", "status": "completed"}))
    (good / "metrics.csv").write_text("epoch,step,train/loss_step\n0,0,0.9\n")
    (good / "wandb" / "run-1" / "logs").mkdir(parents=True)  # W&B logs are not jobs
    (good / "wandb" / "run-1" / "logs" / "debug.log").write_text("wandb\n")
    failed = make_job(root / "1_oom")
    (failed / "error.txt").write_text("Traceback (most recent call last):\n  File x\n"
                                      "RuntimeError: CUDA out of memory\n\n")
    (failed / "meta.json").write_text(json.dumps({"name": "oom", "status": "failed",
                                                  "error": "RuntimeError: CUDA out of memory"}))
    no_txt = root / "2_lr"  # older layout: meta.json says failed, no error.txt
    no_txt.mkdir()
    (no_txt / "meta.json").write_text(json.dumps({"name": "lr", "status": "failed",
                                                  "error": "ValueError: Invalid learning rate"}))
    make_job(root / "3_started")  # killed before writing meta.json
    running = make_job(root / "4_running")
    (running / "meta.json").write_text(json.dumps({"name": "running", "status": "running"}))
    (running / "metrics.csv").write_text("epoch,step,train/loss_step\n0,0,0.9\n")
    make_job(root / "5_predict", log="predict")  # other commands' folders are not runs
    evaluated = make_job(root / "6_evaluate", log="evaluate")
    (evaluated / "test_metrics.json").write_text(json.dumps({"metrics": {"test/dice": 0.5}}))
    stopped = make_job(root / "7_stopped")  # SIGTERM after 7 of 12 epochs (bloodseg.train)
    (stopped / "meta.json").write_text(json.dumps({
        "name": "stopped", "status": "interrupted", "reason": "SIGTERM", "max_epochs": 12,
        "data_kind": "synthetic", "resume": RESUME}))
    write_metrics_csv(stopped / "metrics.csv", epochs=7, best=5, test_dice=0.0)
    (stopped / "checkpoints").mkdir()
    (stopped / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    (root / "sweep.log").write_text("a log above the jobs is not a job\n")
    return root


RESUME = "python train.py model=unet ckpt_path=/r/7_stopped/checkpoints/last.ckpt " \
         "hydra.run.dir=/r/7_stopped"


def test_find_runs_sorts_out_failed_and_unfinished(mixed_sweep):
    from bloodseg.report import find_runs

    found = find_runs([mixed_sweep])
    root = mixed_sweep.resolve()
    # an evaluate folder is a run without curves; an interrupted one a run without results
    assert found.runs == [root / "0_good", root / "6_evaluate", root / "7_stopped"]
    assert [(f.path.name, f.reason) for f in found.failed] == [
        ("1_oom", "RuntimeError: CUDA out of memory"),
        ("2_lr", "ValueError: Invalid learning rate")]
    assert [(u.path.name, u.reason) for u in found.unfinished] == [
        ("3_started", "no meta.json yet"), ("4_running", "meta.json status: running"),
        ("7_stopped", f"interrupted at epoch 7/12 (SIGTERM); resume with: {RESUME}")]


def test_report_lists_failed_and_unfinished_runs(mixed_sweep, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n{BEGIN}\n{END}\n")
    out = tmp_path / "figures"
    assert main([str(mixed_sweep), "--out", str(out), "--readme", str(readme)]) == 0
    err = capsys.readouterr().err
    root = mixed_sweep.resolve()
    assert "2 failed run(s), not in the table" in err
    assert f"{root / '1_oom'}: RuntimeError: CUDA out of memory" in err
    assert f"{root / '2_lr'}: ValueError: Invalid learning rate" in err
    assert "3 unfinished run(s), not in the table" in err
    assert f"{root / '3_started'} (no meta.json yet)" in err
    assert f"{root / '4_running'} (meta.json status: running)" in err
    assert f"{root / '7_stopped'} (interrupted at epoch 7/12 (SIGTERM); resume with: " in err
    for name in ("0_good", "5_predict", "6_evaluate", "wandb"):
        assert f"{name}:" not in err and f"{name} (" not in err
    assert pd.read_csv(out / "results.csv")["experiment"].tolist() == [
        "6_evaluate (evaluate)", "good"]
    assert (out / "stopped_loss.png").is_file()  # the interrupted run's curves so far
    assert not (out / "6_evaluate_evaluate_loss.png").exists()  # no history, no curves

    md = (out / "results.md").read_text()
    table_end = md.index("| good |")
    assert md.index("**Failed runs**") > table_end
    assert "- `../sweep/1_oom`: `RuntimeError: CUDA out of memory`" in md
    assert "- `../sweep/2_lr`: `ValueError: Invalid learning rate`" in md
    assert md.index("**Unfinished runs**") > md.index("**Failed runs**")
    assert "- `../sweep/3_started` (`no meta.json yet`)" in md
    assert "- `../sweep/4_running` (`meta.json status: running`)" in md
    # run-derived text (a command with paths) goes into the markdown as code only
    assert f"- `../sweep/7_stopped` (`interrupted at epoch 7/12 (SIGTERM); resume with: " \
           f"{RESUME}`)" in md
    assert "5_predict" not in md and "| stopped |" not in md

    section = readme.read_text().split(BEGIN)[1].split(END)[0]
    assert section.index("| good |") < section.index("**Failed runs**")
    assert "- `sweep/1_oom`: `RuntimeError: CUDA out of memory`" in section
    assert "- `sweep/3_started` (`no meta.json yet`)" in section


def test_only_failed_runs_still_named_before_the_error(tmp_path, capsys):
    folder = make_job(tmp_path / "sweep" / "0_x")
    (folder / "error.txt").write_text("ValueError: boom\n")
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "f")]) == 1
    err = capsys.readouterr().err
    assert f"{folder.resolve()}: ValueError: boom" in err and "no run folder" in err
    assert not (tmp_path / "f").exists()


def test_baseline_rows_score_otsu_on_the_runs_test_images(tmp_path):
    from bloodseg.data.synthetic import write_dataset
    from bloodseg.report.baselines import OTSU, OTSU_TUNED, baseline_rows
    from bloodseg.report.build import build_report
    from bloodseg.report.readme import readme_section

    data = write_dataset(tmp_path / "data", n_train=6, n_test=3, size=(96, 128), seed=1)
    run = make_run(tmp_path / "runs" / "a", "unet_gray", experiment=None, model="unet",
                   color="gray", dice=0.9)
    meta = json.loads((run / "meta.json").read_text())
    (run / "meta.json").write_text(json.dumps({**meta, "data_root": str(data)}))
    runs = [load_run(run)]
    rows = baseline_rows(runs)
    assert [r["experiment"] for r in rows] == [OTSU, OTSU_TUNED]
    for r in rows:
        assert 0.5 < r["dice"] <= 1 and 0 <= r["f1"] <= 1 and r["count_mae"] >= 0
        assert r["data_kind"] == "synthetic"
    assert rows[0]["dice"] == rows[1]["dice"]  # tuning moves the split, not the foreground

    written, table = build_report(runs, tmp_path / "fig", baselines=True)
    assert list(table["experiment"]) == ["unet_gray", OTSU, OTSU_TUNED]  # references last
    md = (tmp_path / "fig" / "results.md").read_text()
    assert f"| {OTSU} | — | — | synthetic |" in md and "the classical pipeline" in md
    section = readme_section(tmp_path, tmp_path / "fig", table)
    assert "### unet_gray" in section and f"### {OTSU}" not in section

    # a test folder that is gone costs its rows and a warning, not the report
    (run / "meta.json").write_text(json.dumps({**meta, "data_root": str(tmp_path / "gone")}))
    assert baseline_rows([load_run(run)]) == []
