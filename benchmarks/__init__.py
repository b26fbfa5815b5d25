"""bloodseg's benchmarks: scripts that measure the library, never part of it.

Each runs as ``python -m benchmarks.<name>`` from the repository root, or as
``python benchmarks/<name>.py``. They import only the library (``bloodseg``, never its entry
points: a command is run as a subprocess instead) and their own parts: ``gpu_check`` its
sections (``benchmarks/gpucheck/``). ``real_cv`` is ``bloodseg-cv`` (imported as a command: its
``main`` only) with the benchmark's folders.
"""
