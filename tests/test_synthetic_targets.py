"""benchmarks/synthetic_targets.py end to end on a tiny budget: every method gets a row."""

from __future__ import annotations

import importlib.util
import json
import math

import pytest

from tests.conftest import REPO


def load_script():
    spec = importlib.util.spec_from_file_location(
        "synthetic_targets", REPO / "benchmarks" / "synthetic_targets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_synthetic_targets_tiny(tmp_path):
    bench = load_script()
    tiny = ["data.synthetic.n_train=6", "data.synthetic.n_test=2", "trainer.max_epochs=1",
            "model.base_channels=4", "data.image_size=64", "data.synthetic.size=[64,64]"]
    argv = ["--styles", "bccd", "--targets", "contour", "--out", str(tmp_path / "out"),
            *[a for o in tiny for a in ("--override", o)]]
    assert bench.main(argv) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = res["styles"]["bccd"]["methods"]
    assert set(rows) == {"U-Net, target=contour", "skimage on truth", "bloodseg on truth",
                         "Otsu + watershed"}
    assert all(math.isfinite(r["count_mae"]) and 0 <= r["f1"] <= 1 for r in rows.values())
    assert "marker_threshold" in rows["U-Net, target=contour"]["tuned"]
    assert res["styles"]["bccd"]["n_test"] == 2
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| skimage on truth |" in md and "**bccd** style" in md
    # a second call reuses the finished run
    run = tmp_path / "out" / "work" / "bccd" / "contour" / "test_metrics.json"
    stamp = run.stat().st_mtime_ns
    assert bench.main(argv) == 0 and run.stat().st_mtime_ns == stamp
