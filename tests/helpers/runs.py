"""The one tiny-run override list and the readers of what runs write.

``TINY`` shrinks any training config to seconds on a CPU: 8 + 2 synthetic 64 px smears, CSV
logs, no bar. It is what ``profile=quick`` does for the command line, spelled out so that it
composes after any ``experiment=`` (which the network width and the epochs are left to; a test
adds ``model.base_channels=4`` or ``trainer.max_epochs=1`` where it needs them). A test that
needs *a* trained model uses the session's ``trained_run`` fixture (``tests/conftest.py``)
instead of training its own.
"""

from __future__ import annotations

import csv
from pathlib import Path

TINY = [
    "data=synthetic",
    "data.synthetic.n_train=8",
    "data.synthetic.n_test=2",
    "data.synthetic.size=[64,64]",
    "data.image_size=64",
    "data.num_workers=0",
    "data.batch_size=2",
    "logger=csv",
    "trainer=cpu",
    "callbacks.progress_bar=null",
]


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
