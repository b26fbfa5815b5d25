"""Cross-validation (``bloodseg.cv``, ``bloodseg-cv``, ``benchmarks/real_cv.py``): the folds,
the recipe plumbing, results.json summarized and rendered, the whole workflow (resume,
rescore, variants, render, ensembles) against a stand-in command that writes a run's files
at once, and one real ``--quick`` run end to end on a synthetic folder in the Kaggle layout
(the real benchmark reads ../shared/data; these tests do not, so they need no ``real`` mark).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

from bloodseg.boxes import instance_boxes
from bloodseg.cli.cv import main
from bloodseg.cv import outputs, recipes, results, runner, steps, summary
from bloodseg.cv.folds import assign_folds, build_fold_dirs, list_pairs
from bloodseg.data.bbbc041seg import read_native_instances
from bloodseg.data.synthetic import write_dataset

TINY = ('tiny="data.image_size=64 model.base_channels=4 trainer=cpu trainer.max_epochs=1 '
        'tune={split:train}"')
README_STUB = "# readme\nbefore\n<!-- benchmark:begin -->\nold\n<!-- benchmark:end -->\nafter\n"
BASELINES = {"otsu+cc", "otsu+watershed", "otsu+watershed-tuned"}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` with its size and mtime: any write shows up."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            st = os.lstat(Path(dirpath) / name)
            out[str(Path(dirpath, name).relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def test_assign_folds_is_a_seeded_partition():
    names = [f"img{i:02d}" for i in range(40)]
    folds = assign_folds(names, 4, seed=0)
    assert [len(f) for f in folds] == [10, 10, 10, 10]
    assert sorted(n for f in folds for n in f) == names  # each name in exactly one fold
    assert folds == assign_folds(list(reversed(names)), 4, seed=0)  # input order is moot
    assert folds != assign_folds(names, 4, seed=1)
    assert folds[0] != names[:10]  # shuffled, not the sorted order cut in four
    assert [len(f) for f in assign_folds(names[:10], 3, seed=0)] == [4, 3, 3]
    for bad in (1, 41):
        with pytest.raises(ValueError, match="folds"):
            assign_folds(names, bad, seed=0)


def test_recipe_overrides():
    name, overrides = recipes.parse_named(TINY)
    assert name == "tiny" and overrides[:2] == ["data.image_size=64", "model.base_channels=4"]
    assert recipes.split_overrides("data.image_size=[288,384] trainer=cpu") == [
        "data.image_size=[288,384]", "trainer=cpu"]
    # later overrides of a key win; the run's own (data, run dir) always last; --seed trains
    # unless the recipe names its own training seed (ensemble members on one split)
    args = recipes.run_overrides(["data=synthetic", "seed=3", "data.image_size=[288,384]"],
                                 Path("/d/fold 0"), Path("/w/r/fold0"), seed=0, quick=True)
    assert "data=synthetic" not in args and "seed=3" in args and "seed=0" not in args
    assert "seed=5" in recipes.run_overrides(["trainer=cpu"], Path("/d"), Path("/w"), seed=5,
                                             quick=False)
    assert args.count("data.image_size=64") == 1 and "data.image_size=[288,384]" not in args
    assert "data.root='/d/fold 0'" in args and "hydra.run.dir=/w/r/fold0" in args
    assert recipes.hydra_value("/a/it's") == "'/a/it\\'s'"
    with pytest.raises(recipes.RecipeError):
        recipes.parse_named("no equals sign")
    # the recipes are conf/experiment/bench/*.yaml, in the table's order
    names = recipes.recipe_names()
    assert names[:6] == list(recipes.RECIPE_ORDER) and "base" not in names
    assert recipes.recipe_overrides("binary_288x384") == ["experiment=bench/binary_288x384"]
    assert recipes.select_recipes(["distance_s05"], [TINY]) == {
        "distance_s05": ["experiment=bench/distance_s05"], "tiny": overrides}
    with pytest.raises(recipes.RecipeError, match="no recipe nope"):
        recipes.select_recipes(["nope"], [])
    with pytest.raises(recipes.RecipeError, match="'folds'"):
        recipes.select_recipes([], ['folds="trainer=cpu"'], reserved="folds")


@pytest.mark.parametrize("script, expected", [
    ("raise ValueError('bad recipe')", "exit code 1: ValueError: bad recipe"),
    ("print('trained, tested nothing')", "no test_metrics.json: trained, tested nothing"),
])
def test_a_failed_run_is_a_row_not_a_crash(tmp_path, monkeypatch, capsys, script, expected):
    (tmp_path / "train.py").write_text(script + "\n")
    monkeypatch.setitem(steps.COMMANDS, "train", [sys.executable, str(tmp_path / "train.py")])
    run = runner.run_fold("broken", ["model=unet"], 1, tmp_path / "fold1", tmp_path / "run",
                          seed=0, quick=False, resume=False)
    assert run["status"] == "failed" and run["error"].startswith(expected)
    assert run["wall_s"] > 0 and (tmp_path / "run" / results.RUN_LOG).is_file()
    assert "last lines of" in capsys.readouterr().err
    res = {"quick": False, "finished": "now", "git": {}, "command": "bloodseg-cv x",
           "fixed_overrides": [], "recipes": {"broken": ["model=unet"]},
           "data": {"kind": "real", "n_pairs": 8, "name": "d", "folds": 2, "seed": 0,
                    "image_sizes": {"64×64": 8}, "fold_sizes_text": "4"},
           "methods": {"broken": {"kind": "recipe", "folds": [run]}}}
    res["methods"]["broken"]["summary"] = summary.summarize([run])
    md = outputs.cv_markdown(res)
    assert "| `broken` | — | 0/1 | failed |" in md and f"`broken` fold 0: {expected}" in md


def test_summary_over_folds():
    """Mean ± sample sd over the finished folds only; where the numbers were scored, one cell."""
    size = "256×256 (training size)"
    folds = [{"status": "ok", "wall_s": 10.0, "cpu_s": 20.0,
              "metrics": dict.fromkeys(results.METRICS, dice) | {"map": float("nan")},
              "resolution": dict.fromkeys(results.METRICS, "native") | {"dice": size}}
             for dice in (0.8, 0.9)] + [{"status": "failed", "error": "boom"}]
    s = summary.summarize(folds)
    assert (s["folds_ok"], s["folds"]) == (2, 3)
    assert s["dice"]["n"] == 2 and s["dice"]["mean"] == pytest.approx(0.85)
    assert s["dice"]["sd"] == pytest.approx(math.sqrt(0.005))
    assert s["map"]["n"] == 0 and math.isnan(s["map"]["mean"])  # NaN folds are left out
    assert s["resolution"] == f"Dice: {size}; others: native"
    assert summary.mean_sd([1.0])["n"] == 1 and math.isnan(summary.mean_sd([1.0])["sd"])
    # results.json is strict JSON: NaN and infinities as null, paths as strings
    assert json.loads(results.results_json({"a": float("nan"), "p": Path("x"),
                                            "t": (1, float("inf"))})) == \
        {"a": None, "p": "x", "t": [1, None]}


def test_image_sizes_are_read_from_the_files_headers(tmp_path):
    from PIL import Image

    from bloodseg.data.bbbc041seg import Sample

    samples = []
    for i, size in enumerate([(2, 1), (4, 3), (4, 3)]):
        Image.new("RGB", size).save(tmp_path / f"{i}.png")
        samples.append(Sample(str(i), tmp_path / f"{i}.png", tmp_path / f"{i}.png"))
    assert list(runner.image_sizes(samples).items()) == [("4×3", 2), ("2×1", 1)]


def test_a_run_error_is_its_exception_chain(tmp_path):
    log = tmp_path / results.RUN_LOG
    log.write_text("Traceback ...\nKeyError: 'x'\n\nDuring handling ...\n"
                   "hydra.errors.InstantiationException: bad model\nexiting\n")
    assert results.summarize_error(log) == "InstantiationException: bad model <- KeyError: 'x'"
    log.write_text("just output\nlast line\n")
    assert results.summarize_error(log) == "last line"
    assert results.summarize_error(tmp_path / "missing.log") == "no output"


# -- the workflow, against a stand-in for the commands -------------------------------------

#: ``python stand_in.py <step> key=value ...``: the files bloodseg-train/-tune/-evaluate leave
#: (test metrics and per-image rows of the fold's test images, a checkpoint, the tuning), at
#: once; every call's arguments appended to ``calls.jsonl`` beside it
STAND_IN = r'''
import csv, json, sys
from pathlib import Path

step, words = sys.argv[1], sys.argv[2:]
with open(Path(__file__).with_name("calls.jsonl"), "a") as f:
    f.write(json.dumps([step, *words]) + "\n")
unq = lambda v: v[1:-1] if len(v) > 1 and v[0] == v[-1] == "'" else v
args = {k: v for k, v in (w.split("=", 1) for w in words)}
out = Path(unq(args["hydra.run.dir"]))
out.mkdir(parents=True, exist_ok=True)
ckpt = args.get("ckpt_path")
if ckpt and ckpt.startswith("["):
    ckpt = [unq(c) for c in ckpt[1:-1].split(",")]
elif ckpt:
    ckpt = unq(ckpt)
if step == "tune":
    Path(unq(args["output"])).write_text(json.dumps({"tuning": {
        "split": args["tune.split"], "metric": args["tune.metric"], "tta": "none"}}))
    sys.exit(0)
if step == "train":
    if args.get("train") != "false":
        (out / "checkpoints").mkdir(exist_ok=True)
        (out / "checkpoints" / "best.ckpt").write_text(args.get("seed", ""))
    (out / "tuning.json").write_text(json.dumps({"chosen": {"split_ratio": 0.8}}))
    name = Path(ckpt).name if ckpt else "best.ckpt"
    (out / "postprocess.json").write_text(json.dumps({"weights": {"name": name}}))
images = sorted((Path(unq(args["data.root"])) / "test" / "original").iterdir())
extra = 1 if "predict.tta" in args else 0
rows = [{"file": p.name, "true_count": 10, "pred_count": 11 + extra + i % 2, "tp": 9,
         "fp": 2, "fn": 1} for i, p in enumerate(images)]
with open(out / "per_image.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
mae = sum(r["pred_count"] - r["true_count"] for r in rows) / len(rows)
(out / "test_metrics.json").write_text(json.dumps({"ckpt_path": ckpt, "image_size": [64, 64],
    "metrics": {"test/dice": 0.9, "test/count_mae": mae,
                "test/count_bias": mae, "test/f1": 0.9, "test/ap50": 0.85,
                "test/ap75": 0.6, "test/map": 0.55}}))
'''


@pytest.fixture
def stand_in(tmp_path, monkeypatch) -> Path:
    """The commands replaced by :data:`STAND_IN` (and the counts plot by nothing: drawn once
    per fold, it would be most of this test's time); its calls are read from the path
    returned."""
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    for step in ("train", "tune", "evaluate"):
        monkeypatch.setitem(steps.COMMANDS, step, [sys.executable, str(script), step])
    monkeypatch.setattr(outputs, "plot_cv_counts", lambda res, path: None)
    return tmp_path / "calls.jsonl"


def test_the_workflow_resume_rescore_variants_render_ensembles(tmp_path, stand_in, capsys,
                                                               monkeypatch):
    data = write_dataset(tmp_path / "data", n_train=6, n_test=2, size=(32, 32), seed=0)
    readme = tmp_path / "README.md"
    readme.write_text(README_STUB)
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--quick", "--no-baselines", "--root", str(data), "--work", str(work), "--out",
            str(out), "--recipe", TINY, "--readme", str(readme)]
    assert main(argv) == 0, capsys.readouterr().err[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert res["benchmark"] == "bloodseg-cv" and res["command"].startswith("bloodseg-cv --quick")
    assert [f["status"] for f in res["methods"]["tiny"]["folds"]] == ["ok", "ok"]
    call = json.loads(stand_in.read_text().splitlines()[0])
    assert call[0] == "train" and "data=bbbc041seg" in call and "model.base_channels=4" in call
    assert readme.read_text() == README_STUB  # quick numbers never reach a README

    # --resume reuses both finished runs
    metrics_file = work / "tiny" / "fold0" / "test_metrics.json"
    stamp = metrics_file.stat().st_mtime_ns
    assert main([*argv, "--resume"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert all(f["resumed"] for f in res["methods"]["tiny"]["folds"])
    assert metrics_file.stat().st_mtime_ns == stamp

    # --rescore re-tests both checkpoints under the recipe as it is now, training kept; the
    # checkpoint is never rewritten, the choice goes beside the re-test
    ckpt = work / "tiny" / "fold0" / "checkpoints" / "best.ckpt"
    ckpt_stamp = ckpt.stat().st_mtime_ns
    own_tuning = work / "tiny" / "fold0" / "postprocess.json"  # the training run's own
    own_stamp = own_tuning.stat().st_mtime_ns
    code = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(runner, "git_info", lambda paths=(): dict(code))
    assert main([*argv, "--rescore"]) == 0
    assert ckpt.stat().st_mtime_ns == ckpt_stamp and own_tuning.stat().st_mtime_ns == own_stamp
    record = json.loads((work / "tiny" / "fold0" / "rescore" / results.RUN_RECORD).read_text())
    assert record["overrides"][-2:] == ["train=false", f"ckpt_path={ckpt}"]
    res = json.loads((out / "results.json").read_text())
    for k, f in enumerate(res["methods"]["tiny"]["folds"]):
        assert f["rescored"] and f["run_dir"].endswith(f"fold{k}/rescore")
        assert f["cpu_s"] is not None and f["rescore_wall_s"] > 0
    assert metrics_file.stat().st_mtime_ns == stamp
    assert "Re-tested with `--rescore`: `tiny`" in (out / "results.md").read_text()

    # --variant: the same checkpoints re-tested with test-time overrides, a method of its own
    assert main([*argv, "--rescore", "--variant", 'tta="predict.tta=true"']) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["variants"] == {"tta": ["predict.tta=true"]}
    assert list(res["methods"])[-2:] == ["tiny", "tiny+tta"]
    for k, f in enumerate(res["methods"]["tiny+tta"]["folds"]):
        assert f["status"] == "ok" and f["run_dir"].endswith(f"fold{k}/rescore-tta")
        record = json.loads((Path(f["run_dir"]) / results.RUN_RECORD).read_text())
        assert record["overrides"][-3:-2] == ["predict.tta=true"]  # then train=false, ckpt
        assert f["trained_with"] == res["methods"]["tiny"]["folds"][k]["trained_with"]
        assert [r["file"] for r in f["per_image"]] == \
            [r["file"] for r in res["methods"]["tiny"]["folds"][k]["per_image"]]
    assert "| `tiny+tta` |" in (out / "results.md").read_text()
    capsys.readouterr()
    assert main([*argv, "--variant", "tta=predict.tta=true"]) == 2
    assert "use it with --rescore" in capsys.readouterr().err

    # --render: results.md again from results.json alone, the same text
    md = (out / "results.md").read_text()
    (out / "results.md").unlink()
    assert main(["--render", "--out", str(out)]) == 0
    assert (out / "results.md").read_text() == md
    rescored = work / "tiny" / "fold0" / "rescore" / "test_metrics.json"
    stamp = rescored.stat().st_mtime_ns
    assert main([*argv, "--rescore"]) == 0  # the same re-test is reused, not run again
    assert rescored.stat().st_mtime_ns == stamp
    code["dirty"] = True  # other code may score otherwise: re-tested again
    assert main([*argv, "--rescore"]) == 0
    assert rescored.stat().st_mtime_ns != stamp

    # --ensemble: a second training seed of the same recipe (the recipe's seed= wins over
    # --seed), then both networks averaged on each fold, tuned together on its training images
    tiny2 = TINY.replace('tiny="', 'tiny2="seed=7 ')
    capsys.readouterr()
    assert main([*argv, "--resume", "--ensemble", 'ens="tiny,tiny2"']) == 2
    assert "not a recipe of this call" in capsys.readouterr().err
    assert main([*argv, "--resume", "--recipe", tiny2, "--ensemble", 'ens="tiny,tiny2"']) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["ensembles"] == {"ens": ["tiny", "tiny2"]}
    trained = json.loads((work / "tiny2" / "fold0" / results.RUN_RECORD).read_text())
    assert "seed=7" in trained["overrides"] and "seed=0" not in trained["overrides"]
    for k, f in enumerate(res["methods"]["ens"]["folds"]):
        assert f["status"] == "ok", f
        members = [work / m / f"fold{k}" / "checkpoints" / "best.ckpt" for m in ("tiny", "tiny2")]
        tested = json.loads((work / "ens" / f"fold{k}" / "test_metrics.json").read_text())
        assert tested["ckpt_path"] == [str(p) for p in members]
        chosen = json.loads((work / "ens" / f"fold{k}" / "postprocess.json").read_text())
        assert chosen["tuning"]["split"] == "train" and chosen["tuning"]["metric"] == "f1"
        assert [r["file"] for r in f["per_image"]] == \
            [r["file"] for r in res["methods"]["tiny"]["folds"][k]["per_image"]]
        assert f["cpu_s"] == pytest.approx(sum(res["methods"][m]["folds"][k]["cpu_s"]
                                               for m in ("tiny", "tiny2")), abs=0.02)
    md = (out / "results.md").read_text()
    assert "| `ens` |" in md and "`ens` = `tiny` + `tiny2`" in md
    # --only-variants with an ensemble: the members' finished runs are read, none trains
    member = work / "tiny2" / "fold1" / "test_metrics.json"
    stamp = member.stat().st_mtime_ns
    assert main([*argv, "--only-variants", "--recipe", tiny2,
                 "--ensemble", 'ens="tiny,tiny2"']) == 0
    assert member.stat().st_mtime_ns == stamp
    res = json.loads((out / "results.json").read_text())
    assert all(f["status"] == "ok" for f in res["methods"]["ens"]["folds"])
    # --no-baselines: no Otsu row, and the caption says so instead of describing them
    assert set(res["methods"]) == {"tiny", "tiny2", "ens"}
    assert res["data"]["image_sizes"] == {"32×32": 8}
    md = (out / "results.md").read_text()
    assert "were not run (`--no-baselines`)" in md and "Otsu +" not in md.split("\n\n")[1]


def test_mistakes_are_one_line_and_exit_2(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n_train=3, n_test=1, size=(32, 32), seed=0)
    cases = [
        ([], "--root DIR is needed"),
        (["--root", str(data), "--recipes", "nope"], "no recipe nope"),
        (["--root", str(data), "--folds", "9"], "need 2 <= folds <= 4"),
        (["--root", str(data), "--out", str(data / "out")], "overlaps the data folder"),
        (["--root", str(data), "--readme", str(tmp_path / "none.md")], "no such README"),
        (["--render", "--out", str(tmp_path / "empty")], "no results"),
        (["--root", str(data), "--only-variants"], "--only-variants needs"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("bloodseg-cv: error:") and message in err, (argv, err)
    assert not (data / "out").exists() and not (tmp_path / "empty").exists()


def test_the_benchmark_is_the_command_with_its_folders():
    """``benchmarks/real_cv.py`` is ``bloodseg-cv`` on ../shared/data's real pairs into
    experiments/benchmark-real; what it is given wins."""
    from benchmarks import real_cv

    argv = real_cv.benchmark_argv(["--recipes", "distance_s05"])
    assert argv[:4] == ["--root", str(real_cv.DEFAULT_ROOT), "--out", str(real_cv.DEFAULT_OUT)]
    assert real_cv.benchmark_argv(["--quick"])[3] == str(real_cv.DEFAULT_OUT / "quick")
    assert real_cv.benchmark_argv(["--root", "x", "--out=y"]) == ["--root", "x", "--out=y"]
    assert "--root" not in real_cv.benchmark_argv(["--render"])


# -- the real pipeline ---------------------------------------------------------------------


@pytest.mark.slow
def test_quick_cross_validation_end_to_end(tmp_path, capsys):
    """``bloodseg-cv --quick``: 2 folds of 8 tiny synthetic pairs, one tiny recipe (1 epoch,
    4 channels, its tuning on 2 images) trained, tuned and tested by ``bloodseg-train``
    subprocesses, the Otsu baselines beside it; results.json, results.md, counts.png and the
    README section. (Resume, rescore, variants, ensembles: the workflow test above.)"""
    data = write_dataset(tmp_path / "data", n_train=6, n_test=2, size=(48, 48), seed=0)
    before = snapshot(data)
    readme = tmp_path / "README.md"
    readme.write_text(README_STUB)
    # a second reference: every instance's box, one dropped per image of two or more cells
    # (another annotator who missed a cell), so the masks row sees them disagree
    boxes = tmp_path / "boxes.csv"
    with boxes.open("w") as f:
        f.write("stem,x0,y0,x1,y1\n")
        for sample in list_pairs(data):
            cells = instance_boxes(read_native_instances(sample))
            for x0, y0, x1, y1 in cells[1:] if len(cells) > 1 else cells:
                f.write(f"{sample.image.stem},{x0:g},{y0:g},{x1:g},{y1:g}\n")
    work, out = tmp_path / "work", tmp_path / "out"
    recipe = TINY[:-1] + ' tune.max_images=2 n_samples=1"'
    argv = ["--quick", "--root", str(data), "--work", str(work), "--out", str(out),
            "--recipe", recipe, "--readme", str(readme), "--boxes", str(boxes)]
    assert main(argv) == 0, capsys.readouterr().err[-3000:]

    res = json.loads((out / "results.json").read_text())
    assert res["quick"] is True and res["data"]["n_pairs"] == 8 and res["data"]["folds"] == 2
    assert set(res["methods"]) == BASELINES | {"tiny", runner.MASKS_VS_BOXES}
    for name, method in res["methods"].items():
        assert len(method["folds"]) == 2 and all(f["status"] == "ok" for f in method["folds"])
        for f in method["folds"]:
            scored = [k for k in results.METRICS if name != runner.MASKS_VS_BOXES
                      or k.startswith("box_")]  # the masks row has only the box columns
            assert all(math.isfinite(f["metrics"][k]) for k in scored), (name, f["metrics"])
            # reading 4 masks and their boxes can take under the 10 ms the times are rounded to
            assert f["cpu_s"] >= 0 and (f["wall_s"] > 0 or name == runner.MASKS_VS_BOXES)
            assert len(f["per_image"]) == 4
        assert method["summary"]["folds_ok"] == 2
    assert all(f["resolution"]["dice"] == "native" for m in BASELINES
               for f in res["methods"][m]["folds"])
    masks = res["methods"][runner.MASKS_VS_BOXES]["folds"]
    assert not any(summary.finite(f["metrics"]["f1"]) for f in masks)  # NaN: null in JSON
    assert all(0 < f["metrics"]["box_count_bias"] <= 1 and f["metrics"]["box_f1"] < 1
               for f in masks)
    assert all((work / "folds" / f"fold{k}" / "boxes.csv").resolve() == boxes.resolve()
               for k in range(2))
    assert all("split_ratio" in f["tuned"] for f in res["methods"]["otsu+watershed-tuned"]["folds"])

    md = (out / "results.md").read_text()
    assert results.QUICK_NOTE in md and "bloodseg-cv --quick" in md
    assert "| box F1 | box count MAE | box count bias |" in md
    for label in ("Otsu + connected components", "Otsu + bloodseg watershed",
                  "Otsu + bloodseg watershed, tuned", "`tiny`",
                  "the masks themselves (human vs human)"):
        row = next(ln for ln in md.splitlines() if ln.startswith(f"| {label} |"))
        assert "±" in row and "failed" not in row
    assert (out / "counts.png").stat().st_size > 5_000

    # the folds: disjoint test sets covering every pair, made of links only
    tests = [{p.stem for p in (work / "folds" / f"fold{k}" / "test" / "original").iterdir()}
             for k in range(2)]
    trains = [{p.stem for p in (work / "folds" / f"fold{k}" / "train" / "mask").iterdir()}
              for k in range(2)]
    every = {p.stem for s in ("train", "test") for p in (data / s / "original").iterdir()}
    assert not tests[0] & tests[1] and tests[0] | tests[1] == every
    assert trains == [tests[1], tests[0]]
    assert all(p.is_symlink() for p in (work / "folds").rglob("*.png"))
    assert snapshot(data) == before  # nothing written into the data folder
    assert readme.read_text() == README_STUB  # quick numbers never reach a README

    # the README section, from a full result: the table and the plot linked beside it
    res["quick"] = False
    outputs.update_cv_section(readme, "benchmark", res, out)
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("# readme\nbefore\n")
    assert text.endswith("after\n") and "Generated by `bloodseg-cv`" in text
    assert results.QUICK_NOTE not in text and "(out/counts.png)" in text


@pytest.mark.slow
def test_a_rescore_retests_the_checkpoint_as_the_recipe_is_now(tmp_path, trained_run,
                                                                 synthetic_root, hydra_cfg):
    """What ``--rescore`` runs (``bloodseg-train`` with the fold run's overrides, then
    ``train=false ckpt_path=<run>/checkpoints/best.ckpt``), in-process on a trained run: the
    recipe's tuning and test stages again, into the rescore folder; the checkpoint and the
    run's own files untouched."""
    from bloodseg.training import train

    ckpt = trained_run / "checkpoints" / "best.ckpt"
    stamps = {p: p.stat().st_mtime_ns for p in trained_run.rglob("*") if p.is_file()}
    test_dir = runner.rescore_dir(tmp_path / "fold0")
    recipe = ["model.base_channels=8", "data.image_size=128", "trainer=cpu",
              "tune={split:train}", "tune.max_images=2", "n_samples=0"]
    args = recipes.merge_overrides(
        recipes.run_overrides(recipe, synthetic_root, test_dir, 0, quick=False),
        ["train=false", f"ckpt_path={recipes.hydra_value(ckpt)}"])
    cfg = hydra_cfg(test_dir, [a for a in args if not a.startswith("hydra.")])
    train(cfg)
    rescored = Path(cfg.paths.output_dir)
    assert "split_ratio" in json.loads((rescored / "tuning.json").read_text())["chosen"]
    # the choice sits in the re-test's folder, tied to the checkpoint it was tuned for
    tuned = json.loads((rescored / "postprocess.json").read_text())
    assert tuned["weights"]["name"] == "best.ckpt"
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    metrics, where, rows = results.run_scores(rescored)
    assert math.isfinite(metrics["count_mae"]) and where["f1"] == "native" and len(rows) == 4


def test_fold_scores_read_the_logged_names_and_are_native(tmp_path):
    """test_metrics.json's names are InstanceStats' own; every test metric is native-size."""
    (tmp_path / "test_metrics.json").write_text(json.dumps({"image_size": [256, 256], "metrics": {
        "test/dice": 0.95, "test/count_mae": 3.0, "test/f1": 0.9}}))
    metrics, where, _ = results.run_scores(tmp_path)
    assert (metrics["dice"], metrics["count_mae"], metrics["f1"]) == (0.95, 3.0, 0.9)
    assert where["dice"] == where["count_mae"] == where["f1"] == "native"
    assert math.isnan(metrics["map"]) and where["map"] is None


def test_count_real_is_the_benchmarked_recipe(tmp_path):
    """experiment=bench/distance_s05 is experiment=count_real (the shipped recipe every bench
    recipe derives from) under another name, so the benchmark's numbers are count_real's."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg

    fixed = ["data=bbbc041seg", "data.root=/d", "seed=0"]
    a = OmegaConf.to_container(compose_cfg(tmp_path, ["experiment=bench/distance_s05", *fixed]),
                               resolve=False)
    b = OmegaConf.to_container(compose_cfg(tmp_path, ["experiment=count_real", *fixed]),
                               resolve=False)
    assert b.pop("name") == "count_real" and a.pop("name") == "distance_s05"
    a.pop("hydra"), b.pop("hydra")  # which experiment was chosen
    assert a == b and a["target"]["name"] == "distance"


def test_resume_knows_a_recipe_spelled_out_from_its_file():
    """Runs recorded before the recipe files spelled their recipe out; ``--resume`` reuses
    them when those overrides compose to what the recipe file composes to, and only then."""
    fixed = recipes.run_overrides([], Path("/d/fold0"), Path("/w/r/fold0"), seed=1, quick=False)
    spelled = ["target=distance", "data.color=gray", "data.scale=0.5", "data.crop_size=256",
               "data.crops_per_image=4", "data.contrast=percentile", "augment=strong",
               "model.base_channels=16", "trainer=cpu", "trainer.max_epochs=12",
               "optimizer.lr=1e-3", "scheduler=plateau", "callbacks.early_stopping=null",
               "tune={split:train,metric:f1}"]
    recorded = recipes.merge_overrides(fixed[:1], spelled, fixed[1:])
    now = recipes.run_overrides(recipes.recipe_overrides("distance_s05"), Path("/d/fold0"),
                                Path("/w/r/fold0"), seed=1, quick=False)
    assert recorded != now and recipes.same_training(recorded, now)
    assert not recipes.same_training(recorded, recipes.run_overrides(
        recipes.recipe_overrides("distance_s05_e24"), Path("/d/fold0"), Path("/w/r/fold0"),
        seed=1, quick=False))
    assert not recipes.same_training([*recorded[:-1], "seed=2", recorded[-1]], now)
    assert not recipes.same_training(["no_such_key.x=1", *recorded], now)


def test_only_variants_reads_finished_runs_and_never_trains(tmp_path):
    """``--only-variants``: a recipe's row is its runs as they were tested; an unfinished
    run is a failed row (it is never trained from there), so the call can run beside a
    cross-validation still training other folds."""
    from bloodseg import rundir

    done, pending = tmp_path / "fold0", tmp_path / "fold1"
    (done / "checkpoints").mkdir(parents=True)
    (done / "checkpoints" / "best.ckpt").write_bytes(b"")
    rundir.write_test_metrics(done, {"test/count_mae": 1.5, "test/f1": 0.95,
                                     "test/dice": 0.94}, "x", False, {})
    rundir.write_per_image(done, [{"file": "a.png", "true_count": 10, "pred_count": 11,
                                   "tp": 10, "fp": 1, "fn": 0}])
    row = runner.finished_fold("distance_s05", 0, done)
    assert row["status"] == "ok" and row["metrics"]["count_mae"] == 1.5
    assert row["metrics"]["f1"] == 0.95
    assert row["per_image"] == [{"file": "a.png", "true_count": 10, "pred_count": 11,
                                 "tp": 10, "fp": 1, "fn": 0}]
    pending.mkdir()
    assert runner.finished_fold("distance_s05", 1, pending)["status"] == "failed"
    assert not (pending / "checkpoints").exists()


def test_fold_folders_are_links_kept_while_they_match(tmp_path):
    """A second call (e.g. --only-variants beside a cross-validation still training) keeps
    fold folders that link exactly the same files, and rebuilds those that do not."""
    data = write_dataset(tmp_path / "data", n_train=5, n_test=3, size=(32, 32), seed=0)
    samples = list_pairs(data)
    names = [s.name for s in samples]
    folds = assign_folds(names, 2, seed=0)
    first = build_fold_dirs(samples, folds, tmp_path / "work")
    links = sorted(p for p in first[0].rglob("*") if p.is_symlink())
    assert len(links) == 2 * len(samples) and all(p.resolve().is_file() for p in links)
    assert {p.stem for p in (first[0] / "test" / "original").iterdir()} == set(folds[0])
    marker = {p: p.lstat().st_mtime_ns for p in links}
    build_fold_dirs(samples, folds, tmp_path / "work")
    assert {p: p.lstat().st_mtime_ns for p in links} == marker  # kept, not rebuilt
    other = assign_folds(names, 2, seed=1)
    assert other != folds
    rebuilt = build_fold_dirs(samples, other, tmp_path / "work")
    assert {p.stem for p in (rebuilt[0] / "test" / "original").iterdir()} == set(other[0])
