"""The commands: one thin module per command (``[project.scripts]`` and ``python -m
bloodseg.cli.<command>``).

Each parses its arguments (Hydra or argparse), makes one library call and turns the outcome
into a message and an exit code (0 done, 1 some inputs failed, 2 a user's mistake: one line
naming the file or option and the fix). Heavy libraries (torch, Lightning, matplotlib) are
imported only after the arguments are parsed, so ``--help`` and argument errors answer at
once. Nothing outside this package imports it; the logic lives in the library modules named
after their concepts (``training``, ``tuning``, ``evaluation``, ``prediction``,
``exporting``, ``data.kaggle``, ``report.build``, ``cv``).
"""
