"""predict.backend: the exported graph in ONNX Runtime keeps the shipped model's counts on a
real smear, is cached by the weights' sha256 in the user's cache (never beside the weights),
and a backend that cannot run says so in one line; a pipelined folder writes what a sequential
one writes."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodseg import runtimes
from bloodseg.inference import Predictor
from bloodseg.io import OptionError
from bloodseg.modelfile import file_sha256, model_file
from bloodseg.options import check_predict
from tests.helpers.cli import run
from tests.helpers.runs import read_csv


@pytest.fixture(scope="module")
def count_real() -> Path:
    return model_file(weights="count_real")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("BLOODSEG_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.real
def test_onnxruntime_keeps_the_counts_of_the_shipped_model_on_a_real_smear(shared_data,
                                                                            count_real):
    """The parity rule of ``auto`` (benchmarks/predict_speed.py checks all 40 shared smears):
    the same cells, and maps within the export tolerance."""
    torch_run = Predictor.load(count_real, device="cpu")
    fast = Predictor.load(count_real, device="cpu", backend="auto")
    assert fast.backend == "onnxruntime" and torch_run.backend == "torch"
    image = torch_run.read(shared_data / "bbbc041seg-sample" / "original.png")
    want, got = torch_run.outputs(image), fast.outputs(image)
    assert got.shape == want.shape == (2, *image.shape[:2])
    assert np.abs(got - want).max() <= runtimes.TOLERANCE
    a, b = torch_run.labels(want), fast.labels(got)
    assert a.max() == b.max() >= 40  # the sample's mask has 45 cells
    assert (a == b).mean() > 0.9999


@pytest.mark.real
def test_instances_found_at_the_network_scale_keep_the_counts(shared_data, count_real):
    """predict.postprocess_at=network (an option): the watershed on the
    network's maps, the labels resized into the native foreground: the sample's cells found
    again one for one (benchmarks/predict_speed.py checks the 40 shared smears), at full
    resolution, numbered 1..N."""
    from bloodseg.data.bbbc041seg import Sample, read_native_instances
    from bloodseg.metrics import match_instances

    native = Predictor.load(count_real, device="cpu")
    fast = Predictor.load(count_real, device="cpu", postprocess_at="network")
    assert native.postprocess_at == "native"  # the default
    image = native.read(shared_data / "bbbc041seg-sample" / "original.png")
    net = native.network_outputs(image)
    assert net.shape[1:] == (600, 800)  # count_real runs at scale 0.5
    outputs, want = native.predict(image)
    got = fast.labels(outputs, net)
    assert got.shape == image.shape[:2] and got.dtype == np.int32
    assert np.array_equal(np.unique(got), np.arange(got.max() + 1))
    assert not (got[~native.mask(outputs)]).any()  # inside the full-resolution foreground
    assert abs(int(got.max()) - int(want.max())) <= 1 and got.max() >= 40
    root = shared_data / "bbbc041seg-sample"
    truth = read_native_instances(Sample("sample", root / "original.png", root / "mask.png"))
    f1 = [match_instances(truth, lab).f1 for lab in (want, got)]
    assert abs(f1[0] - f1[1]) <= 0.01, f1
    assert np.array_equal(fast.predict(image)[1], got)
    assert np.array_equal(native.labels(outputs, net), want)  # native ignores the small maps


def test_pixel_sizes_follow_the_maps_scale():
    from bloodseg.postprocess import DistanceWatershed, Watershed

    assert DistanceWatershed(min_area=16).at_scale(0.5).min_area == 4
    half = Watershed(min_area=16, min_distance=10).at_scale(0.5)
    assert (half.min_area, half.min_distance, half.split_ratio) == (4, 5, 0.85)
    assert Watershed().at_scale(0.5).min_distance is None  # a fraction of the cell radius


@pytest.mark.real
def test_openvino_in_f32_keeps_the_counts_where_it_is_installed(shared_data, count_real):
    pytest.importorskip("openvino")
    ref = Predictor.load(count_real, device="cpu")
    ov = Predictor.load(count_real, device="cpu", backend="openvino")
    image = ref.read(shared_data / "bbbc041seg-sample" / "original.png")
    want, got = ref.outputs(image), ov.outputs(image)
    assert np.abs(got - want).max() <= runtimes.TOLERANCE  # f32, not the CPU's bf16
    assert ref.labels(want).max() == ov.labels(got).max()


def test_the_graph_is_cached_by_the_weights_sha256_in_the_users_cache(trained_run, cache,
                                                                      tmp_path):
    weights = tmp_path / "model" / "best.ckpt"
    weights.parent.mkdir()
    shutil.copy(trained_run / "checkpoints" / "best.ckpt", weights)
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)
    first = Predictor.load(weights, device="cpu", backend="onnxruntime")
    cached = sorted((cache / "onnx").glob("*.onnx"))
    assert [p.name.split("-")[0] for p in cached] == [file_sha256(weights)]
    assert sorted(p.name for p in weights.parent.iterdir()) == ["best.ckpt"]  # nothing beside
    stamp = cached[0].stat().st_mtime_ns
    again = Predictor.load(weights, device="cpu", backend="onnxruntime")
    assert cached[0].stat().st_mtime_ns == stamp  # read, not exported again
    ref = Predictor.load(weights, device="cpu")
    assert np.abs(again.outputs(image) - ref.outputs(image)).max() <= runtimes.TOLERANCE
    assert np.array_equal(first(image), ref(image))
    # a cache file left broken (a crash, a disk error) is exported again, never trusted
    cached[0].write_bytes(b"not an onnx file")
    healed = Predictor.load(weights, device="cpu", backend="onnxruntime")
    assert np.abs(healed.outputs(image) - ref.outputs(image)).max() <= runtimes.TOLERANCE
    assert cached[0].stat().st_size > 1000
    # and TTA runs through the exported graph the same way
    tta = Predictor.load(weights, device="cpu", backend="onnxruntime", tta="d4")
    ref_tta = Predictor.load(weights, device="cpu", tta="d4")
    assert np.abs(tta.outputs(image) - ref_tta.outputs(image)).max() <= runtimes.TOLERANCE


# bloodseg-predict in a fresh interpreter, reporting whether it loaded torch
NO_TORCH_PROBE = """
import sys
sys.argv = ["bloodseg-predict", *sys.argv[1:]]
from bloodseg.cli.predict import main
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
print("TORCH", "torch" in sys.modules)
"""


@pytest.mark.real
def test_counting_with_a_cached_graph_never_imports_torch(shared_data, count_real, tmp_path):
    """Start-up: once a model's graph and spec are cached, bloodseg-predict reads neither the
    model file's weights nor torch (1.5 s of a one-smear count), and writes the same files."""
    import subprocess
    import sys

    if runtimes.gpu_possible():
        pytest.skip("a GPU driver is present: auto asks torch whether CUDA runs")
    Predictor.load(count_real, device="cpu", backend="auto")  # the first use caches both
    key = file_sha256(count_real)
    assert runtimes.cached_spec(key) is not None and runtimes.graph_path(key).is_file()
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_data / "bbbc041seg-sample" / "original.png", folder / "a.png")
    outs = {}
    for backend in ("auto", "torch"):
        outs[backend] = tmp_path / backend
        proc = subprocess.run([sys.executable, "-c", NO_TORCH_PROBE, "weights=count_real",
                               f"input={folder}", f"output={outs[backend]}",
                               f"predict.backend={backend}"], capture_output=True, text=True,
                              cwd=tmp_path, stdin=subprocess.DEVNULL, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert f"TORCH {backend == 'torch'}" in proc.stdout
    for name in ("counts.csv", "cells.csv", "instances/a.png", "masks/a.png",
                 "overlays/a.png"):
        assert filecmp.cmp(outs["auto"] / name, outs["torch"] / name, shallow=False), name


def test_a_cached_spec_is_validated_and_a_bad_one_read_again_from_the_file(
        trained_run, cache, tmp_path, caplog):
    weights = tmp_path / "best.ckpt"
    shutil.copy(trained_run / "checkpoints" / "best.ckpt", weights)
    key = file_sha256(weights)
    first = Predictor.load(weights, device="cpu", backend="onnxruntime")
    kept = runtimes.cached_spec(key)
    assert kept == first.spec.to_dict()  # the file's own spec (no tuned file here)
    spec_file = runtimes.graph_path(key).with_suffix(".json")
    bad = {**kept, "network": {"name": "nonexistent_net", "kwargs": {}}}
    spec_file.write_text(json.dumps(bad))
    again = Predictor.load(weights, device="cpu", backend="onnxruntime")
    assert "cached graph not usable" in caplog.text and again.net is not None  # read the file
    assert runtimes.cached_spec(key) == kept  # and kept its spec again
    spec_file.write_text("{not json")
    assert runtimes.cached_spec(key) is None
    fast = Predictor.load(weights, device="cpu", backend="onnxruntime")
    assert fast.net is not None and runtimes.cached_spec(key) == kept
    if not runtimes.gpu_possible():
        fast = Predictor.load(weights, device="auto", backend="onnxruntime")
        assert fast.net is None and fast.nets == [] and len(fast.runs) == 1
        image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)
        assert np.array_equal(fast(image), first(image))


def test_weights_in_memory_and_a_gpu_run_in_torch(trained_run):
    from bloodseg.modelfile import load_model

    spec, net = load_model(trained_run / "checkpoints" / "best.ckpt")
    assert Predictor(spec, net, device="cpu", backend="auto").backend == "torch"
    assert runtimes.resolve("auto", torch.device("cuda")) == "torch"
    with pytest.raises(OptionError, match="needs the model's file"):
        Predictor(spec, net, device="cpu", backend="onnxruntime")


def test_a_backend_that_cannot_run_is_one_line_naming_the_fix(monkeypatch):
    with pytest.raises(OptionError, match=r"predict.backend=tensorrt: not one of auto, torch"):
        check_predict({"backend": "tensorrt"})
    with pytest.raises(OptionError, match="runs on the CPU"):
        runtimes.resolve("onnxruntime", torch.device("cuda"))
    monkeypatch.setattr(runtimes, "installed", lambda b: b == "torch")
    with pytest.raises(OptionError, match=r"needs openvino \(not installed\): pip install"):
        runtimes.resolve("openvino", torch.device("cpu"))
    assert runtimes.resolve("auto", torch.device("cpu")) == "torch"  # falls back, no error


def test_bloodseg_predict_refuses_an_unknown_backend_before_loading(tmp_path):
    proc = run("bloodseg.cli.predict", ["weights=count_real", f"input={tmp_path}",
                                        f"output={tmp_path / 'out'}", "predict.backend=trt"],
               tmp_path, in_process=True)
    assert proc.returncode == 2
    assert "predict.backend=trt: not one of auto, torch, onnxruntime, openvino" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "counts.csv").exists()


@pytest.mark.real
def test_a_pipelined_folder_writes_what_one_after_another_writes(shared_data, tmp_path):
    """predict.prefetch=2 (read ahead, write behind) and 0 give the same folder, byte for
    byte, with the files' order in the CSVs kept; the batch record does not depend on it."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(shared_data / "bbbc041seg-sample" / "original.png", folder / "a.png")
    bccd = sorted((shared_data / "bccd-boxes" / "JPEGImages").glob("*.jpg"))[:2]
    for i, f in enumerate(bccd):
        shutil.copy(f, folder / f"b{i}.jpg")
    (folder / "blank.png").write_bytes((shared_data / "bbbc041seg-sample" /
                                        "mask.png").read_bytes()[:100])  # unreadable
    outs = {}
    for ahead in (0, 2):
        out = tmp_path / f"out{ahead}"
        proc = run("bloodseg.cli.predict", ["weights=count_real", f"input={folder}",
                                            f"output={out}", f"predict.prefetch={ahead}"],
                   tmp_path, in_process=True)
        assert proc.returncode == 1, proc.stderr  # the unreadable file
        assert "blank.png" in proc.stderr
        outs[ahead] = out
    rows = read_csv(outs[2] / "counts.csv")
    assert [r["file"] for r in rows] == ["a.png", "b0.jpg", "b1.jpg"]
    for name in ("counts.csv", "cells.csv", ".bloodseg-predict.json"):
        assert filecmp.cmp(outs[0] / name, outs[2] / name, shallow=False), name
    for sub in ("masks", "instances", "overlays"):
        for f in (outs[0] / sub).iterdir():
            assert filecmp.cmp(f, outs[2] / sub / f.name, shallow=False), f
