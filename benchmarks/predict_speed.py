"""Where a prediction's time goes, which runtime runs the network fastest with the same counts,
and what a folder costs end to end: ``bloodseg-predict`` measured on real smears, in one run.

1. **Stages** of the one inference path (:class:`bloodseg.inference.Predictor`) on the first
   ``--images`` smears of a Kaggle-layout folder (default: the 40 shared BBBC041Seg pairs'
   images, native 1600x1200), on ``--threads`` threads, for today's path (``torch``, instances
   found at native size), the default (``auto``) and ``auto+network`` (instances on the
   network's maps, ``predict.postprocess_at=network``): read
   (decode the file), preprocess (gray, contrast, scale, normalise), network (the forward
   pass and its decoding), resize (maps to native size), post-processing
   (watershed -> labels), trust (interval + review), measurements (cells.csv rows), writing
   (mask, labels and overlay PNGs encoded and written).
2. **Runtimes** side by side on the network stage: eager fp32, channels_last, torch.compile,
   ONNX Runtime (graph optimisations on), OpenVINO (fp32, and bf16 where the CPU has it; if
   installed), ONNX Runtime int8
   (static QDQ quantization calibrated on ``--calibration`` of the model's training images),
   each with the parity rule on ``--parity-images`` smears: per-image counts equal to eager
   fp32's on all but 2 of 40 (5 %), none off by more than 1, F1@0.5 against the masks within
   0.002. Only a runtime that passes may be ``predict.backend=auto``'s choice. The last row,
   ``onnxruntime+network``, is ONNX Runtime with the instances found on the network's maps
   (``predict.postprocess_at=network``), under the same rule.
3. **End to end**: ``bloodseg-predict`` on ``--end-to-end`` smears as a user runs it (start-up
   included), today's path (``predict.backend=torch predict.prefetch=0``) against the default
   and against ``predict.postprocess_at=network``.

    python -m benchmarks.predict_speed                      # count_real, all of the above
    python -m benchmarks.predict_speed --variants torch,onnxruntime --parity-images 10
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STAGES = ("read", "preprocess", "network", "resize", "post-processing", "trust", "measurements",
          "writing")
VARIANTS = ("torch", "torch-channels_last", "torch-compile", "onnxruntime", "openvino",
            "openvino-bf16", "onnxruntime-int8", "onnxruntime+network")
#: variants whose instances are found on the network's maps (predict.postprocess_at=network)
AT_NETWORK = "+network"
#: parity with eager fp32 (the issue's rule, for 40 smears): share of equal counts, largest
#: count difference, largest F1@0.5 change
PARITY = (38 / 40, 1, 0.002)


def smears(data: Path, n: int) -> list[Path]:
    from bloodseg.io import IMAGE_SUFFIXES

    files = sorted(f for split in ("train", "test")
                   for f in (data / split / "original").glob("*")
                   if f.suffix.lower() in IMAGE_SUFFIXES)[:n]
    if not files:
        sys.exit(f"{data}: no images under train/original or test/original")
    return files


def stage_times(predictor: Any, files: list[Path], warmup: int) -> dict[str, list[float]]:
    """Seconds per stage per smear, as bloodseg-predict spends them (one after another)."""
    from bloodseg.io import write_png_atomic
    from bloodseg.measure import cell_rows
    from bloodseg.render import overlay
    from bloodseg.transforms import upsample
    from bloodseg.trust import calibration_of

    times: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate([*files[:warmup], *files]):
            t = {}
            t0 = time.perf_counter()
            image = predictor.read(f)
            t["read"] = time.perf_counter()
            x = predictor.network_input(image)
            t["preprocess"] = time.perf_counter()
            maps = predictor._run([x])[0]
            t["network"] = time.perf_counter()
            outputs = upsample(maps, image.shape[:2])
            t["resize"] = time.perf_counter()
            labels = predictor.labels(outputs, maps)  # where predictor.postprocess_at says
            t["post-processing"] = time.perf_counter()
            calibration = calibration_of(predictor)
            if calibration is not None:
                calibration.judge(predictor, image, outputs, labels)
            t["trust"] = time.perf_counter()
            prob = predictor.foreground(outputs)
            cell_rows(labels, f.name, f"{f.stem}.png", prob)
            t["measurements"] = time.perf_counter()
            out = Path(tmp)
            write_png_atomic(out / "mask.png", ((prob > predictor.postprocess.threshold)
                                                * 255).astype(np.uint8))
            write_png_atomic(out / "labels.png", labels.astype(np.uint16))
            write_png_atomic(out / "overlay.png", overlay(image, labels,
                                                          count=int(labels.max())))
            t["writing"] = time.perf_counter()
            if i < warmup:
                continue
            last = t0
            for stage in STAGES:
                times[stage].append(t[stage] - last)
                last = t[stage]
    return times


def stage_table(columns: dict[str, dict[str, list[float]]]) -> list[str]:
    names = list(columns)
    lines = ["| stage | " + " | ".join(f"{n}: ms per smear (mean ± sd) | share" for n in names)
             + " |", "|---|" + "---:|---:|" * len(names)]
    totals = {n: np.sum([np.array(columns[n][s]) for s in STAGES], axis=0) for n in names}
    for stage in STAGES:
        cells = []
        for n in names:
            v = np.array(columns[n][stage]) * 1000
            sd = v.std(ddof=1) if v.size > 1 else 0.0
            cells.append(f"{v.mean():.0f} ± {sd:.0f} | {v.sum() / (totals[n].sum() * 1000):.0%}")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        t = totals[n] * 1000
        cells.append(f"**{t.mean():.0f} ± {t.std(ddof=1) if t.size > 1 else 0:.0f}** | 100%")
    lines.append("| **end to end** | " + " | ".join(cells) + " |")
    return lines


def variant_runs(name: str, predictor: Any, path: Path, calibration: list[Path]) -> list:
    """The predictor's ``runs`` (network callable, decode) for one runtime variant; raises
    ImportError / RuntimeError when it cannot run here."""
    import torch

    from bloodseg import graph, runtimes
    from bloodseg.modelfile import file_sha256

    decode, net = predictor.spec.target.decode, predictor.net
    name = name.removesuffix(AT_NETWORK)  # the same network; the instances found elsewhere
    if name == "torch":
        return [(net, decode)]
    if name == "torch-channels_last":
        cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
        return [(lambda x: cl(x.contiguous(memory_format=torch.channels_last)), decode)]
    if name == "torch-compile":
        compiled = torch.compile(copy.deepcopy(net), dynamic=False)
        return [(compiled, decode)]
    key = file_sha256(path)
    channels = predictor.spec.preprocess.channels
    if name in ("onnxruntime", "openvino"):
        if not runtimes.installed(name):
            raise ImportError(f"{name} is not installed")
        return [(graph.runner(name, net, predictor.spec.target, channels, key),
                 lambda t: t)]
    if name == "openvino-bf16":  # where the CPU has bf16 (AVX512-BF16, AMX); f32 elsewhere
        if not runtimes.installed("openvino"):
            raise ImportError("openvino is not installed")
        return [(runtimes.OpenVinoNet(graph.cached_onnx(
            net, predictor.spec.target, channels, key), precision="bf16"), lambda t: t)]
    if name == "onnxruntime-int8":
        return [(int8_runner(graph.cached_onnx(net, predictor.spec.target, channels, key),
                             predictor, calibration), lambda t: t)]
    raise ValueError(name)


def int8_runner(source: Path, predictor: Any, calibration: list[Path]) -> Any:
    """ONNX Runtime static int8 (QDQ, per-channel weights) of ``source``, its activation ranges
    calibrated on ``calibration`` images (the model's training images, never a scored one)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from bloodseg.runtimes import INPUT, OnnxRuntimeNet

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.files = iter(calibration)

        def get_next(self) -> dict | None:
            f = next(self.files, None)
            return None if f is None else {
                INPUT: predictor.network_input(predictor.read(f))[None]}

    tmp = Path(tempfile.mkdtemp())
    quant_pre_process(str(source), str(tmp / "pre.onnx"), skip_symbolic_shape=True)
    quantize_static(str(tmp / "pre.onnx"), str(tmp / "int8.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return OnnxRuntimeNet(tmp / "int8.onnx")


def compare(predictor: Any, path: Path, data: Path, variants: list[str], n: int,
            calibration: int) -> list[str]:
    """The runtimes table: network ms per smear and the parity numbers on ``n`` smears."""
    from bloodseg.data.bbbc041seg import list_split, read_native_instances
    from bloodseg.metrics import InstanceStats
    from bloodseg.transforms import upsample

    samples = sorted((s for split in ("train", "test") for s in list_split(data, split)),
                     key=lambda s: s.image.name)[:n]
    train_images = [s.image for s in list_split(data, "train")][:calibration]
    inputs = [(s, predictor.read(s.image)) for s in samples]
    results: dict[str, dict] = {}
    for name in variants:
        try:
            runs = variant_runs(name, predictor, path, train_images)
        except Exception as err:  # not installed here, or the runtime refused the model
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            print(f"{name}: cannot run here ({results[name]['error']})", flush=True)
            continue
        predictor.runs = runs
        # the torch variants run modules on tensors, the others sessions on arrays
        predictor.backend = "torch" if name.startswith("torch") else "onnxruntime"
        predictor.postprocess_at = "network" if name.endswith(AT_NETWORK) else "native"
        stats, counts, ms = InstanceStats(), [], []
        try:
            predictor._run([predictor.network_input(inputs[0][1])])  # warm-up / compile
            for s, image in inputs:
                x = predictor.network_input(image)
                t0 = time.perf_counter()
                maps = predictor._run([x])[0]
                ms.append((time.perf_counter() - t0) * 1000)
                labels = predictor.labels(upsample(maps, image.shape[:2]), maps)
                counts.append(int(labels.max()))
                stats.update(s.name, read_native_instances(s), labels)
        except Exception as err:
            results[name] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
            print(f"{name}: failed ({results[name]['error']})", flush=True)
            continue
        results[name] = {"ms": np.array(ms), "counts": np.array(counts),
                         "f1": stats.aggregate()["f1"]}
        print(f"{name}: {np.median(ms):.0f} ms per smear (median), F1 "
              f"{results[name]['f1']:.4f}", flush=True)
    base = results.get("torch")
    lines = [f"| runtime | network ms per smear (median) | × eager | counts equal to eager "
             f"(of {len(inputs)}) | largest count difference | F1@0.5 | ΔF1 | keeps the "
             "counts |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in variants:
        r = results[name]
        if "error" in r:
            lines.append(f"| {name} | — | — | — | — | — | — | cannot run here: {r['error']} |")
            continue
        speed = np.median(base["ms"]) / np.median(r["ms"]) if base and "ms" in base else np.nan
        diff = np.abs(r["counts"] - base["counts"]) if base and "counts" in base else None
        equal = int((diff == 0).sum()) if diff is not None else 0
        d_f1 = r["f1"] - base["f1"] if base and "f1" in base else np.nan
        keeps = diff is not None and (equal >= PARITY[0] * len(diff) and
                                      int(diff.max()) <= PARITY[1] and abs(d_f1) <= PARITY[2])
        lines.append(f"| {name} | {np.median(r['ms']):.0f} | {speed:.2f} | {equal} | "
                     f"{int(diff.max()) if diff is not None else '—'} | {r['f1']:.4f} | "
                     f"{d_f1:+.4f} | {'yes' if keeps else 'no'} |")
    predictor.runs = [(predictor.net, predictor.spec.target.decode)]
    predictor.backend, predictor.postprocess_at = "torch", "native"
    return lines


def end_to_end(weights: str, files: list[Path], runs: dict[str, list[str]]) -> list[str]:
    """``bloodseg-predict`` as a user runs it, per option set, on one smear and on all of
    ``files``: wall seconds (start-up included) and the seconds each further smear adds."""
    lines = ["| path | options | one smear, wall s (start-up included) | "
             f"{len(files)} smears, wall s | each further smear, s | × today |",
             "|---|---|---:|---:|---:|---:|"]
    model = f"ckpt_path={weights}" if Path(weights).is_file() else f"weights={weights}"
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for n in (1, len(files)):
            folders[n] = Path(tmp) / f"in{n}"
            folders[n].mkdir()
            for f in files[:n]:
                (folders[n] / f.name).symlink_to(f.resolve())
        walls: dict[str, dict[int, float]] = {}
        for i, (name, options) in enumerate(runs.items()):
            walls[name] = {}
            for n, folder in folders.items():  # output folders by number: names hold spaces
                cmd = [sys.executable, "-m", "bloodseg.cli.predict", model, f"input={folder}",
                       f"output={Path(tmp) / f'out{i}-{n}'}", *options]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp,
                                      stdin=subprocess.DEVNULL)
                walls[name][n] = time.perf_counter() - t0
                if proc.returncode != 0:
                    sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        n = len(files)

        def each(w: dict[int, float]) -> float:
            return (w[n] - w[1]) / max(n - 1, 1)

        first = next(iter(walls.values()))
        for name, options in runs.items():
            w = walls[name]
            lines.append(f"| {name} | `{' '.join(options) or '(defaults)'}` | {w[1]:.1f} | "
                         f"{w[n]:.1f} | {each(w):.3f} | {each(first) / each(w):.2f} |")
    return lines


#: networks that counted about as well in the repeated CV but were turned down for speed:
#: (name, conf/model name, kwargs); timed with random weights (speed does not depend on them)
CANDIDATES = (("U-Net base 16 (count_real)", "unet", {"base_channels": 16}),
              ("U-Net base 20", "unet", {"base_channels": 20}),
              ("U-Net base 24", "unet", {"base_channels": 24}),
              ("smp U-Net, ResNet-18 encoder", "smp", {"arch": "Unet", "encoder": "resnet18",
                                                       "pretrained": False}))


def candidates(predictor: Any, image: np.ndarray, other_ms: float, budget_s: float,
               repeat: int = 3) -> list[str]:
    """Each candidate network's forward pass on ``image`` (as count_real sees it) with ONNX
    Runtime and with eager PyTorch, and the estimated seconds per smear with the other stages
    (``other_ms``) against ``budget_s``."""
    import torch

    from bloodseg.graph import ProbabilityNet, onnx_model
    from bloodseg.models.registry import build_model
    from bloodseg.runtimes import OnnxRuntimeNet

    spec = predictor.spec
    x = predictor.network_input(image)[None]
    lines = ["| network | parameters (M) | eager ms | ONNX Runtime ms | est. s per smear "
             f"(ONNX Runtime + other stages) | within {budget_s:g} s |",
             "|---|---:|---:|---:|---:|---|"]
    for name, model, kwargs in CANDIDATES:
        torch.manual_seed(0)
        net = build_model(model, in_channels=spec.preprocess.channels,
                          classes=spec.target.channels, **kwargs).eval()
        module = ProbabilityNet(net, spec.target).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "net.onnx"
            path.write_bytes(onnx_model(module, spec.preprocess.channels, {}))
            ort_net = OnnxRuntimeNet(path)
            xt = torch.from_numpy(x)
            ms = {}
            for key, fn, inp in (("eager", module, xt), ("ort", ort_net, x)):
                with torch.inference_mode():
                    fn(inp)
                    best = []
                    for _ in range(repeat):
                        t0 = time.perf_counter()
                        fn(inp)
                        best.append(time.perf_counter() - t0)
                ms[key] = min(best) * 1000
        est = (ms["ort"] + other_ms) / 1000
        params = sum(p.numel() for p in net.parameters()) / 1e6
        lines.append(f"| {name} | {params:.2f} | {ms['eager']:.0f} | {ms['ort']:.0f} | "
                     f"{est:.2f} | {'yes' if est <= budget_s else 'no'} |")
        print(f"{name}: eager {ms['eager']:.0f} ms, ONNX Runtime {ms['ort']:.0f} ms", flush=True)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="count_real", help="a shipped model's name or a file")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" /
                   "bbbc041seg-mini")
    p.add_argument("--images", type=int, default=20, help="smears in the stage table")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--stages", default="torch,auto,auto+network",
                   help="predict.backend values of the stage table's columns (+network: "
                        "instances on the network's maps)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"runtimes compared (any of {', '.join(VARIANTS)}; '' = none)")
    p.add_argument("--parity-images", type=int, default=40)
    p.add_argument("--calibration", type=int, default=8,
                   help="training images that calibrate int8")
    p.add_argument("--end-to-end", type=int, default=20,
                   help="smears for bloodseg-predict end to end (0 = skip)")
    p.add_argument("--candidates", action=argparse.BooleanOptionalAction, default=True,
                   help="time the wider networks against --budget")
    p.add_argument("--budget", type=float, default=1.0, help="seconds per smear")
    p.add_argument("--readme", type=Path, default=None,
                   help="also rewrite this Markdown file's 'speed' section with the tables")
    a = p.parse_args(argv)

    import torch

    from bloodseg.inference import Predictor
    from bloodseg.modelfile import model_file

    torch.set_num_threads(a.threads)
    os.environ["OMP_NUM_THREADS"] = str(a.threads)  # the end-to-end commands
    files = smears(a.data, a.images)
    path = Path(a.weights) if Path(a.weights).is_file() else model_file(weights=a.weights)
    sizes = sorted({Predictor.read(f).shape[:2] for f in files[:3]})
    report = [f"`{path.name}` on smears of `{a.data.name}` ({sizes[0][1]}x{sizes[0][0]} ...), "
              f"{a.threads} thread(s), CPU ({os.cpu_count()} cores). Command: `python -m "
              "benchmarks.predict_speed " + " ".join(argv if argv is not None else sys.argv[1:])
              + "`"]

    def say(*lines: str) -> None:
        report.extend(lines)
        print("\n".join(lines), flush=True)

    print(report[0])
    columns = {}
    for column in [b for b in a.stages.split(",") if b]:
        # <backend>+network: the instances found on the network's maps (postprocess_at)
        backend = column.removesuffix(AT_NETWORK)
        at = "network" if column.endswith(AT_NETWORK) else "native"
        predictor = Predictor.load(path, device="cpu", backend=backend, postprocess_at=at)
        name = f"{backend} ({predictor.backend})" if backend == "auto" else backend
        columns[f"{name}, instances at {at} size"] = stage_times(predictor, files, a.warmup)
    if columns:
        say("", f"**Stages**, ms per smear over {len(files)} smears, one after another:", "",
            *stage_table(columns))
    if a.candidates:
        fastest = columns.get(next((k for k in columns if k.startswith("auto")), ""), {})
        other = float(sum(np.mean(v) for k, v in fastest.items() if k != "network")) * 1000
        predictor = Predictor.load(path, device="cpu")
        table = candidates(predictor, predictor.read(files[0]), other, a.budget)
        say("", f"**Candidate networks** on one smear (other stages: {other:.0f} ms, the "
            "default's):", "", *table)
    variants = [v for v in a.variants.split(",") if v]
    if variants:
        unknown = sorted(set(variants) - set(VARIANTS))
        if unknown:
            sys.exit(f"--variants: unknown {unknown}; valid: {', '.join(VARIANTS)}")
        predictor = Predictor.load(path, device="cpu")
        table = compare(predictor, path, a.data, variants, a.parity_images, a.calibration)
        say("", f"**Runtimes**, the network stage on {a.parity_images} smears, with the parity "
            "rule against eager fp32:", "", *table)
    if a.end_to_end:
        Predictor.load(path, device="cpu", backend="auto")  # its graph cached, as after a 1st use
        table = end_to_end(a.weights, smears(a.data, a.end_to_end), {
            "today": ["predict.backend=torch", "predict.prefetch=0"], "default": [],
            "instances on the network's maps": ["predict.postprocess_at=network"]})
        say("", f"**End to end**: `bloodseg-predict` on one smear and on {a.end_to_end} "
            "(× today: the seconds each further smear adds):", "", *table)
    if a.readme:
        from bloodseg.report.readme import replace_section

        print(f"wrote {replace_section(a.readme, 'speed', chr(10).join(report))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
