"""Test-time levers of the one inference path: D4 test-time augmentation and ensembles of
several model files (``ckpt_path=[a,b]``), on the shipped model and a real smear."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bloodseg.inference import Predictor, predictor_from_config, tta_mode, tta_outputs
from bloodseg.io import read_image
from bloodseg.modelfile import load_model, model_files, save_bundle
from bloodseg.spec import SpecError
from bloodseg.weights import weights_path
from tests.helpers.runs import TINY


class Ramp(torch.nn.Module):
    """Not equivariant: its output depends on where a pixel is, so each view differs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ramp = torch.arange(h * w, dtype=x.dtype).reshape(h, w) / (h * w)
        return x * torch.sin(7 * ramp) + ramp ** 2


def _views(x: torch.Tensor) -> list[torch.Tensor]:
    """The eight rotations/flips of ``x``, each passed through Ramp and mapped back by hand."""
    out = []
    for flip in (False, True):
        for k in range(4):
            t = x.flip(-1) if flip else x
            y = Ramp()(torch.rot90(t, k, (-2, -1)))
            y = torch.rot90(y, -k, (-2, -1))
            out.append(y.flip(-1) if flip else y)
    return out


def test_d4_averages_the_eight_views_on_non_square_input():
    x = torch.rand(2, 1, 6, 10)
    _, out = tta_outputs(Ramp(), x, lambda t: t, "d4")
    want = torch.stack(_views(x)).mean(0)
    assert out.shape == x.shape
    torch.testing.assert_close(out, want)
    _, flips = tta_outputs(Ramp(), x, lambda t: t, True)
    assert not torch.allclose(flips, out)  # d4 is more than the flips


def test_tta_mode_accepts_the_config_values_and_refuses_others():
    assert [tta_mode(v) for v in (False, None, True, "true", "flips", "D4", "none")] == \
        ["none", "none", "flips", "flips", "flips", "d4", "none"]
    with pytest.raises(ValueError, match="predict.tta=rot90: not one of false, true"):
        tta_mode("rot90")


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """The shipped model and a second member with perturbed weights (a stand-in for a network
    trained with another seed)."""
    folder = tmp_path_factory.mktemp("ensemble")
    spec, net = load_model(weights_path("count_real"))
    a = save_bundle(folder / "a.pt", spec, net.state_dict(), half=False)
    gen = torch.Generator().manual_seed(0)
    noisy = {k: v + 0.05 * v.std() * torch.randn(v.shape, generator=gen)
             if v.is_floating_point() and v.numel() > 1 else v
             for k, v in net.state_dict().items()}
    b = save_bundle(folder / "b.pt", spec, noisy, half=False)
    return a, b


@pytest.fixture(scope="module")
def crop(shared_data):
    image = read_image(shared_data / "bbbc041seg-sample" / "original.png", color="rgb")
    return image[:480, :640]


def test_ensemble_averages_its_members_outputs(members, crop):
    a, b = members
    outs = [Predictor.load(p, device="cpu").outputs(crop) for p in (a, b)]
    assert not np.allclose(outs[0], outs[1], atol=1e-3)  # the members really differ
    both = Predictor.load([a, b], device="cpu")
    averaged = both.outputs(crop)
    np.testing.assert_allclose(averaged, (outs[0] + outs[1]) / 2, atol=1e-5)
    labels = both.labels(averaged)  # what both(crop) is
    assert labels.max() >= 5  # still counts cells


def test_ensemble_with_d4_is_the_mean_of_each_members_d4(members, crop):
    a, b = members
    small = crop[:96, :128]  # non-square: the quarter turns change its shape
    outs = [Predictor.load(p, device="cpu", tta="d4").outputs(small) for p in (a, b)]
    both = Predictor.load([a, b], device="cpu", tta="d4").outputs(small)
    np.testing.assert_allclose(both, (outs[0] + outs[1]) / 2, atol=1e-5)


def test_ensemble_from_a_cli_config_list(members, crop):
    a, b = members
    cfg = OmegaConf.create({"ckpt_path": [str(a), str(b)], "weights": None,
                            "postprocess": None, "postprocess_file": None,
                            "predict": {"tta": "d4", "device": "cpu"}})
    predictor, paths = predictor_from_config(cfg)
    assert paths == [a, b] and len(predictor.runs) == 2 and predictor.tta_mode == "d4"
    assert predictor.tta is True  # what run records store
    assert model_files(None, ["count_real"]) == [weights_path("count_real")]
    with pytest.raises(Exception, match="exactly one"):
        model_files([str(a)], "count_real")


def test_ensemble_refuses_members_with_other_preprocessing(members, tmp_path):
    a, _ = members
    spec, net = load_model(a)
    other = spec.replace(preprocess=dataclasses.replace(spec.preprocess, contrast="none"))
    c = save_bundle(tmp_path / "c.pt", other, net.state_dict(), half=False)
    with pytest.raises(SpecError, match=r"c\.pt: its preprocess .* differs"):
        Predictor.load([a, c], device="cpu")


def test_evaluate_and_tune_an_ensemble_end_to_end(members, shared_data, tmp_path, capsys):
    """``bloodseg-evaluate ckpt_path=[a,b]`` records both members; ``bloodseg-tune`` writes an
    ensemble's choice to output= (tied to its first member), which evaluate then reads. Tuning
    sees a corner of the smear (a quarter of the network's work), the test the whole smear."""
    from bloodseg.cli.evaluate import main as evaluate
    from bloodseg.cli.tune import main as tune

    root = tmp_path / "data"
    for split in ("train", "test"):
        for kind, name in (("original", "original.png"), ("mask", "mask.png")):
            (root / split / kind).mkdir(parents=True)
            sample = shared_data / "bbbc041seg-sample" / name
            if split == "test":
                (root / split / kind / "smear.png").symlink_to(sample)
            else:
                corner = cv2.imread(str(sample), cv2.IMREAD_UNCHANGED)[:600, :800]
                assert cv2.imwrite(str(root / split / kind / "smear.png"), corner)
    a, b = members
    base = {"ckpt_path": [str(a), str(b)], "weights": None, "postprocess": None,
            "postprocess_file": None, "n_samples": 0,
            "predict": {"tta": False, "device": "cpu", "mode": "auto"},
            "data": {"root": str(root), "split": "test", "val_fraction": 0.0, "seed": 0}}
    with pytest.raises(SystemExit) as exit_:
        tune(OmegaConf.create({**base, "paths": {"output_dir": str(tmp_path / "t0")},
                               "tune": {"split": "train", "max_images": 1}}))
    assert exit_.value.code == 2 and "output=" in capsys.readouterr().err
    chosen = tmp_path / "ensemble_pp.json"
    tune(OmegaConf.create({**base, "paths": {"output_dir": str(tmp_path / "t")},
                           "output": str(chosen),
                           "predict": {**base["predict"], "tta": "true"},
                           "tune": {"split": "train", "max_images": 1,
                                    "grid": {"marker_threshold": [0.4, 0.6]}}}))
    # the file says which TTA its choice was made under (averaged maps are smoother)
    assert json.loads(chosen.read_text())["tuning"]["tta"] == "flips"
    out = tmp_path / "eval"
    metrics = evaluate(OmegaConf.create({**base, "postprocess_file": str(chosen),
                                         "paths": {"output_dir": str(out)}}))
    record = json.loads((out / "test_metrics.json").read_text())
    assert record["ckpt_path"] == [str(a), str(b)] and record["tta_mode"] == "none"
    assert metrics["test/f1"] > 0.8  # the shipped model and its noisy twin, averaged


@pytest.mark.slow
def test_init_from_a_shipped_model_then_fine_tune(hydra_cfg, tmp_path):
    """``init_from=count_real``: the run's network starts as the shipped model (the same
    weights), then trains on the run's own data (a few small crops: any step moves them)."""
    from bloodseg.training import build_module, train

    cfg = hydra_cfg(tmp_path, ["experiment=count_real", "init_from=count_real", *TINY,
                               "data.crop_size=32", "data.crops_per_image=1",
                               "trainer.max_epochs=1", "tune=null"])
    module = build_module(cfg)
    _, shipped = load_model(weights_path("count_real"))
    for k, v in shipped.state_dict().items():
        torch.testing.assert_close(module.net.state_dict()[k], v)
    metrics = train(cfg)
    assert "test/count_mae" in metrics
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    _, tuned = load_model(last)  # it trained: the weights moved away from the shipped ones
    assert [k for k, v in shipped.state_dict().items()
            if v.is_floating_point() and not torch.equal(tuned.state_dict()[k], v)]


def test_init_from_refuses_another_network_or_target(hydra_cfg, tmp_path):
    from bloodseg.io import CheckpointError
    from bloodseg.training import build_module

    with pytest.raises(CheckpointError, match=r"count_real\.pt: its network .* is not this "
                                              r"run's"):
        build_module(hydra_cfg(tmp_path, ["experiment=count_real", "model.base_channels=8",
                                          "init_from=count_real", *TINY]))
    with pytest.raises(CheckpointError, match="no such file and no shipped model"):
        build_module(hydra_cfg(tmp_path, ["init_from=/nowhere/x.ckpt", *TINY]))


@pytest.mark.parametrize("stage", ["tune", "evaluate", "predict"])
def test_every_model_stage_takes_the_tta_option(tmp_path, stage):
    # a tuning chosen on plain maps does not fit averaged ones, so tune takes it as well
    from tests.conftest import compose_cfg

    cfg = compose_cfg(tmp_path, ["predict.tta=d4"], config_name=stage)
    assert tta_mode(cfg.predict.tta) == "d4"
