"""benchmarks/predict_speed.py: every stage of a prediction timed, on real smears."""

from __future__ import annotations

import pytest

from benchmarks.predict_speed import STAGES, main
from tests.conftest import SHARED_DATA


@pytest.mark.real
def test_every_stage_is_timed_and_they_add_up(capsys):
    if not (SHARED_DATA / "bbbc041seg-mini").is_dir():
        pytest.skip("real data not found")
    assert main(["--images", "2", "--threads", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| *"): line for line in out.splitlines()
            if line.startswith("| ")}
    assert set(STAGES) | {"end to end"} <= set(rows)
    ms = {s: float(rows[s].split(" | ")[1].split(" ± ")[0]) for s in STAGES}
    total = float(rows["end to end"].split(" | ")[1].strip("*").split(" ± ")[0])
    assert all(v >= 0 for v in ms.values()) and ms["network"] > 0
    assert abs(sum(ms.values()) - total) <= len(STAGES)  # rounding only
    assert "2 smears" in out and "count_real.pt" in out
