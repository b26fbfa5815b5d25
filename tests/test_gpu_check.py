"""benchmarks/gpu_check.py: the CPU quick mode runs every section; the CUDA mode runs section 1.

The quick mode exercises the code paths the GPU session will run (Lightning vs plain loop,
FlopCounterMode, bf16, channels_last, torch.compile with the eager backend, the Kaggle-sized
pipeline on a handful of small images, the CLI smoke runs), so the script cannot rot
between GPU sessions.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks.gpucheck.main import main
from benchmarks.gpucheck.report import Report, environment
from benchmarks.gpucheck.settings import parse_args
from tests.conftest import REPO
from tests.helpers import cli

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_script():
    """The check's entry points (its sections are modules of benchmarks/gpucheck/)."""
    return SimpleNamespace(main=main, parse_args=parse_args, Report=Report,
                           environment=environment)


def rows_by_section(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in report["rows"]:
        out.setdefault(row["section"], []).append(row)
    return out


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.mark.slow
def test_quick_cpu_mode_measures_every_section(tmp_path):
    """Meanwhile ``python benchmarks/gpu_check.py --help``: the script, run as a file (no
    package around it), finds its sections as ``python -m benchmarks.gpu_check`` does."""
    out = tmp_path / "out"
    # as a user runs it: from elsewhere, nothing on PYTHONPATH
    env = {k: v for k, v in cli.environment().items() if k != "PYTHONPATH"}
    as_file = subprocess.Popen([sys.executable, str(SCRIPT), "--help"], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        # a generous budget: a busy shared CPU must not turn measurements into skips here
        report = load_script().main(["--device", "cpu", "--quick", "--out", str(out),
                                     "--work", str(tmp_path / "work"), "--budget-s", "900"])
        stdout, stderr = as_file.communicate(timeout=120)
    finally:
        if as_file.poll() is None:
            as_file.kill()
            as_file.wait()
    assert as_file.returncode == 0 and "--quick" in stdout, stderr[-2000:]
    on_disk = json.loads((out / "gpu_check.json").read_text())
    assert on_disk["rows"] == report["rows"]
    markdown = (out / "gpu_check.md").read_text()
    assert "| § | measurement |" in markdown and "dense matmul" in markdown

    meta = report["meta"]
    for key in ("torch", "cuda", "device_name", "lightning", "elapsed_s"):
        assert key in meta
    sections = rows_by_section(report)
    assert set(sections) == {"1", "2", "3"}
    # every CPU-runnable measurement gave numbers; only the DDP smoke run is off in quick mode
    problems = [(r["section"], r["name"], r["setting"], r["error"]) for r in report["rows"]
                if r["status"] != "ok" and r["name"] != "train.py -m trainer=ddp"]
    assert not problems, problems
    assert report["errors"] == []

    # 1: the limit, then Lightning vs plain with counted FLOPs for every mode, compile included
    steps = [r for r in sections["1"] if r["name"].startswith("train step")]
    modes = {r["setting"].split(" ", 2)[2].split(" (")[0] for r in steps}
    assert modes == {"fp32", "bf16", "bf16+cl", "bf16+cl+compile"}
    assert {r["name"] for r in steps} == {"train step unet-8", "train step attunet-8"}
    limit = next(r for r in sections["1"] if r["name"].startswith("dense matmul"))
    assert positive_finite(limit["metrics"]["bf16_tflops"])
    for r in steps:
        m = r["metrics"]
        assert positive_finite(r["ratio"]) and positive_finite(r["tflops"])
        assert positive_finite(r["of_limit"])
        assert m["flops_per_step"] > 1e8  # counted, a narrow U-Net at 64 px, batch 2
        assert r["ratio"] == pytest.approx(m["lightning_s_per_step"] / m["plain_s_per_step"])

    # 2: dataset, loader vs step rate, epochs with/without the watershed, the projection
    s2 = {r["name"]: r for r in sections["2"]}
    assert s2["generate Kaggle-sized data"]["metrics"]["images"] == 16
    assert positive_finite(s2["loader vs step rate"]["metrics"]["loader_over_step"])
    assert positive_finite(s2["epoch with watershed"]["metrics"]["test_s"])
    proj = s2["projected `make reproduce`"]["metrics"]
    assert len(proj["per_experiment_sequential_s"]) == 7
    assert positive_finite(proj["sequential_s"])
    assert all(positive_finite(v) for v in proj["joblib_gpu_s_by_gpus"].values())

    # 3: the real commands ran (subprocesses) and predict timed its images
    s3 = {r["name"]: r for r in sections["3"]}
    assert s3["train.py -m (joblib sweep)"]["status"] == "ok"
    assert s3["bloodseg.cli.evaluate"]["metrics"]["images"] == 4
    assert positive_finite(s3["bloodseg.cli.predict"]["metrics"]["steady_img_s"])
    assert (out / "logs" / "predict.log").is_file()


def test_failures_and_budget_become_rows(tmp_path):
    """One failing measurement is an error row, a short budget a skipped one; both recorded."""
    gc = load_script()
    s = gc.parse_args(["--device", "cpu", "--quick", "--out", str(tmp_path), "--budget-s", "5"])
    rep = gc.Report(s, gc.environment(s))

    def boom() -> dict:
        raise RuntimeError("kaput")

    rep.measure("1", "fails", "", boom, 0)
    rep.measure("1", "too long", "", lambda: {"result": "never"}, 1e6)
    rep.measure("1", "fine", "", lambda: {"result": "42", "ratio": 1.01}, 0)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [r["status"] for r in report["rows"]] == ["error", "skipped", "ok"]
    assert "kaput" in report["errors"][0]["error"]
    assert "time budget" in report["rows"][1]["error"]
    assert "| 1 | fine |  | 42 | 1.010 |" in (tmp_path / "gpu_check.md").read_text()


def test_sections_stay_small_and_run_as_a_module():
    """Each section a module under 600 lines; ``python -m benchmarks.gpu_check --help`` finds
    them (run as a file: test_quick_cpu_mode_measures_every_section)."""
    for path in (REPO / "benchmarks" / "gpucheck").glob("*.py"):
        assert len(path.read_text().splitlines()) <= 600, path
    as_module = cli.run("benchmarks.gpu_check", ["--help"], REPO, in_process=True)
    assert as_module.returncode == 0 and "--quick" in as_module.stdout, as_module.stderr


@pytest.mark.gpu
def test_cuda_section_one_briefly(tmp_path):
    """The non-quick mode's first section on CUDA, shortened: real TFLOP/s against the limit."""
    out = tmp_path / "out"
    report = load_script().main([
        "--device", "cuda", "--sections", "1", "--models", "unet", "--batches", "4",
        "--modes", "fp32,bf16,bf16+cl", "--steps", "5", "--warmup", "2",
        "--out", str(out), "--work", str(tmp_path / "work"), "--budget-s", "300"])
    assert report["meta"]["gpu_count"] >= 1
    rows = [r for r in report["rows"] if r["section"] == "1"]
    assert rows and all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    limit = next(r for r in rows if r["name"].startswith("dense matmul"))
    assert limit["metrics"]["bf16_tflops"] > 10  # any data-centre GPU
    for r in (r for r in rows if r["name"].startswith("train step")):
        assert positive_finite(r["tflops"]) and 0 < r["of_limit"] < 1.5
        assert positive_finite(r["ratio"])
    assert Path(out / "gpu_check.md").is_file()
