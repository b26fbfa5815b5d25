"""Where a prediction's time goes: each stage of ``bloodseg-predict`` timed on real smears.

Runs the one inference path (:class:`bloodseg.inference.Predictor`) stage by stage on the
first ``--images`` smears of a Kaggle-layout folder (default: the 40 shared BBBC041Seg pairs'
images, native 1600x1200), on ``--threads`` torch threads, and prints the mean milliseconds
and share of each stage, then the end-to-end seconds per smear:

read (decode the file), preprocess (gray, contrast, scale, normalise), network (the forward
pass), decode (logits -> probabilities), resize (maps to native size), post-processing
(watershed -> labels), trust (interval + review: neighbouring thresholds, image features),
measurements (cells.csv rows), writing (mask, labels and overlay PNGs encoded and written).

    python -m benchmarks.predict_speed                      # count_real, 20 smears, 2 threads
    python -m benchmarks.predict_speed --weights count_real --images 20 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

STAGES = ("read", "preprocess", "network", "decode", "resize", "post-processing", "trust",
          "measurements", "writing")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="count_real", help="a shipped model's name or a file")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" /
                   "bbbc041seg-mini")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    a = p.parse_args(argv)

    import torch

    from bloodseg.inference import Predictor
    from bloodseg.io import IMAGE_SUFFIXES, write_png_atomic
    from bloodseg.measure import cell_rows
    from bloodseg.modelfile import model_file
    from bloodseg.render import overlay
    from bloodseg.transforms import upsample
    from bloodseg.trust import calibration_of, observe

    torch.set_num_threads(a.threads)
    files = sorted(f for split in ("train", "test")
                   for f in (a.data / split / "original").glob("*")
                   if f.suffix.lower() in IMAGE_SUFFIXES)[:a.images]
    if not files:
        sys.exit(f"{a.data}: no images under train/original or test/original")
    path = Path(a.weights) if Path(a.weights).is_file() else model_file(weights=a.weights)
    predictor = Predictor.load(path, device="cpu")
    net, target = predictor.net, predictor.spec.target
    times: dict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate([*files[:a.warmup], *files]):
            t = {}
            t0 = time.perf_counter()
            image = predictor.read(f)
            t["read"] = time.perf_counter()
            x = predictor.network_input(image)
            t["preprocess"] = time.perf_counter()
            with torch.inference_mode():
                logits = net(torch.from_numpy(x[None]))
                t["network"] = time.perf_counter()
                maps = target.decode(logits)[0].float().numpy()
            t["decode"] = time.perf_counter()
            outputs = upsample(maps, image.shape[:2])
            t["resize"] = time.perf_counter()
            labels = predictor.labels(outputs)
            t["post-processing"] = time.perf_counter()
            calibration = calibration_of(predictor)
            if calibration is not None:
                obs = observe(predictor, image, outputs, labels)
                calibration.interval.bounds(obs.count, obs.spread)
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
            if i < a.warmup:
                continue
            last = t0
            for stage in STAGES:
                times[stage].append(t[stage] - last)
                last = t[stage]
    total = np.sum([np.array(times[s]) for s in STAGES], axis=0)
    sizes = sorted({predictor.read(f).shape[:2] for f in files[:3]})
    print(f"{path.name} on {len(files)} smears of {a.data.name} ({sizes[0][1]}x{sizes[0][0]} "
          f"...), {a.threads} torch thread(s), CPU; command: python -m benchmarks.predict_speed "
          + " ".join(argv if argv is not None else sys.argv[1:]))
    print("\n| stage | ms per smear (mean ± sd) | share |\n|---|---:|---:|")
    for stage in STAGES:
        v = np.array(times[stage]) * 1000
        sd = v.std(ddof=1) if v.size > 1 else 0.0
        print(f"| {stage} | {v.mean():.0f} ± {sd:.0f} | {v.sum() / (total.sum() * 1000):.0%} |")
    print(f"| **end to end** | **{total.mean() * 1000:.0f} ± "
          f"{total.std(ddof=1) * 1000 if total.size > 1 else 0:.0f}** | 100% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
