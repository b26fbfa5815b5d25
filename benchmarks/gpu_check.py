"""The prepared GPU-session check (``make gpu-check``): runs :mod:`benchmarks.gpucheck`.

    python benchmarks/gpu_check.py                       # on the GPU box: ~8 min on one H100
    python benchmarks/gpu_check.py --device cpu --quick  # the same code paths in seconds
    python -m benchmarks.gpu_check --help                # the same, as a module

The check is split into sections, one module each (``benchmarks/gpucheck/``): settings,
report, shared pieces, 1 train-step throughput, 2 a Kaggle-sized epoch, 3 the real commands.
"""

from __future__ import annotations

if __package__:  # python -m benchmarks.gpu_check, or imported
    from benchmarks.gpucheck.main import main
else:  # python benchmarks/gpu_check.py: this folder is sys.path[0], gpucheck a package in it
    from gpucheck.main import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
