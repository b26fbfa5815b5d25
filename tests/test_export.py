"""bloodseg-export: ONNX and TorchScript files give the predictor's probability maps (and so its
counts) at any batch and size, carry the spec with their preprocessing; bundles load back
through ``Predictor.load`` with the same counts and the tuned post-processing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bloodseg.exporting import (
    INPUT,
    OUTPUT,
    ExportError,
    export_model,
    network_input,
    sidecar,
)
from bloodseg.inference import Predictor
from bloodseg.io import CheckpointError
from bloodseg.labels import instance_areas
from bloodseg.modelfile import write_tuned
from bloodseg.spec import ModelSpec
from bloodseg.transforms import upsample
from tests.helpers.cli import run

#: the largest difference to PyTorch the exported files may show (float32 everywhere)
TOLERANCE = 1e-4
#: network input scales of the real 1600x1200 sample: 120x160 and 100x133 px, neither side
#: of the second a multiple of the U-Net's 16
SCALES = (0.1, 1 / 12)


def count(labels: np.ndarray) -> int:
    return int(instance_areas(labels).size)


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def ckpt(trained_run) -> Path:
    return trained_run / "checkpoints" / "best.ckpt"


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return Predictor.load(ckpt, device="cpu")


@pytest.fixture(scope="module")
def image(shared_data) -> np.ndarray:
    return Predictor.read(shared_data / "bbbc041seg-sample" / "original.png")


@pytest.fixture(scope="module")
def onnx_file(ckpt, tmp_path_factory) -> Path:
    return export_model(ckpt, "onnx", tmp_path_factory.mktemp("onnx") / "counter.onnx")


@pytest.mark.real
def test_onnx_gives_the_predictors_maps_and_counts_on_a_real_image(onnx_file, predictor, image):
    x = network_input(predictor, image)
    got = session(onnx_file).run([OUTPUT], {INPUT: x[None]})[0][0]
    want = predictor.network_outputs(image)
    assert got.shape == want.shape == (1, *predictor.tile_hw)
    diff = float(np.abs(got - want).max())
    labels = predictor.labels(upsample(got, image.shape[:2]))
    reference = predictor(image)
    print(f"\nONNX vs PyTorch on {image.shape[1]}x{image.shape[0]}: max abs diff {diff:.3g}, "
          f"counts {count(labels)} vs {count(reference)}, "
          f"{onnx_file.stat().st_size / 1e6:.2f} MB")
    assert diff <= TOLERANCE
    assert count(labels) == count(reference)
    assert (labels > 0).mean() == pytest.approx((reference > 0).mean(), abs=1e-4)


def test_onnx_carries_its_spec_and_preprocessing(onnx_file, predictor):
    import onnx

    sess = session(onnx_file)
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["bloodseg"])
    assert meta == json.loads(sidecar(onnx_file).read_text())
    assert ModelSpec.from_dict(meta["spec"], "metadata") == predictor.spec
    pre = predictor.spec.preprocess
    assert meta["input"]["color"] == pre.color and meta["input"]["mean"] == [0.449]
    assert meta["input"]["size"] == {"height": pre.image_size[0], "width": pre.image_size[1]}
    assert meta["output"]["channels"] == ["foreground"]
    graph = onnx.load(str(onnx_file)).graph

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert [(v.name, dims(v)) for v in graph.input] == [(INPUT, ["batch", 1, "height", "width"])]
    assert [(v.name, dims(v)) for v in graph.output] == [(OUTPUT,
                                                         ["batch", 1, "height", "width"])]


@pytest.mark.real
def test_onnx_runs_any_batch_and_size(onnx_file, ckpt, image):
    sess = session(onnx_file)
    flipped = np.ascontiguousarray(image[::-1, ::-1])
    for scale in SCALES:
        p = Predictor.load(ckpt, device="cpu", mode="whole", scale=scale)
        batch = np.stack([network_input(p, image), network_input(p, flipped)])
        got = sess.run([OUTPUT], {INPUT: batch})[0]
        assert got.shape == (2, 1, *batch.shape[2:])
        for out, img in zip(got, (image, flipped)):
            assert np.abs(out - p.network_outputs(img)).max() <= TOLERANCE
    assert {tuple(p.network_size(*image.shape[:2])) for p in
            (Predictor.load(ckpt, device="cpu", mode="whole", scale=s) for s in SCALES)} == {
        (120, 160), (100, 133)}


@pytest.mark.real
def test_torchscript_round_trip_at_two_sizes(ckpt, tmp_path, image):
    out = export_model(ckpt, "torchscript", tmp_path / "counter.ts")
    files = {"bloodseg.json": ""}
    module = torch.jit.load(str(out), _extra_files=files)
    assert json.loads(files["bloodseg.json"]) == json.loads(sidecar(out).read_text())
    for scale in SCALES:
        p = Predictor.load(ckpt, device="cpu", mode="whole", scale=scale)
        with torch.inference_mode():
            got = module(torch.from_numpy(network_input(p, image))[None]).numpy()[0]
        assert np.abs(got - p.network_outputs(image)).max() <= TOLERANCE


@pytest.mark.real
def test_bundle_loads_back_with_the_tuned_postprocessing_and_the_same_counts(ckpt, tmp_path,
                                                                           image):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    weights = Path(shutil.copy(ckpt, run / "checkpoints" / "best.ckpt"))
    untuned = Predictor.load(weights, device="cpu")
    tuned = untuned.spec.postprocess.replace(threshold=0.4)
    assert tuned != untuned.spec.postprocess
    write_tuned(weights, tuned, {"split": "train"})  # <run>/postprocess.json, as tuning does
    original = Predictor.load(weights, device="cpu")
    assert original.spec.postprocess == tuned

    out = export_model(weights, "bundle", tmp_path / "bundle" / "counter.pt")
    assert not sidecar(out).exists()  # a bundle holds its spec
    stored = torch.load(out, weights_only=True)
    assert {v.dtype for v in stored["weights"].values() if v.is_floating_point()} == {
        torch.float16}
    bundled = Predictor.load(out, device="cpu")  # no postprocess.json beside it
    assert bundled.spec == original.spec
    want, got = count(original(image)), count(bundled(image))
    print(f"\nbundle (float16) vs checkpoint on the real sample: {got} vs {want} cells")
    assert got == want


def test_refusals_name_the_file_and_the_fix(ckpt, tmp_path, monkeypatch):
    existing = tmp_path / "old.onnx"
    existing.write_bytes(b"old")
    with pytest.raises(ExportError, match=f"{existing} exists; pass overwrite=true"):
        export_model(ckpt, "onnx", existing)
    assert existing.read_bytes() == b"old"
    (tmp_path / "new.ts.json").write_text("{}")  # the description would be replaced too
    with pytest.raises(ExportError, match="new.ts.json exists"):
        export_model(ckpt, "torchscript", tmp_path / "new.ts")
    with pytest.raises(ExportError, match="format=tflite: unknown; valid: onnx, torchscript, "
                                          "bundle"):
        export_model(ckpt, "tflite", tmp_path / "m.tflite")
    with pytest.raises(CheckpointError, match="absent.ckpt: no such model file"):
        export_model(tmp_path / "absent.ckpt", "bundle", tmp_path / "m.pt")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if not installed
    with pytest.raises(ExportError, match=r"needs onnxscript \(not installed\): "
                                          r"pip install onnxscript"):
        export_model(ckpt, "onnx", tmp_path / "new.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.ts.json", "old.onnx"]


def test_command_line_exports_a_bundle_and_refuses_an_existing_file(ckpt, tmp_path):
    out = tmp_path / "counter.pt"
    args = [f"ckpt_path={ckpt}", "format=bundle", f"output={out}",
            f"hydra.run.dir={tmp_path / 'hydra'}"]
    proc = run("bloodseg.cli.export", args, tmp_path, in_process=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"wrote {out} (bundle" in proc.stdout
    assert Predictor.load(out, device="cpu").spec == Predictor.load(ckpt, device="cpu").spec
    proc = run("bloodseg.cli.export", args, tmp_path, in_process=True)
    assert proc.returncode == 2
    assert f"error: {out} exists; pass overwrite=true" in proc.stderr
    assert "Traceback" not in proc.stderr


def random_bundle(folder: Path, target: str, color: str) -> Path:
    """A bundle of an untrained narrow U-Net learning ``target`` (no training needed: the
    export compares the file with PyTorch itself)."""
    from bloodseg.modelfile import save_bundle
    from bloodseg.targets import target_class

    channels = target_class(target).channels
    spec = ModelSpec.from_dict({
        "version": 1,
        "network": {"name": "unet", "kwargs": {"in_channels": 1 if color == "gray" else 3,
                                                "classes": channels, "base_channels": 4}},
        "target": {"name": target}, "preprocess": {"color": color, "scale": 0.5},
        "postprocess": {"name": target}}, "test")
    torch.manual_seed(0)
    return save_bundle(folder / f"{target}.pt", spec, spec.network.build().state_dict(),
                       half=False)


@pytest.mark.parametrize("target,color,fmt", [("contour", "rgb", "onnx"),
                                              ("distance", "gray", "torchscript")])
def test_every_target_decodes_in_the_exported_file(tmp_path, target, color, fmt):
    out = export_model(random_bundle(tmp_path, target, color), fmt, tmp_path / f"m.{fmt}")
    meta = json.loads(sidecar(out).read_text())
    channels = {"contour": ["background", "interior", "border"],
                "distance": ["foreground", "distance"]}[target]
    assert meta["output"]["channels"] == channels and meta["input"]["size"] == {"scale": 0.5}
    x = np.random.default_rng(0).standard_normal((1, 3 if color == "rgb" else 1, 50, 70),
                                                 dtype=np.float32)
    if fmt == "onnx":
        got = session(out).run([OUTPUT], {INPUT: x})[0]
    else:
        got = torch.jit.load(str(out))(torch.from_numpy(x)).detach().numpy()
    assert got.shape == (1, len(channels), 50, 70)
    assert got.min() >= 0 and got.max() <= 1
    if target == "contour":  # softmax over the classes
        np.testing.assert_allclose(got.sum(1), 1, atol=1e-5)
