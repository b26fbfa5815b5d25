"""gpu_check section 3: the real commands (train, sweeps, DDP, predict) as subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from .common import (
    Generation,
    generate,
)
from .epoch import kaggle_generation
from .report import Report, Row, Skip, finite_positive
from .settings import (
    REPO,
    Settings,
)

# -- section 3: the real commands ----------------------------------------------------------


def run_cli(s: Settings, rep: Report, name: str, args: list[str], cwd: Path) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HYDRA_FULL_ERROR="1", PYTHONUNBUFFERED="1", WANDB_MODE="disabled")
    if s.threads:
        env["OMP_NUM_THREADS"] = str(s.threads)
    timeout = max(30.0, min(600.0, rep.s.budget_s - rep.elapsed() + 60))
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as err:
        rc, stdout, stderr = "timeout", str(err.stdout or ""), str(err.stderr or "")
    wall = time.perf_counter() - start
    logs = s.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{name}.log").write_text(
        f"$ {' '.join(args)}\n(cwd {cwd}) exit {rc} after {wall:.1f} s\n\n--- stdout\n"
        f"{stdout[-20000:]}\n--- stderr\n{stderr[-20000:]}\n")
    if rc != 0:
        raise RuntimeError(f"exit {rc} after {wall:.0f} s: {stderr.strip()[-600:]} "
                           f"(full log: logs/{name}.log)")
    return wall


def section_smoke(s: Settings, rep: Report) -> None:
    smoke = s.work / "smoke"
    state: dict = {}
    n_train, n_test = s.smoke_counts
    w, h = s.kaggle_size
    trainer = "gpu" if s.cuda else "cpu"

    def gen() -> dict:
        root = smoke / f"data-{w}x{h}"
        info = generate(root, n_train, n_test, (w, h), s.style, 1, s.procs)
        state["root"] = root
        return {"result": f"{info['seconds']:.1f} s" + (" (reused)" if info["reused"] else ""),
                "metrics": info}

    rep.measure("3", "smoke data", f"{n_train}+{n_test} @ {w}x{h}", gen, 15)
    if "2" in s.sections and "kaggle" not in rep.shared:
        # section 2's dataset takes ~1.5 min of all cores: generate it while the smoke runs
        # below (pass/fail checks) run; predict, which is timed, waits for it to finish
        try:
            rep.shared["kaggle"] = kaggle_generation(s, max(1, s.procs - 2))
        except Exception as err:  # noqa: BLE001  (reported by section 2)
            rep.shared["kaggle"] = err

    def common() -> list[str]:
        if "root" not in state:
            raise Skip("no smoke data")
        # data=bbbc041seg reads a folder (data=synthetic only generates its own); the counts
        # differ from Kaggle's, which warns
        args = ["profile=quick", "logger=csv", "callbacks.progress_bar=null", "data=bbbc041seg",
                f"data.root={state['root']}", f"data.image_size={s.image_size}",
                "trainer.max_epochs=1", "data.num_workers=0"]
        if s.smoke_width:
            args.append(f"model.base_channels={s.smoke_width}")
        return args

    def joblib_sweep() -> dict:
        sweep = smoke / "sweep-joblib"
        shutil.rmtree(sweep, ignore_errors=True)
        wall = run_cli(s, rep, "joblib_sweep", [
            str(REPO / "train.py"), "-m", "model=unet,attunet", "hydra/launcher=joblib",
            f"trainer={trainer}", *common(), f"hydra.sweep.dir={sweep}"], smoke)
        m = {"wall_s": wall}
        # job folders are <num>_<overrides> (conf/hydra/default.yaml): job 0 is model=unet
        jobs = sorted(p for p in sweep.iterdir() if (p / ".hydra").is_dir())
        if len(jobs) != 2:
            raise RuntimeError(f"expected 2 job folders in {sweep}, found {len(jobs)}")
        for job in jobs:
            res = json.loads((job / "test_metrics.json").read_text())["metrics"]
            m[job.name] = {k: res[k] for k in ("test/dice", "test/count_mae") if k in res}
        ckpt = jobs[0] / "checkpoints" / "best.ckpt"
        if not ckpt.is_file():
            raise RuntimeError(f"no checkpoint at {ckpt}")
        state["ckpt"] = ckpt
        return {"result": f"ok in {wall:.0f} s, 2 jobs with test_metrics.json",
                "metrics": m}

    rep.measure("3", "train.py -m (joblib sweep)",
                f"model=unet,attunet hydra/launcher=joblib trainer={trainer}", joblib_sweep,
                s.est["cli"] * 1.5)

    if s.ddp:
        def ddp_sweep() -> dict:
            sweep = smoke / "sweep-ddp"
            shutil.rmtree(sweep, ignore_errors=True)
            models = "unet" if s.quick else "unet,resunet"
            extra = [] if s.cuda else ["trainer.accelerator=cpu", "trainer.devices=2",
                                       "trainer.precision=32-true",
                                       "trainer.sync_batchnorm=false",
                                       "trainer.fast_dev_run=true"]
            wall = run_cli(s, rep, "ddp_sweep", [
                str(REPO / "train.py"), "-m", f"model={models}", "trainer=ddp", *common(),
                *extra, f"hydra.sweep.dir={sweep}"], smoke)
            jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
            for job in jobs:
                if not (sweep / job / "test_metrics.json").is_file():
                    raise RuntimeError(f"{job}: no test_metrics.json")
            return {"result": f"ok in {wall:.0f} s, jobs {', '.join(jobs)}",
                    "metrics": {"wall_s": wall, "jobs": jobs,
                                "devices": torch.cuda.device_count() if s.cuda else 2}}

        rep.measure("3", "train.py -m trainer=ddp",
                    f"devices={'all GPUs' if s.cuda else '2 CPU processes'}", ddp_sweep,
                    s.est["cli"] * 1.5)
    else:
        rep.rows.append(Row("3", "train.py -m trainer=ddp", "", "skipped",
                            error="off in quick mode (--ddp on runs it on 2 CPU processes)"))

    def evaluate() -> dict:
        if "ckpt" not in state:
            raise Skip("no checkpoint from the joblib sweep")
        out = smoke / "evaluate"
        shutil.rmtree(out, ignore_errors=True)
        wall = run_cli(s, rep, "evaluate", [
            "-m", "bloodseg.cli.evaluate", f"ckpt_path={state['ckpt']}",
            f"data.root={state['root']}", f"predict.device={s.device if s.cuda else 'cpu'}",
            f"hydra.run.dir={out}"], smoke)
        res = json.loads((out / "test_metrics.json").read_text())["metrics"]
        finite_positive(wall)
        return {"result": f"ok in {wall:.0f} s for {n_test} test images (incl. startup), "
                          f"dice {res.get('test/dice', float('nan')):.3f}",
                "metrics": {"wall_s": wall, "images": n_test, **res}}

    rep.measure("3", "bloodseg.cli.evaluate", f"device={s.device}, {n_test} test images",
                evaluate, s.est["cli"])

    def predict() -> dict:
        if "ckpt" not in state:
            raise Skip("no checkpoint from the joblib sweep")
        background = rep.shared.get("kaggle")
        if isinstance(background, Generation):
            with contextlib.suppress(Exception):  # its error is section 2's to report
                background.wait()  # a quiet CPU for the timed images
        inputs = smoke / "predict-in"
        out = smoke / "predict-out"
        for d in (inputs, out):
            shutil.rmtree(d, ignore_errors=True)
        inputs.mkdir(parents=True)
        images = sorted(state["root"].glob("*/original/*.png"))
        for i, src in enumerate(images):
            os.symlink(src, inputs / f"{i:03d}.png")
        wall = run_cli(s, rep, "predict", [
            "-m", "bloodseg.cli.predict", f"ckpt_path={state['ckpt']}", f"input={inputs}",
            f"output={out}", f"predict.device={s.device if s.cuda else 'cpu'}",
            f"hydra.run.dir={smoke / 'predict-hydra'}"], smoke)
        overlays = sorted((out / "overlays").glob("*.png"))
        if len(overlays) != len(images):
            raise RuntimeError(f"{len(overlays)} overlays for {len(images)} images")
        # each image's overlay is its last file: the spread of their times = steady rate
        times = sorted(p.stat().st_mtime for p in overlays)
        steady = (len(times) - 1) / (times[-1] - times[0]) if times[-1] > times[0] else None
        if steady is None:
            raise RuntimeError("overlay times do not differ: cannot time the images")
        finite_positive(steady)
        counts = (out / "counts.csv").read_text().strip().splitlines()[1:]
        return {"result": f"{steady:.2f} img/s at {w}x{h} (tile + watershed + 3 PNGs); "
                          f"{len(images)} images in {wall:.0f} s incl. startup",
                "metrics": {"steady_img_s": steady, "wall_s": wall, "images": len(images),
                            "wall_img_s": len(images) / wall, "counted": len(counts)}}

    rep.measure("3", "bloodseg.cli.predict", f"device={s.device}, {n_train + n_test} images "
                f"@ {w}x{h}", predict, s.est["cli"])


