"""gpu_check's settings: the command line, the modes, models and time budget of a run."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]

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


