"""benchmarks/target_ceiling.py: the true distance targets, decoded and scored as a network's."""

from __future__ import annotations

from benchmarks import target_ceiling
from bloodseg.data.synthetic import write_dataset


def test_true_targets_decode_to_the_true_cells_and_blur_costs(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n_train=3, n_test=1, size=(96, 96), seed=0)
    items = target_ceiling.target_items(data, scale=1.0, blur=0.0)
    assert len(items) == 4
    assert all(it.outputs.shape == (2, 96, 96) and it.truth.max() > 3 for it in items)
    exact = target_ceiling.ceiling(items)
    assert set(exact) == {"default", "best F1", "best count"}
    assert exact["best F1"]["f1"] >= 0.95 and exact["best count"]["count_mae"] <= 1.0
    assert exact["best F1"]["f1"] >= exact["default"]["f1"]
    # half scale, heavily blurred: the same cells, told apart worse
    soft = target_ceiling.ceiling(target_ceiling.target_items(data, scale=0.5, blur=4.0))
    assert soft["best F1"]["f1"] < exact["best F1"]["f1"]
    assert target_ceiling.main(["--root", str(data), "--scales", "1", "--max-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "true distance targets of 2 pairs" in out and out.count("| 1 | 0 |") == 3
    assert target_ceiling.main(["--root", str(data), "--scales", "half"]) == 2
