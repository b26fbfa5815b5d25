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
   vs step rate, one epoch with and without ``InstanceMetricsCallback``, the test pass, the step
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

from .main import main

__all__ = ["main"]
