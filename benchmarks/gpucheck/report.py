"""gpu_check's report: its rows, the time budget, and the JSON / markdown written to --out."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .settings import (
    DEADLINES,
    Settings,
)

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


