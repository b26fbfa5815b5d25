"""Cross-validation of training recipes on a folder of image/mask pairs (``bloodseg-cv``).

Modules, lowest first: ``folds`` (seeded folds, per-fold folders of links), ``recipes`` (the
``conf/experiment/bench/`` recipes and each run's overrides), ``results`` (``results.json``
and its fold rows) < ``summary`` (mean ± sd over folds), ``steps`` (a fold's step: a timed
command subprocess) < ``outputs`` (``results.md``, ``counts.png``, the README section),
``ensemble`` (recipes' networks averaged per fold) < ``runner`` (a whole call:
``run_cv(CVOptions(...))``, ``render_cv``).

Nothing is re-exported here: ``results``, ``summary`` and ``outputs`` read a
``results.json`` without torch, while ``runner`` imports the baselines (and torch with them).
"""
