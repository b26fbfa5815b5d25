"""gpu_check section 1: train-step throughput (Lightning vs a plain loop, modes, TFLOP/s)."""

from __future__ import annotations

import math
import time

import torch

from benchmarks.steptime import (
    loader_s_per_batch,
    make_module,
    sync,
)
from bloodseg.config import group_config
from bloodseg.data.datamodule import BloodCellDataModule

from .common import (
    count_train_flops,
    lightning_step_s,
    plain_step_s,
    release,
    replicated_dataset,
)
from .report import Report, Skip, finite_positive, fmt
from .settings import (
    MODES,
    Settings,
)

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


