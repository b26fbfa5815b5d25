"""The model contract: a checkpoint is data, never code.

A stranger's ``.ckpt`` whose stored config holds a Hydra ``_target_`` (here: one that would
write a marker file) in any key or nested field, or whose pickle would run code, is refused by
predict, evaluate and resume, with a message naming the file and the key, and the marker never
appears. A checkpoint without a model spec (Lightning ``hyper_parameters`` only) is not a
bloodseg model file.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from bloodseg.cli.evaluate import main as evaluate
from bloodseg.inference import Predictor
from bloodseg.io import CheckpointError
from bloodseg.modelfile import load_model, read_tuned, save_bundle, write_tuned
from bloodseg.prediction import predict
from bloodseg.spec import SPEC_KEY, ModelSpec, Postprocess, SpecError
from bloodseg.training import train
from tests.conftest import compose_cfg
from tests.helpers.cli import run
from tests.helpers.runs import TINY


def payload(marker: Path) -> dict:
    """What Hydra's instantiate would turn into ``Path(marker).write_text("pwned")``."""
    return {"_target_": "pathlib.Path.write_text",
            "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "pwned"]}


SPEC_PLACES = [
    ("network",), ("network", "name"), ("network", "kwargs", "base_channels"),
    ("network", "kwargs", "extra"), ("target",), ("target", "name"), ("target", "extra"),
    ("preprocess",), ("preprocess", "image_size"), ("preprocess", "color"),
    ("preprocess", "extra"), ("postprocess",), ("postprocess", "name"),
    ("postprocess", "fields", "threshold"), ("postprocess", "fields", "extra"),
    ("provenance", "metrics"), ("provenance", "extra"), ("extra",),
]
HPARAM_PLACES = [
    ("model",), ("model", "base_channels"), ("loss",), ("optimizer",), ("scheduler",),
    ("postprocess",), ("postprocess", "threshold"), ("data_info",),
    ("data_info", "image_size"), ("target",), ("target", "extra"), ("extra",),
]
CASES = [("spec", p) for p in SPEC_PLACES] + [("hparams", p) for p in HPARAM_PLACES]


def put(d: dict, place: tuple[str, ...], value) -> None:
    for key in place[:-1]:
        d = d[key]
    d[place[-1]] = value


@pytest.fixture(scope="module")
def genuine(trained_run) -> dict:
    return torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)


class Payload:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def traps(genuine: dict, marker: Path) -> list[tuple[str, dict, str]]:
    """Every checkpoint a stranger could hand over: its name, what ``torch.save`` writes and
    what the refusal must name: a Hydra payload (``payload(marker)``) in each place of the
    spec or the Lightning ``hyper_parameters``, a pickled payload alone or beside genuine
    weights, a pickled class, and a foreign checkpoint without a spec."""
    out = []
    for kind, place in CASES:
        ckpt = {**genuine, SPEC_KEY: copy.deepcopy(genuine[SPEC_KEY]),
                "hyper_parameters": copy.deepcopy(genuine["hyper_parameters"])}
        put(ckpt[SPEC_KEY] if kind == "spec" else ckpt["hyper_parameters"], place,
            payload(marker))
        out.append((f"{kind}:{'.'.join(place)}", ckpt,
                    place[0] if kind == "spec" else "hyper_parameters"))
    return out + [
        ("pickled payload", {"payload": Payload(marker)}, "refused"),
        ("pickled payload beside the weights", {**genuine, "extra": Payload(marker)}, "refused"),
        ("pickled class", {"state_dict": {}, "obj": Path("x")}, "refused"),
        ("foreign", {"state_dict": {"w": torch.zeros(1)}}, "not a bloodseg model file"),
    ]


def test_booby_trapped_checkpoints_are_refused_everywhere_and_never_act(genuine, trained_run,
                                                                        tmp_path, capsys):
    """Every trap is refused, with the file and what is wrong named, by predict, evaluate or a
    resume (the traps taken in turn: the three share modelfile's reader, and each gets traps
    of the spec, of the hyper_parameters and pickled ones); then, from each command line, one
    clear line and a non-zero exit. The payload never runs; predict writes nothing."""
    marker = tmp_path / "pwned"
    image = next((trained_run / "samples").glob("*_image.png"))
    files = []
    for i, (name, content, names) in enumerate(traps(genuine, marker)):
        torch.save(content, tmp_path / f"trap{i}.ckpt")
        files.append((name, tmp_path / f"trap{i}.ckpt", names))
    entries = {  # ckpt_path: the entry's traps in turn
        "predict": ("predict", [f"input={image}", f"output={tmp_path / 'pred'}"], predict),
        "evaluate": ("evaluate", [], evaluate),
        "resume": ("train", [*TINY, "trainer.max_epochs=1"], train),
    }
    for turn, (entry, (config, overrides, run_entry)) in enumerate(entries.items()):
        cfg = compose_cfg(tmp_path / entry, overrides, config_name=config)
        try:
            for name, trap, names in files[turn::len(entries)]:
                with open_dict(cfg):
                    cfg.ckpt_path = str(trap)
                if entry == "evaluate":  # the command: one line on stderr, exit 2
                    with pytest.raises(SystemExit) as exit_:
                        run_entry(cfg)
                    assert exit_.value.code == 2
                    msg = capsys.readouterr().err
                else:
                    with pytest.raises(CheckpointError) as info:
                        run_entry(cfg)
                    msg = str(info.value)
                assert str(trap) in msg and names in msg, (entry, name, msg)
                assert "weights_only=False" not in msg, (entry, name, msg)
        finally:
            GlobalHydra.instance().clear()
    # the commands, as typed: the refusal reaches the user as one line
    trap_of = {name: trap for name, trap, _ in files}
    for i, (name, shown) in enumerate((("spec:network.kwargs.base_channels",
                                        "network.kwargs.base_channels._target_: refused"),
                                       ("pickled payload beside the weights", "refused"))):
        for command, extra in (("bloodseg.cli.evaluate", []),
                               ("bloodseg.cli.predict",
                                [f"input={image}", f"output={tmp_path / 'pred'}"]),
                               ("bloodseg.cli.train", [*TINY, "trainer.max_epochs=1"])):
            proc = run(command, [f"ckpt_path={trap_of[name]}",
                                 f"hydra.run.dir={tmp_path / command}{i}", *extra], tmp_path,
                       in_process=True)
            out = proc.stdout + proc.stderr
            assert proc.returncode != 0, (command, name)
            assert shown in out, (command, name, out[-2000:])
    assert not marker.exists(), "the checkpoint's payload ran"
    assert not (tmp_path / "pred").exists(), "predict wrote before it checked the model"
    # and a genuine bloodseg checkpoint still loads
    assert load_model(trained_run / "checkpoints" / "best.ckpt")


def test_tuned_file_beside_the_weights_is_checked_like_a_spec(trained_run, tmp_path):
    weights = tmp_path / "checkpoints" / "best.ckpt"
    weights.parent.mkdir()
    weights.write_bytes((trained_run / "checkpoints" / "best.ckpt").read_bytes())
    path = write_tuned(weights, Postprocess("binary", {"threshold": 0.4}), {"metric": "f1"})
    assert path == tmp_path / "postprocess.json"
    assert read_tuned(weights).fields == {"threshold": 0.4}
    record = json.loads(path.read_text())
    record["postprocess"]["fields"]["threshold"] = payload(tmp_path / "pwned")
    path.write_text(json.dumps(record))
    with pytest.raises(SpecError, match=r"postprocess.json: postprocess.fields.threshold"):
        Predictor.load(weights)
    # tuned for other weights: not applied (and said so), never silently
    record["postprocess"]["fields"]["threshold"] = 0.4
    record["weights"]["sha256"] = "0" * 64
    path.write_text(json.dumps(record))
    assert read_tuned(weights) is None
    with pytest.raises(SpecError, match="tuned for other weights"):
        read_tuned(weights, path)
    assert not (tmp_path / "pwned").exists()


def test_a_checkpoint_without_a_spec_is_not_a_bloodseg_model_file(genuine, tmp_path):
    no_spec = copy.deepcopy(genuine)
    del no_spec[SPEC_KEY]
    path = tmp_path / "no_spec.ckpt"
    torch.save(no_spec, path)
    with pytest.raises(CheckpointError, match=r"no_spec.ckpt: not a bloodseg model file"):
        load_model(path)
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match=r"odd.ckpt: not a bloodseg model file"):
        load_model(tmp_path / "odd.ckpt")


def test_spec_round_trips_and_checks_its_parts(genuine):
    spec = ModelSpec.from_dict(genuine[SPEC_KEY], "x")
    assert ModelSpec.from_dict(spec.to_dict(), "x") == spec
    bad = spec.to_dict()
    bad["network"]["kwargs"]["classes"] = 3
    with pytest.raises(SpecError, match="network.kwargs.classes: 3 does not match target"):
        ModelSpec.from_dict(bad, "x")
    bad = spec.to_dict()
    bad["postprocess"] = {"name": "contour", "fields": {}}  # 3-channel post-processing of 1
    with pytest.raises(SpecError, match="postprocess=binary"):
        ModelSpec.from_dict(bad, "x")
    bad = spec.to_dict()
    bad["postprocess"]["fields"]["min_area"] = "16"
    with pytest.raises(SpecError, match="postprocess.fields.min_area: '16' is not of type int"):
        ModelSpec.from_dict(bad, "x")
    bad = spec.to_dict()
    bad["version"] = 99
    with pytest.raises(SpecError, match="version 99"):
        ModelSpec.from_dict(bad, "x")


def test_bundle_is_weights_only_and_counts_like_its_checkpoint(trained_run, tmp_path):
    ckpt = trained_run / "checkpoints" / "best.ckpt"
    spec, net = load_model(ckpt)
    bundle = save_bundle(tmp_path / "m.pt", spec, net.state_dict())
    assert bundle.stat().st_size < ckpt.stat().st_size / 2  # fp16, no optimizer state
    raw = torch.load(bundle, weights_only=True)
    assert set(raw) == {"format", SPEC_KEY, "weights"}
    image = np.asarray(Predictor.read(next((trained_run / "samples").glob("*_image.png"))))
    a, b = Predictor.load(ckpt), Predictor.load(bundle)
    assert np.abs(a.outputs(image) - b.outputs(image)).max() < 5e-3


@pytest.mark.slow
@pytest.mark.real
def test_evaluate_reproduces_a_percentile_contrast_run_on_real_pairs(shared_data, tmp_path):
    """A count_real-style run (percentile contrast, half scale, distance target, tuned) on
    real smears: evaluate given only the checkpoint and data.root prints the run's own
    numbers, exactly (the old evaluate read the data without the contrast and did not)."""
    mini = shared_data / "bbbc041seg-mini"
    root = tmp_path / "real"
    for split, n in (("train", 6), ("test", 2)):  # a few pairs keep it to seconds
        for kind in ("original", "mask"):
            (root / split / kind).mkdir(parents=True)
        for image in sorted((mini / split / "original").iterdir())[:n]:
            mask = mini / split / "mask" / f"{image.stem}.png"
            (root / split / "original" / image.name).symlink_to(image)
            (root / split / "mask" / mask.name).symlink_to(mask)
    cfg = compose_cfg(tmp_path, [
        "experiment=count_real", f"data.root={root}", "data.scale=0.25", "data.crop_size=128",
        "data.crops_per_image=1", "data.num_workers=0", "model.base_channels=4",
        "trainer.max_epochs=1", "logger=csv", "callbacks.progress_bar=null",
        "tune.max_images=3", "tune.grid={marker_threshold:[0.4,0.6]}"])
    assert cfg.data.contrast == "percentile"
    metrics = train(cfg)
    GlobalHydra.instance().clear()
    run = Path(cfg.paths.output_dir)
    spec, _ = load_model(run / "checkpoints" / "best.ckpt")
    assert spec.preprocess.contrast == "percentile" and spec.preprocess.scale == 0.25
    ecfg = compose_cfg(tmp_path / "eval", [f"ckpt_path={run / 'checkpoints' / 'best.ckpt'}",
                                           f"data.root={root}"], config_name="evaluate")
    got = evaluate(ecfg)
    GlobalHydra.instance().clear()
    assert got == {k: v for k, v in metrics.items() if k.startswith("test/")}
    assert json.loads((run / "test_metrics.json").read_text())["metrics"] == got
