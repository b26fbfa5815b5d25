"""gpu_check section 2: a Kaggle-sized epoch and the projection of `make reproduce`."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint

from benchmarks.steptime import (
    PhaseTimer,
    make_module,
)
from bloodseg.callbacks import InstanceMetricsCallback
from bloodseg.config import CONF_DIR, group_config
from bloodseg.data.bbbc041seg import list_split
from bloodseg.data.datamodule import BloodCellDataModule
from bloodseg.evaluation import score
from bloodseg.inference import Predictor

from .common import (
    Generation,
    count_train_flops,
    lightning_step_s,
    make_trainer,
    release,
)
from .report import Report, Skip, finite_positive
from .settings import (
    REPO,
    STARTUP_S,
    Settings,
    csv_list,
)

# -- section 2: a Kaggle-sized epoch and the projection of `make reproduce` -----------------


def study_experiments() -> dict[str, dict]:
    """experiment -> network and color (conf/experiment/*.yaml), in the order `make reproduce`
    numbers the sweep's jobs (the Makefile's EXPERIMENTS; job k trains on GPU k mod N)."""
    names = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
    with contextlib.suppress(OSError):
        for line in (REPO / "Makefile").read_text().splitlines():
            if line.startswith("EXPERIMENTS ?="):
                listed = csv_list(line.split("=", 1)[1])
                # only what `make reproduce` runs (count_real etc. are not the study's)
                names = [n for n in listed if n in names]
    out = {}
    for name in names:
        cfg = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"{name}.yaml")
        model = next((d["override /model"] for d in cfg.get("defaults", [])
                      if hasattr(d, "get") and "override /model" in d), "unet")
        out[name] = {"model": model, "color": OmegaConf.select(cfg, "data.color") or "gray"}
    return out


def kaggle_generation(s: Settings, procs: int) -> Generation:
    """Start generating (or find) the Kaggle-sized dataset of section 2."""
    n_train, n_test = s.kaggle_counts
    w, h = s.kaggle_size
    root = s.work / f"kaggle-{s.style}-{n_train}-{n_test}-{w}x{h}"
    return Generation(root, n_train, n_test, (w, h), s.style, 0, procs)


def section_epoch(s: Settings, rep: Report) -> None:
    state: dict = {}
    n_train, n_test = s.kaggle_counts
    w, h = s.kaggle_size
    background = rep.shared.pop("kaggle", None)  # started by section 3, if it ran

    def gen() -> dict:
        if isinstance(background, Exception):
            raise background
        g = background or kaggle_generation(s, s.procs)
        info = g.wait()
        state["root"] = g.out
        if info["reused"]:
            note = "reused from --work; time of its generation"
        else:
            note = "in the background of section 3" if background else "generated"
        return {"result": f"{info['seconds']:.0f} s ({note}), {info['procs']} processes, "
                          f"{info['seconds'] * info['procs'] / info['images']:.2f} "
                          "s/image/process",
                "metrics": {**info, "background": background is not None}}

    gen_est = 10 if background else (n_train + n_test) * 1.0 / s.procs + 10
    rep.measure("2", "generate Kaggle-sized data", f"{n_train}+{n_test} {s.style} @ {w}x{h}",
                gen, gen_est)

    def setup() -> dict:
        if "root" not in state:
            raise Skip("no dataset")
        dm = BloodCellDataModule(str(state["root"]), color="gray", image_size=s.image_size,
                                 batch_size=4, num_workers=0 if s.quick else 2,
                                 expected_counts=None if s.kaggle_counts == (1169, 159)
                                 else {},
                                 pin_memory=s.cuda)
        start = time.perf_counter()
        dm.setup("fit")
        dm.setup("test")
        sec = time.perf_counter() - start
        state["dm"], state["setup_s"] = dm, sec
        d = dm.describe()
        n = d["n_train"] + d["n_val"] + d["n_test"]
        return {"result": f"{sec:.1f} s, {n / sec:.0f} img/s (default 4 decode threads)",
                "metrics": {"seconds": sec, **{k: v for k, v in d.items()
                                                if k.startswith("n_")}}}

    rep.measure("2", "cache fill (setup)", f"decode + squash to {s.image_size}²", setup, 30)

    def loader() -> dict:
        if "dm" not in state:
            raise Skip("no datamodule")
        dm = state["dm"]
        start, n = time.perf_counter(), 0
        for batch in dm.train_dataloader():
            n += batch["image"].shape[0]
        sec = time.perf_counter() - start
        state["loader_img_s"] = n / sec
        return {"result": f"{n / sec:,.0f} img/s", "metrics": {"img_s": n / sec}}

    rep.measure("2", "DataLoader alone, one epoch", "b4 workers=" +
                ("0" if s.quick else "2"), loader, 10)

    base_width = s.width  # 64 = the study's widths (conf/model defaults)

    def epoch(watershed: bool) -> Callable[[], dict]:
        def run() -> dict:
            if "dm" not in state:
                raise Skip("no datamodule")
            dm = state["dm"]
            module = make_module("unet", base_width)
            phases = PhaseTimer()
            shutil.rmtree(s.work / "epoch-ckpt", ignore_errors=True)
            ckpt = ModelCheckpoint(dirpath=str(s.work / "epoch-ckpt"), monitor="val/loss",
                                   save_last=True)
            callbacks = [phases, ckpt]
            if watershed:
                callbacks.append(InstanceMetricsCallback(group_config("postprocess", "binary")))
            trainer = make_trainer(s, "32-true", callbacks, max_epochs=1,
                                   enable_checkpointing=True)
            start = time.perf_counter()
            trainer.fit(module, datamodule=dm)
            fit_s = time.perf_counter() - start
            train_s, val_s = phases.phases()
            d = dm.describe()
            m = {"fit_s": fit_s, "train_s": train_s, "val_s": val_s,
                 "step_img_s": d["n_train"] / train_s, "n_train": d["n_train"],
                 "n_val": d["n_val"]}
            if watershed:
                state["epoch_ws"] = m
                base = state.get("epoch_plain")
                if base:
                    m["watershed_s_per_val_image"] = (val_s - base["val_s"]) / d["n_val"]
                # the test stage as train.py runs it: the one inference path, native size
                test_start = time.perf_counter()
                predictor = Predictor(module.model_spec(), module.net, device=s.device)
                score(predictor, list_split(dm.root, "test"), n_pictures=0)
                m["test_s"] = time.perf_counter() - test_start
                state["test_s"] = m["test_s"]
            else:
                state["epoch_plain"] = m
            finite_positive(fit_s, train_s, val_s)
            del module, trainer
            release(s)
            return {"result": f"{fit_s:.1f} s/epoch (train {train_s:.1f} s = "
                              f"{d['n_train'] / train_s:,.0f} img/s, val {val_s:.1f} s)"
                              + (f", test pass {m['test_s']:.1f} s" if watershed else "")
                              + (f", watershed {m['watershed_s_per_val_image'] * 1e3:.0f} ms"
                                 "/val image" if "watershed_s_per_val_image" in m else ""),
                    "metrics": m}
        return run

    setting = f"unet fp32 b4 {s.image_size}², 1 epoch"
    rep.measure("2", "epoch without watershed", setting, epoch(False), s.est["fit"] * 2)
    rep.measure("2", "epoch with watershed", setting + " + test pass", epoch(True),
                s.est["fit"] * 3)

    def loader_vs_step() -> dict:
        if "loader_img_s" not in state or "epoch_plain" not in state:
            raise Skip("needs the loader and epoch rows")
        step = state["epoch_plain"]["step_img_s"]
        ratio = state["loader_img_s"] / step
        finite_positive(ratio)
        return {"result": f"loader {state['loader_img_s']:,.0f} img/s vs steps "
                          f"{step:,.0f} img/s = {ratio:.1f}x"
                          + (" (loader-bound!)" if ratio < 1.2 else ""),
                "metrics": {"loader_over_step": ratio, "loader_img_s": state["loader_img_s"],
                            "step_img_s": step}}

    rep.measure("2", "loader vs step rate", "unet fp32 b4 epoch", loader_vs_step, 1)

    # step time of each network of the study (what the projection needs)
    steps: dict[tuple[str, str], float] = {}
    warm, timed = s.warmup, max(2, s.steps // 2)
    for name in s.study_models:
        for precision in s.precisions:
            def run(name=name, precision=precision) -> dict:
                if "dm" not in state:
                    raise Skip("no datamodule")
                module = make_module(name, base_width)
                sec = lightning_step_s(s, module, state["dm"], precision, warm, timed)
                finite_positive(sec)
                del module
                release(s)
                steps[(name, precision)] = sec
                return {"result": f"{sec * 1e3:.1f} ms/step, {4 / sec:,.0f} img/s",
                        "metrics": {"s_per_step": sec}}

            rep.measure("2", f"study step {name}", f"b4 {s.image_size}² {precision}", run,
                        s.est["fit"])

    def projection() -> dict:
        if "epoch_ws" not in state or ("unet", "32-true") not in steps:
            raise Skip("needs the watershed epoch and the unet step time")
        ws, base = state["epoch_ws"], steps[("unet", "32-true")]
        flops_b1: dict[str, int] = {}
        estimated = []

        def step_s(model: str, precision: str) -> float:
            if (model, precision) in steps:
                return steps[(model, precision)]
            ref = steps.get(("unet", precision), base)
            for m in (model, "unet"):
                if m not in flops_b1:
                    # a ratio of two fully convolutional nets: any size divisible by 32 gives it
                    # (batch 2: BatchNorm at a 1x1 bottleneck needs two values per channel)
                    flops_b1[m] = count_train_flops(m, base_width, 2, 32, s.device)
            estimated.append(f"{model} {precision}")
            return ref * flops_b1[model] / flops_b1["unet"]

        fixed = state.get("setup_s", 0) + state.get("test_s", 0) + STARTUP_S + max(
            ws["fit_s"] - ws["train_s"] - ws["val_s"], 0)
        exps = study_experiments()
        parallel_precision = "bf16-mixed" if "bf16-mixed" in s.precisions else s.precisions[0]

        def job_s(model: str, precision: str) -> float:
            epoch_s = ws["train_s"] * step_s(model, precision) / base + ws["val_s"]
            return s.epochs * epoch_s + fixed

        seq = {e: job_s(v["model"], "32-true") for e, v in exps.items()}
        par = {e: job_s(v["model"], parallel_precision) for e, v in exps.items()}
        jobs = list(par.values())
        walls = {}
        for n_gpu in (1, 2, 4, len(jobs)):
            walls[str(n_gpu)] = max(sum(jobs[k] for k in range(len(jobs)) if k % n_gpu == g)
                                    for g in range(n_gpu))
        total = sum(seq.values())
        finite_positive(total, *walls.values())
        h = 3600
        return {"result": f"sequential (trainer=default, fp32) {total / h:.1f} h; joblib "
                          f"trainer={'gpu' if s.cuda else 'cpu'} ({parallel_precision}): "
                          + ", ".join(f"{k} GPU{'s' if k != '1' else ''} {v / h:.1f} h"
                              for k, v in walls.items())
                          + (f" ({', '.join(sorted(set(estimated)))}: step time from FLOPs)"
                             if estimated else ""),
                "metrics": {"sequential_s": total, "joblib_gpu_s_by_gpus": walls,
                            "per_experiment_sequential_s": seq,
                            "per_experiment_joblib_s": par, "fixed_s_per_job": fixed,
                            "epochs": s.epochs, "estimated_from_flops": estimated,
                            "upper_bound": "early stopping ends 5 of 7 experiments sooner"}}

    rep.measure("2", "projected `make reproduce`",
                f"7 experiments x {s.epochs} epochs, Kaggle-sized, upper bound", projection, 10)
    state.clear()


