"""What several test files share (fixtures live in ``tests/conftest.py``).

- :mod:`tests.helpers.cli`: run a command as a user would (``run``, ``start``), in a new
  process or, where the process boundary is not what a test is about, its ``main`` in this one.
- :mod:`tests.helpers.runs`: the one tiny-run override list (``TINY``) and CSV reading.
- :mod:`tests.helpers.data`: small Kaggle-layout datasets written by hand.
"""
