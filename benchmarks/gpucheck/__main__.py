"""``python -m benchmarks.gpucheck``: the same as ``python benchmarks/gpu_check.py``."""

from .main import main

main()
