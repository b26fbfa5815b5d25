"""The prepared GPU-session check (``make gpu-check``): runs :mod:`benchmarks.gpucheck`.

    python benchmarks/gpu_check.py                       # on the GPU box: ~8 min on one H100
    python benchmarks/gpu_check.py --device cpu --quick  # the same code paths in seconds
    python -m benchmarks.gpu_check --help                # the same, as a module

The check is split into sections, one module each (``benchmarks/gpucheck/``): settings,
report, shared pieces, 1 train-step throughput, 2 a Kaggle-sized epoch, 3 the real commands.
"""

from __future__ import annotations

if not __package__:  # python benchmarks/gpu_check.py: the sections import ``benchmarks.*``
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpucheck.main import main  # noqa: E402

__all__ = ["main"]

if __name__ == "__main__":
    main()
