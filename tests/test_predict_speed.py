"""benchmarks/predict_speed.py: every stage of a prediction timed, runtimes compared with the
parity rule, bloodseg-predict end to end; on real smears."""

from __future__ import annotations

import pytest

from benchmarks.predict_speed import STAGES, main


@pytest.mark.real
def test_stages_add_up_and_runtimes_are_compared_with_the_parity_rule(shared_data, capsys):
    assert main(["--images", "2", "--threads", "1", "--warmup", "0",
                 "--stages", "torch,auto+network",
                 "--variants", "torch,onnxruntime,onnxruntime+network", "--parity-images", "2",
                 "--end-to-end", "2", "--no-candidates"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| *"): line.split(" | ") for line in out.splitlines()
            if line.startswith("| ")}
    assert set(STAGES) | {"end to end"} <= set(rows)
    for col in (1, 3):  # torch's and auto's ms columns
        ms = {s: float(rows[s][col].split(" ± ")[0]) for s in STAGES}
        total = float(rows["end to end"][col].strip("*").split(" ± ")[0])
        assert all(v >= 0 for v in ms.values()) and ms["network"] > 0
        assert abs(sum(ms.values()) - total) <= len(STAGES)  # rounding only
    assert "auto (onnxruntime), instances at network size" in out and "count_real.pt" in out
    assert "torch, instances at native size" in out
    eager, ort = rows["torch"], rows["onnxruntime"]
    assert eager[2] == "1.00" and eager[3] == "2" and eager[-1].startswith("yes")
    assert ort[3] == "2" and ort[4] == "0" and ort[-1].startswith("yes")  # same counts
    assert float(ort[6]) == 0.0  # ΔF1
    at_network = rows["onnxruntime+network"]  # the instances on the network's maps
    assert at_network[3] in ("1", "2") and int(at_network[4]) <= 1
    assert abs(float(at_network[6])) <= 0.01
    today, default = rows["today"], rows["default"]
    network = rows["instances on the network's maps"]
    assert "predict.backend=torch predict.prefetch=0" in today[1]
    assert "predict.postprocess_at=network" in network[1]
    # wall seconds, one smear and both (on a loaded machine they may round alike)
    assert all(float(row[i]) > 0 for row in (today, default, network) for i in (2, 3))


@pytest.mark.real
def test_the_post_processing_benchmark_times_the_default_on_a_models_maps(capsys):
    """benchmarks/postprocess.py --source network: bloodseg-predict's post-processing and
    scikit-image's watershed on the same maps of count_real, scored against the masks."""
    from benchmarks.postprocess import main as postprocess

    assert postprocess(["--source", "network", "--limit", "1", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line[:16].strip(): line[16:].split() for line in out.splitlines()
            if line.startswith(("cc ", "skimage ", "bloodseg ")) and " vs " not in line}
    assert {"cc", "skimage", "bloodseg", "bloodseg native", "bloodseg predict"} <= set(rows)
    native, fast = rows["bloodseg native"], rows["bloodseg predict"]
    assert native[2:4] == fast[2:4]  # the same count error on this smear
    assert "bloodseg predict vs skimage:" in out
