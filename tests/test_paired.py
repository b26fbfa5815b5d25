"""benchmarks/paired.py: per-image paired differences over repeated CV runs."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("paired", REPO / "benchmarks" / "paired.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def results(errors: dict[str, list[int]], tp: int = 10) -> dict:
    """A results.json with 2 folds per method; ``errors[method][i]`` = pred - true of image i."""
    methods = {}
    for method, errs in errors.items():
        rows = [{"file": f"img{i}", "true_count": 50, "pred_count": 50 + e, "tp": tp,
                 "fp": max(e, 0), "fn": max(-e, 0)} for i, e in enumerate(errs)]
        half = len(rows) // 2
        methods[method] = {"folds": [{"per_image": rows[:half]}, {"per_image": rows[half:]}]}
    return {"methods": methods}


def test_paired_differences_count_every_image_of_every_repeat(tmp_path, capsys):
    paired = load()
    runs = [results({"ref": [3, -2, 4, 0, 1, 5], "new": [1, -2, 2, 0, 2, 1]}),
            results({"ref": [2, 2, -3, 1, 0, 4], "new": [0, 1, -1, 1, 0, 0]})]
    c = paired.compare(runs, "ref", "new")
    assert c["images"] == 12 and c["repeats"] == 2
    assert (c["better"], c["worse"], c["tied"]) == (7, 1, 4)
    assert c["abs_count_error_diff"]["mean"] == pytest.approx(-16 / 12)
    assert c["f1_diff"]["n"] == 12 and c["f1_diff"]["mean"] > 0
    # F1 = 2tp / (2tp + fp + fn) with tp 10: it follows |error| image by image here
    assert (c["f1_better"], c["f1_worse"], c["f1_tied"]) == (7, 1, 4)
    assert c["f1_sign_test_p"] == pytest.approx(c["sign_test_p"])
    assert c["fold_mae"]["ref"]["n"] == 4
    assert c["fold_mae"]["ref"]["mean"] == pytest.approx((15 / 6 + 12 / 6) / 2)
    assert 0 < c["sign_test_p"] < 0.1  # 7 of 8 untied images better
    files = []
    for k, run in enumerate(runs):
        path = tmp_path / f"r{k}.json"
        path.write_text(json.dumps(run))
        files.append(str(path))
    assert paired.main([*files, "--reference", "ref", "--candidate", "new",
                        "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "better on 7, worse on 1, tied on 4" in out
    assert "higher on 7, lower on 1, tied on 4" in out
    assert json.loads((tmp_path / "c.json").read_text())["better"] == 7
    assert paired.main([*files, "--reference", "ref", "--candidate", "nope"]) == 2


def test_calls_on_the_same_folds_are_one_repeat():
    # a recipe in one real_cv call, its new rival in another --out, on the same folds
    paired = load()
    data = {"n_pairs": 6, "seed": 1, "fold_test_files": [["img0", "img1", "img2"],
                                                         ["img3", "img4", "img5"]]}
    first = {**results({"ref": [3, -2, 4, 0, 1, 5], "base": [9] * 6}), "data": data}
    second = {**results({"new": [1, -2, 2, 0, 2, 1]}), "data": data}
    c = paired.compare([first, second], "ref", "new")
    assert c["repeats"] == 1 and c["images"] == 6 and (c["better"], c["worse"]) == (3, 1)
    other_folds = {**second, "data": {**data, "seed": 2}}  # another repeat: nothing to pair
    with pytest.raises(KeyError, match="no method 'new'"):
        paired.compare([first, other_folds], "ref", "new")
