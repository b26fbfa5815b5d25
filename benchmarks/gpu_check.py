"""GPU check: one prepared, time-boxed measurement run for a GPU session (``make gpu-check``).

Prints ONE table and writes it as ``gpu_check.json`` (machine-readable: versions, GPU, every
measurement, every error) and ``gpu_check.md`` into ``--out`` (default ``$OUT`` if set, else
``experiments/gpu_check/``). Both files are rewritten after every measurement, so a run that
is cut off still leaves what it measured. Every measurement is wrapped: a failure is a row
with its error and the rest still runs; a time budget (``--budget-s``, default 470 s) skips
what no longer fits, each section by its own deadline (sections run in the order 1, 3, 2 so
the CLI smoke runs survive a short budget).

1. Train-step throughput (images/s) and achieved TFLOP/s for unet (width 64), vgg16unet and
   attunet at 256², batch 4 and 32, in fp32, bf16-mixed, bf16-mixed + channels_last and
   + torch.compile. FLOPs of one forward+backward are counted with
   ``torch.utils.flop_counter.FlopCounterMode`` on the real batch. Each setting runs as a
   ``SegmentationModule`` in a Lightning ``Trainer`` and as a plain PyTorch loop on the same
   module and data (ratio = Lightning / plain step time), against the dense bf16 matmul rate
   measured in the same run ("the limit").
2. A Kaggle-sized synthetic dataset (1169/159 BBBC041-style smears at 1600x1200, generated
   once with a process pool into ``--work``, squashed to 256²): cache fill, loader-only rate
   vs step rate, one epoch with and without ``WatershedCallback``, the test pass, the step
   time of each network of the study, and the projected wall time of ``make reproduce``
   (7 experiments x 100 epochs) sequentially and with ``hydra/launcher=joblib trainer=gpu``.
3. The real commands as subprocesses: a 2-job joblib sweep (``trainer=gpu``), ``trainer=ddp``
   inside ``-m``, ``bloodseg.evaluate`` and ``bloodseg.predict`` (1600x1200 images/s
   including the watershed and the written files).

    python benchmarks/gpu_check.py                       # on the GPU box: ~8 min on one H100
    python benchmarks/gpu_check.py --device cpu --quick  # the same code paths in seconds
    python benchmarks/gpu_check.py --sections 1 --models unet --modes bf16,bf16+cl+compile

Without CUDA and without ``--device cpu`` the script runs ``--quick`` (its default ``--out`` is
``experiments/runs/gpu_check/quick``: CPU smoke values never land where GPU results go).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.flop_counter import FlopCounterMode

from bloodseg.callbacks import InstanceMetricsCallback as WatershedCallback
from bloodseg.config import CONF_DIR, group_config
from bloodseg.data.bbbc041seg import list_split
from bloodseg.data.datamodule import BloodCellDataModule
from bloodseg.data.synthetic import write_dataset
from bloodseg.evaluation import score
from bloodseg.inference import Predictor
from bloodseg.models import build_model
from bloodseg.module import SegmentationModule

REPO = Path(__file__).resolve().parents[1]
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-4}

# name -> (Lightning precision, channels_last, torch.compile)
MODES = {
    "fp32": ("32-true", False, False),
    "bf16": ("bf16-mixed", False, False),
    "bf16+cl": ("bf16-mixed", True, False),
    "bf16+cl+compile": ("bf16-mixed", True, True),
}
STUDY_MODELS = ("unet", "resunet", "vgg11unet", "vgg16unet", "attunet")
# section -> share of the budget by which its measurements must end (else they are skipped)
DEADLINES = {"1": 0.40, "3": 0.70, "2": 1.0}
RUN_ORDER = ("1", "3", "2")
STARTUP_S = 15.0  # python + imports + Trainer of one `train.py` job (projection constant)


# -- settings ------------------------------------------------------------------------------


@dataclass
class Settings:
    quick: bool
    device: str
    out: Path
    work: Path
    budget_s: float
    sections: list[str]
    # section 1
    models: list[str]
    size: int
    batches: list[int]
    modes: list[str]
    width: int
    steps: int
    warmup: int
    repeats: int
    workers: int
    compile_backend: str
    matmul_n: int
    # section 2
    procs: int
    kaggle_counts: tuple[int, int]
    kaggle_size: tuple[int, int]
    style: str
    image_size: int
    study_models: list[str]
    precisions: list[str]
    epochs: int
    # section 3
    smoke_counts: tuple[int, int]
    smoke_width: int | None
    ddp: bool
    threads: int | None = None
    est: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto | cuda | cuda:N | cpu")
    p.add_argument("--quick", action="store_true",
                   help="tiny widths, 64 px, few steps, a handful of small images (CPU, test)")
    p.add_argument("--out", default=None, help="results folder (default $OUT, else "
                   "experiments/gpu_check; --quick: experiments/runs/gpu_check/quick, so CPU "
                   "smoke values never land where GPU results go)")
    p.add_argument("--work", default=None, help="datasets and runs (default "
                   "experiments/runs/gpu_check; the Kaggle-sized data is reused from here)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="wall-time budget (default 470 s; quick 240 s)")
    p.add_argument("--sections", default="1,2,3", help="of 1 (train steps), 2 (Kaggle-sized "
                   "epoch), 3 (CLI smoke runs); they run in the order 1, 3, 2")
    p.add_argument("--models", default="unet,vgg16unet,attunet",
                   help="section 1 (quick: unet,attunet)")
    p.add_argument("--batches", default=None, help="section 1 (default 4,32; quick 2)")
    p.add_argument("--modes", default=",".join(MODES), help=f"of {', '.join(MODES)}")
    p.add_argument("--size", type=int, default=None, help="section 1 image size (256; quick 64)")
    p.add_argument("--width", type=int, default=None, help="base_channels (64; quick 8)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (30; quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (5; quick 1)")
    p.add_argument("--repeats", type=int, default=1, help="alternate Lightning/plain n times")
    p.add_argument("--workers", type=int, default=None, help="loader workers, section 1")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (inductor; quick: eager = dynamo only)")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul size (8192; CPU 256)")
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                   help="processes that generate the synthetic datasets")
    p.add_argument("--kaggle", default="1169,159", help="train,test images of section 2")
    p.add_argument("--style", default="bbbc041", help="synthetic style: bbbc041|bccd|mixed")
    p.add_argument("--study-models", default=None,
                   help="section 2 step times (default the five networks; quick unet,attunet)")
    p.add_argument("--epochs", type=int, default=100, help="epochs of the projection")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (quick: 1, robust on a shared CPU; else unchanged)")
    p.add_argument("--ddp", choices=("auto", "on", "off"), default="auto",
                   help="section 3 trainer=ddp sweep (auto: on with CUDA, off in quick)")
    a = p.parse_args(argv)

    device = a.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and not a.quick:
            print("no CUDA device: running --quick (pass --device cpu for full size on CPU)")
            a.quick = True
    if device.startswith("cuda") and not torch.cuda.is_available():
        p.error(f"--device {device}: no CUDA device here (use --device cpu --quick)")
    quick = a.quick
    work = Path(a.work or REPO / "experiments" / "runs" / "gpu_check")
    out = Path(a.out or os.environ.get("OUT") or (
        work / "quick" if quick else REPO / "experiments" / "gpu_check"))
    n_train, n_test = (int(v) for v in csv_list(a.kaggle))
    if quick:
        n_train, n_test = min(n_train, 12), min(n_test, 4)
    modes = csv_list(a.modes)
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; valid: {', '.join(MODES)}")
    ddp = {"on": True, "off": False, "auto": not quick}[a.ddp]
    s = Settings(
        quick=quick, device=device, out=out, work=work,
        budget_s=a.budget_s or (240.0 if quick else 470.0),
        sections=csv_list(a.sections),
        models=csv_list(a.models) if not quick or a.models != p.get_default("models")
        else ["unet", "attunet"],
        size=a.size or (64 if quick else 256),
        batches=[int(b) for b in csv_list(a.batches or ("2" if quick else "4,32"))],
        modes=modes,
        width=a.width or (8 if quick else 64),
        steps=a.steps or (2 if quick else 30),
        warmup=a.warmup if a.warmup is not None else (1 if quick else 5),
        repeats=max(1, a.repeats),
        workers=a.workers if a.workers is not None else (0 if quick else 4),
        compile_backend=a.compile_backend or ("eager" if quick else "inductor"),
        matmul_n=a.matmul_n or (8192 if device.startswith("cuda") and not quick else 256),
        procs=max(1, a.procs),
        kaggle_counts=(n_train, n_test),
        kaggle_size=(160, 120) if quick else (1600, 1200),
        style=a.style,
        image_size=64 if quick else 256,
        study_models=csv_list(a.study_models) if a.study_models
        else (["unet", "attunet"] if quick else list(STUDY_MODELS)),
        # trainer=gpu trains in bf16-mixed; on a CPU the projection is for fp32 alone
        precisions=["32-true", "bf16-mixed"] if device.startswith("cuda") else ["32-true"],
        epochs=a.epochs,
        smoke_counts=(6, 4) if quick else (8, 8),
        smoke_width=None if quick else (a.width or 64),
        ddp=ddp,
        threads=a.threads or (1 if quick else None),
    )
    # rough seconds per measurement, for the budget guard
    # realistic, not pessimistic: a row is skipped when its estimate exceeds what is left
    s.est = {"step": 2 if quick else 8, "compile": 10 if quick else 90,
             "cli": 30 if quick else 25, "fit": 5 if quick else 8}
    return s


# -- report: rows, budget, files -----------------------------------------------------------


@dataclass
class Row:
    section: str
    name: str
    setting: str = ""
    status: str = "ok"  # ok | error | skipped
    result: str = ""
    ratio: float | None = None  # Lightning / plain step time
    tflops: float | None = None
    of_limit: float | None = None  # tflops / dense bf16 matmul TFLOP/s
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    error: str | None = None


class Skip(Exception):
    """A measurement that cannot run (a prerequisite failed or was skipped)."""


class Report:
    def __init__(self, s: Settings, meta: dict) -> None:
        self.s, self.meta, self.rows = s, meta, []
        self.shared: dict = {}  # passed between sections (the background generation)
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self, section: str) -> float:
        deadline = DEADLINES.get(section, 1.0) * self.s.budget_s
        return min(self.s.budget_s, deadline) - self.elapsed()

    def measure(self, section: str, name: str, setting: str, fn: Callable[[], dict],
                est_s: float) -> Row:
        """Run ``fn`` (returns Row fields) unless the section's time is short; never raises."""
        row = Row(section, name, setting)
        left = self.left(section)
        if est_s > left:
            row.status = "skipped"
            row.error = f"time budget: {max(left, 0):.0f} s left in section {section}, " \
                        f"needs ~{est_s:.0f} s"
        else:
            start = time.perf_counter()
            try:
                for key, value in fn().items():
                    setattr(row, key, value)
            except Skip as err:
                row.status, row.error = "skipped", str(err)
            except Exception as err:  # noqa: BLE001  (one failure must not stop the check)
                row.status = "error"
                row.error = f"{type(err).__name__}: {err}"[:2000]
                row.metrics["traceback"] = traceback.format_exc()[-4000:]
                if self.s.cuda:
                    torch.cuda.empty_cache()
            row.seconds = round(time.perf_counter() - start, 2)
        self.rows.append(row)
        shown = row.result if row.status == "ok" else f"{row.status.upper()}: {row.error}"
        print(f"[{self.elapsed():6.1f}s] {section} {name} | {setting} | {shown}", flush=True)
        self.write()
        return row

    # -- output ----------------------------------------------------------------------------

    def to_json(self) -> dict:
        counts: dict[str, dict[str, int]] = {}
        for r in self.rows:
            c = counts.setdefault(r.section, {"ok": 0, "error": 0, "skipped": 0})
            c[r.status] += 1
        return {
            "meta": {**self.meta, "elapsed_s": round(self.elapsed(), 1)},
            "settings": {k: (str(v) if isinstance(v, Path) else v)
                         for k, v in asdict(self.s).items()},
            "sections": counts,
            "rows": [asdict(r) for r in self.rows],
            "errors": [{"section": r.section, "name": r.name, "setting": r.setting,
                        "error": r.error} for r in self.rows if r.status == "error"],
        }

    def table(self) -> str:
        head = ["§", "measurement", "setting", "result", "Lightning/plain", "TFLOP/s",
                "of bf16 matmul", "status"]
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join(["---"] * 3 + ["---"] + ["---:"] * 3 + ["---"]) + "|"]
        order = {sec: i for i, sec in enumerate(("1", "2", "3"))}
        for r in sorted(self.rows, key=lambda r: order.get(r.section, 9)):
            status = r.status if r.status == "ok" else f"{r.status}: {shorten(r.error, 240)}"
            cells = [r.section, r.name, r.setting, r.result, fmt(r.ratio, 3), fmt(r.tflops, 1),
                     f"{r.of_limit:.0%}" if r.of_limit is not None else "", status]
            lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ")
                                             for c in cells) + " |")
        return "\n".join(lines)

    def markdown(self) -> str:
        m = self.meta
        mode = "quick (CPU smoke of the code paths)" if self.s.quick else "full"
        return (
            f"# GPU check: {m['device_name']}\n\n"
            f"{m['date']} · mode {mode} · torch {m['torch']} (CUDA {m['cuda']}, cuDNN "
            f"{m['cudnn']}) · Lightning {m['lightning']} · {m['cpus']} CPUs · "
            f"budget {self.s.budget_s:.0f} s, elapsed {self.elapsed():.0f} s\n\n"
            "Lightning/plain: step time in a Lightning Trainer over the same step in a plain "
            "PyTorch loop (1.00 = no overhead). TFLOP/s: FlopCounterMode FLOPs of one "
            "forward+backward over the Lightning step time. *of bf16 matmul*: that rate over "
            "the dense bf16 matmul rate measured in this run.\n\n"
            + self.table() + "\n"
        )

    def write(self) -> None:
        self.s.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu_check.json", json.dumps(self.to_json(), indent=1)),
                           ("gpu_check.md", self.markdown())):
            tmp = self.s.out / f".{name}.tmp"
            tmp.write_text(text)
            os.replace(tmp, self.s.out / name)


def shorten(text: str | None, n: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 12] + " … (JSON)"


def fmt(v: float | None, digits: int) -> str:
    if v is None:
        return ""
    return f"{v:.{digits}f}" if abs(v) >= 10 ** -digits * 100 else f"{v:.2g}"


def finite_positive(*values: float) -> None:
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"measured {v!r}: not a positive finite number")


def environment(s: Settings) -> dict:
    import pytorch_lightning

    cuda = s.cuda and torch.cuda.is_available()
    props = torch.cuda.get_device_properties(torch.device(s.device)) if cuda else None
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "device": s.device,
        "device_name": props.name if props else f"CPU ({platform.processor() or 'cpu'})",
        "gpu_memory_gib": round(props.total_memory / 2**30, 1) if props else None,
        "compute_capability": f"{props.major}.{props.minor}" if props else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "lightning": pytorch_lightning.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "argv": sys.argv,
    }


# -- shared pieces: sync, timers, modules, loops -------------------------------------------


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepTimer(pl.Callback):
    """Wall time of ``steps`` training steps after ``warmup``; syncs only at both ends, so
    Lightning, like the plain loop, may queue GPU work ahead."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps = warmup, steps
        self.start = self.end = 0.0
        self.done = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            sync(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.warmup + self.steps and not self.end:
            sync(pl_module.device)
            self.end = time.perf_counter()
            self.done = trainer.global_step - self.warmup

    def seconds_per_step(self) -> float:
        if self.done <= 0:
            raise RuntimeError("no timed steps ran (dataset too small?)")
        return (self.end - self.start) / self.done


class PhaseTimer(pl.Callback):
    """Train and validation time of one epoch (synced at the phase boundaries)."""

    def __init__(self) -> None:
        self.t: dict[str, float] = {}

    def _mark(self, key: str, pl_module) -> None:
        sync(pl_module.device)
        self.t[key] = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._mark("train_start", pl_module)

    def on_validation_start(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._mark("val_start", pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._mark("val_end", pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._mark("train_end", pl_module)

    def phases(self) -> tuple[float, float]:
        t = self.t
        train_end = min(t["train_end"], t.get("val_start", t["train_end"]))
        val = t["val_end"] - t["val_start"] if "val_start" in t and "val_end" in t else 0.0
        return train_end - t["train_start"], val


def model_config(name: str, width: int | None) -> dict:
    kwargs = {"in_channels": 1}
    if width and "base_channels" in group_config("model", name):
        kwargs["base_channels"] = width
    return group_config("model", name, **kwargs)


def make_module(name: str, width: int | None, channels_last: bool = False) -> SegmentationModule:
    torch.manual_seed(0)
    return SegmentationModule(model=model_config(name, width), loss="bce", optimizer=ADAM,
                              channels_last=channels_last)


def make_trainer(s: Settings, precision: str, callbacks: list, **kwargs) -> pl.Trainer:
    accel, devices = ("cpu", 1)
    if s.cuda:
        index = torch.device(s.device).index
        accel, devices = "gpu", [index] if index is not None else 1
    options = dict(
        accelerator=accel, devices=devices, precision=precision, callbacks=callbacks,
        logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=str(s.work),
    )
    options.update(kwargs)
    return pl.Trainer(**options)


def release(s: Settings) -> None:
    """Drop finished Trainers (reference cycles hold their loader workers) and GPU memory."""
    gc.collect()
    if s.cuda:
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.empty_cache()


def endless(loader) -> Iterator:
    while True:
        yield from loader


def lightning_step_s(s: Settings, module, dm, precision: str, warmup: int, steps: int) -> float:
    timer = StepTimer(warmup, steps)
    trainer = make_trainer(s, precision, [timer], max_steps=warmup + steps,
                           limit_val_batches=0)
    trainer.fit(module, train_dataloaders=dm.train_dataloader())
    return timer.seconds_per_step()


def plain_step_s(s: Settings, module, dm, precision: str, channels_last: bool) -> float:
    """The same step by hand: forward, BCE, backward, Adam, torchmetrics update."""
    device = torch.device(s.device)
    module.to(device).train()
    net, criterion, metrics = module.net, module.criterion, module.train_metrics
    opt = torch.optim.Adam(net.parameters(), lr=ADAM["lr"])
    dtype = torch.bfloat16 if precision.startswith("bf16") else None
    batches = endless(dm.train_dataloader())
    start = 0.0
    for step in range(s.warmup + s.steps):
        if step == s.warmup:
            sync(device)
            start = time.perf_counter()
        batch = next(batches)
        x = batch["image"].to(device, non_blocking=True)
        mask = batch["mask"].to(device, non_blocking=True)
        # the loss's target (the binary mask, or the module's training target where batches
        # carry one); the pixel metrics compare the foreground with the mask
        y = batch["target"].to(device, non_blocking=True) if "target" in batch else mask
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = net(x)
            loss = criterion(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        metrics.update(torch.sigmoid(logits[:, :1].detach().float()), mask.int())
    sync(device)
    metrics.reset()
    return (time.perf_counter() - start) / s.steps


def count_train_flops(name: str, width: int | None, batch: int, size: int,
                      device: str) -> int:
    """FLOPs of one fp32 forward + BCE + backward, counted by FlopCounterMode (not guessed)."""
    torch.manual_seed(0)
    net = build_model(name, **{k: v for k, v in model_config(name, width).items()
                               if k != "_target_"}).to(device)
    x = torch.randn(batch, 1, size, size, device=device)
    y = (torch.rand(batch, 1, size, size, device=device) > 0.5).float()
    with FlopCounterMode(display=False) as counter:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
    flops = counter.get_total_flops()
    del net, x, y, loss
    return int(flops)


def loader_s_per_batch(dm, batches: int) -> float:
    it = endless(dm.train_dataloader())
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


# -- synthetic data ------------------------------------------------------------------------


@contextlib.contextmanager
def main_module_hidden() -> Iterator[None]:
    """Workers need only ``write_dataset``; unless ``__main__`` is hidden while they start,
    multiprocessing makes each of them re-import this script (torch, Lightning: seconds)."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__.pop(k) for k in ("__file__",) if main and k in main.__dict__}
    spec = getattr(main, "__spec__", None)
    if main is not None:
        main.__spec__ = None
    try:
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)
            main.__spec__ = spec


class Generation:
    """``write_dataset`` split into chunks over a process pool (running in the background
    from construction on), merged into one Kaggle-layout folder by :meth:`wait`; a folder
    that already holds the same dataset is reused."""

    def __init__(self, out: Path, n_train: int, n_test: int, size: tuple[int, int],
                 style: str, seed: int, procs: int) -> None:
        self.out, self.pool, self.error = out, None, None
        self.spec = {"n_train": n_train, "n_test": n_test, "size": list(size),
                     "style": style, "seed": seed}
        self.info: dict | None = None
        marker = out / ".gpu_check.json"
        if marker.is_file():
            info = json.loads(marker.read_text())
            if info.get("spec") == self.spec:
                self.info = {**info, "reused": True}
                return
        shutil.rmtree(out, ignore_errors=True)
        self.parts = out.parent / f".{out.name}.parts"
        shutil.rmtree(self.parts, ignore_errors=True)
        chunk = max(1, math.ceil((n_train + n_test) / (procs * 3)))
        self.tasks = []
        for split, n in (("train", n_train), ("test", n_test)):
            for first in range(0, n, chunk):
                k = min(chunk, n - first)
                i = len(self.tasks)
                self.tasks.append((self.parts / f"{i:04d}", k if split == "train" else 0,
                                   k if split == "test" else 0, tuple(size),
                                   seed * 100_000 + i, style))
        self.procs = min(procs, len(self.tasks))
        self.start, self.end = time.perf_counter(), None
        # forkserver: no fork of this process (CUDA, OpenCV thread pools), and a server that
        # imports only the generator, so workers start in milliseconds; one OpenCV thread each
        mp = multiprocessing.get_context("forkserver")
        mp.set_forkserver_preload(["bloodseg.data.synthetic"])
        with main_module_hidden():
            self.pool = mp.Pool(self.procs, initializer=cv2.setNumThreads, initargs=(1,))
        self.result = self.pool.starmap_async(write_dataset, self.tasks, chunksize=1,
                                              callback=self._finished)

    def _finished(self, _) -> None:
        self.end = time.perf_counter()

    def wait(self) -> dict:
        """The dataset's info once it is complete (raises the workers' error, every call)."""
        if self.info is not None:
            return self.info
        if self.error is not None:
            raise self.error
        try:
            self.result.get()
        except Exception as err:
            self.error = err
            self.cancel()
            raise
        self.pool.close()
        self.pool.join()
        self.pool = None
        out = self.out
        for split in ("train", "test"):
            for kind in ("original", "mask", "instances"):
                (out / split / kind).mkdir(parents=True, exist_ok=True)
        for i, task in enumerate(self.tasks):
            for src in task[0].glob("*/*/*.png"):
                split, kind = src.parent.parent.name, src.parent.name
                os.replace(src, out / split / kind / f"{i:04d}-{src.name}")
        shutil.rmtree(self.parts, ignore_errors=True)
        info = {"spec": self.spec, "seconds": round((self.end or time.perf_counter())
                                                    - self.start, 1),
                "procs": self.procs, "images": self.spec["n_train"] + self.spec["n_test"]}
        (out / ".gpu_check.json").write_text(json.dumps(info))
        self.info = {**info, "reused": False}
        return self.info

    def cancel(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool = None


def generate(out: Path, n_train: int, n_test: int, size: tuple[int, int], style: str,
             seed: int, procs: int) -> dict:
    return Generation(out, n_train, n_test, size, style, seed, procs).wait()


def replicated_dataset(root: Path, size: int, n_unique: int, n_total: int) -> Path:
    """``n_total`` training pairs of ``size``² made of ``n_unique`` generated ones (symlinks),
    so the timed steps of one fit stay inside one epoch."""
    spec = {"size": size, "n_unique": n_unique, "n_total": n_total}
    marker = root / ".gpu_check.json"
    if marker.is_file() and json.loads(marker.read_text()) == spec:
        return root
    shutil.rmtree(root, ignore_errors=True)
    src = write_dataset(root.parent / f".{root.name}.src", n_unique, 1, size=(size, size),
                        seed=0, overwrite=True)
    stems = sorted(p.stem for p in (src / "train" / "original").glob("*.png"))
    for split, n in (("train", n_total), ("test", 0)):
        for kind in ("original", "mask", "instances"):
            d = root / split / kind
            d.mkdir(parents=True)
            for j in range(n):
                stem = stems[j % len(stems)]
                os.symlink(src / "train" / kind / f"{stem}.png", d / f"{j:05d}-{stem}.png")
    marker.write_text(json.dumps(spec))
    return root


# -- section 1: train-step throughput ------------------------------------------------------


def matmul_tflops(device: str, dtype: torch.dtype, n: int, tf32: bool = False) -> float:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = a @ b
        for _ in range(3):
            torch.matmul(a, b, out=c)
        sync(device)
        iters, start = 0, time.perf_counter()
        while iters < 5 or time.perf_counter() - start < 0.5:
            torch.matmul(a, b, out=c)
            iters += 1
            if iters % 10 == 0:
                sync(device)
        sync(device)
        return 2 * n**3 * iters / (time.perf_counter() - start) / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def section_train_step(s: Settings, rep: Report) -> None:
    limit: dict[str, float] = {}

    def measure_limit() -> dict:
        rates = {"bf16": matmul_tflops(s.device, torch.bfloat16, s.matmul_n)}
        rates["fp32"] = matmul_tflops(s.device, torch.float32, s.matmul_n)
        if s.cuda:
            rates["tf32"] = matmul_tflops(s.device, torch.float32, s.matmul_n, tf32=True)
        finite_positive(*rates.values())
        limit.update(rates)
        return {"result": f"{fmt(rates['bf16'], 1)} TFLOP/s bf16 (" + ", ".join(
                    f"{k} {fmt(v, 1)}" for k, v in rates.items() if k != "bf16") + ")",
                "tflops": rates["bf16"], "of_limit": 1.0,
                "metrics": {f"{k}_tflops": v for k, v in rates.items()}}

    rep.measure("1", "dense matmul = the limit", f"{s.matmul_n}² torch.matmul", measure_limit,
                5)

    dms: dict[int, BloodCellDataModule] = {}

    def data_for(bs: int) -> BloodCellDataModule:
        if bs not in dms:
            need = (s.warmup + s.steps + 1) * max(s.batches)
            root = replicated_dataset(s.work / f"steps-{s.size}px", s.size, 32,
                                      math.ceil(need / 0.9) + 8)
            dm = BloodCellDataModule(str(root), color="gray", image_size=s.size,
                                     batch_size=bs, num_workers=s.workers, expected_counts={},
                                     pin_memory=s.cuda)
            dm.setup("fit")
            dms[bs] = dm
        return dms[bs]

    for bs in s.batches:
        def loader(bs=bs) -> dict:
            sec = loader_s_per_batch(data_for(bs), s.steps)
            finite_positive(sec)
            return {"result": f"{bs / sec:,.0f} img/s", "metrics": {"img_s": bs / sec}}

        rep.measure("1", "DataLoader alone", f"b{bs} {s.size}² workers={s.workers}", loader, 5)

    flops: dict[tuple[str, int], int] = {}

    def row(name: str, bs: int, mode: str) -> None:
        precision, cl, comp = MODES[mode]
        width = s.width if "base_channels" in group_config("model", name) else None
        label = f"{name}" + (f"-{width}" if width else "")
        setting = f"b{bs} {s.size}² {mode}" + (f" ({s.compile_backend})" if comp else "")

        def run() -> dict:
            if limit.get("bf16") is None:
                raise Skip("no matmul limit measured")
            dm = data_for(bs)
            if (name, bs) not in flops:
                flops[(name, bs)] = count_train_flops(name, width, bs, s.size, s.device)
            module = make_module(name, width, channels_last=cl)
            if comp:
                module.net = torch.compile(module.net, backend=s.compile_backend)
            first = time.perf_counter()
            light, plain = [], []
            for _ in range(s.repeats):
                light.append(lightning_step_s(s, module, dm, precision, s.warmup, s.steps))
                if not plain:
                    first_fit_s = time.perf_counter() - first
                plain.append(plain_step_s(s, module, dm, precision, cl))
            t_l, t_p = min(light), min(plain)
            finite_positive(t_l, t_p)
            f = flops[(name, bs)]
            tflops = f / t_l / 1e12
            m = {"lightning_s_per_step": t_l, "plain_s_per_step": t_p,
                 "lightning_img_s": bs / t_l, "plain_img_s": bs / t_p,
                 "lightning_over_plain": t_l / t_p, "flops_per_step": f,
                 "tflops_lightning": tflops, "tflops_plain": f / t_p / 1e12,
                 "of_bf16_matmul": tflops / limit["bf16"],
                 "params": sum(p.numel() for p in module.parameters()),
                 "first_fit_s": first_fit_s,
                 "max_memory_gib": (torch.cuda.max_memory_allocated() / 2**30) if s.cuda
                 else None}
            del module
            release(s)
            return {"result": f"{bs / t_l:,.0f} img/s (plain {bs / t_p:,.0f})"
                              + (f", compile + first fit {first_fit_s:.0f} s" if comp else ""),
                    "ratio": t_l / t_p, "tflops": tflops, "of_limit": tflops / limit["bf16"],
                    "metrics": m}

        est = s.est["compile"] if comp else s.est["step"]
        rep.measure("1", f"train step {label}", setting, run, est)

    # largest batch first (the throughput question), compile last (slowest to set up), so a
    # short budget drops the least useful rows
    plain_modes = [m for m in s.modes if not MODES[m][2]]
    for bs in sorted(s.batches, reverse=True):
        for name in s.models:
            for mode in plain_modes:
                row(name, bs, mode)
    for bs in sorted(s.batches, reverse=True):
        for name in s.models:
            for mode in (m for m in s.modes if MODES[m][2]):
                row(name, bs, mode)
    torch._dynamo.reset()  # drop the compiled graphs
    dms.clear()
    if s.cuda:
        torch.cuda.empty_cache()


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
                callbacks.append(WatershedCallback(group_config("postprocess", "binary")))
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
            "-m", "bloodseg.evaluate", f"ckpt_path={state['ckpt']}",
            f"data.root={state['root']}", f"predict.device={s.device if s.cuda else 'cpu'}",
            f"hydra.run.dir={out}"], smoke)
        res = json.loads((out / "test_metrics.json").read_text())["metrics"]
        finite_positive(wall)
        return {"result": f"ok in {wall:.0f} s for {n_test} test images (incl. startup), "
                          f"dice {res.get('test/dice', float('nan')):.3f}",
                "metrics": {"wall_s": wall, "images": n_test, **res}}

    rep.measure("3", "bloodseg.evaluate", f"device={s.device}, {n_test} test images",
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
            "-m", "bloodseg.predict", f"ckpt_path={state['ckpt']}", f"input={inputs}",
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

    rep.measure("3", "bloodseg.predict", f"device={s.device}, {n_train + n_test} images "
                f"@ {w}x{h}", predict, s.est["cli"])


# -- main ----------------------------------------------------------------------------------


SECTIONS: dict[str, tuple[str, Callable[[Settings, Report], None]]] = {
    "1": ("train-step throughput", section_train_step),
    "2": ("Kaggle-sized epoch", section_epoch),
    "3": ("CLI smoke runs", section_smoke),
}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Lightning's info lines and the warnings that do not matter here, off (for this run)."""
    import logging

    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch",
                                              "lightning_fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for pattern in (".*does not have many workers.*", ".*Tensor Cores.*",
                        ".*exceeds the number of.*", ".*is smaller than the logging interval.*",
                        ".*Precision bf16-mixed is not supported.*", ".*predict_dataloader.*",
                        ".*checkpoint.*", ".*sync_dist.*", ".*LeafSpec.*",
                        ".*but have no `val_dataloader`.*"):
            warnings.filterwarnings("ignore", message=pattern)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def main(argv: list[str] | None = None) -> dict:
    """Run the check; returns the report (the JSON written to ``--out``)."""
    s = parse_args(argv)
    s.work.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if s.threads:
        torch.set_num_threads(s.threads)
    rep = Report(s, environment(s))
    try:
        with quiet():
            rep.write()
            for sec in RUN_ORDER:
                if sec not in s.sections:
                    continue
                title, fn = SECTIONS[sec]
                print(f"== section {sec}: {title}", flush=True)
                try:
                    fn(s, rep)
                except Exception as err:  # noqa: BLE001  (the next section still runs)
                    rep.rows.append(Row(sec, f"section {sec}", title, "error",
                                        error=f"{type(err).__name__}: {err}"[:2000],
                                        metrics={"traceback": traceback.format_exc()[-4000:]}))
    finally:
        for item in rep.shared.values():
            if isinstance(item, Generation):
                item.cancel()
        torch.set_num_threads(threads)
        rep.write()
    print()
    print(rep.markdown())
    print(f"written: {s.out / 'gpu_check.json'} and {s.out / 'gpu_check.md'}")
    return rep.to_json()


if __name__ == "__main__":
    main()
