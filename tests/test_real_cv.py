"""benchmarks/real_cv.py: the folds (bloodseg.cv.folds), the recipe plumbing, its
results.json read and rendered (bloodseg.report.cv), and a --quick run end to end on a
synthetic folder in the Kaggle layout (the real benchmark reads ../shared/data; this test does
not, so it needs no ``real`` mark)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from benchmarks import real_cv
from bloodseg.cv.folds import assign_folds, build_fold_dirs, list_pairs
from bloodseg.data.synthetic import write_dataset
from bloodseg.report import cv as report

TINY = ('tiny="data.image_size=64 model.base_channels=4 trainer=cpu trainer.max_epochs=1 '
        'tune={split:train}"')
README_STUB = "# readme\nbefore\n<!-- benchmark:begin -->\nold\n<!-- benchmark:end -->\nafter\n"


def load_script():
    return real_cv


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
    cv = load_script()
    assert cv.parse_recipe(TINY)[0] == "tiny"
    assert cv.split_overrides(cv.parse_recipe(TINY)[1])[:2] == ["data.image_size=64",
                                                                "model.base_channels=4"]
    assert cv.split_overrides("data.image_size=[288,384] trainer=cpu") == [
        "data.image_size=[288,384]", "trainer=cpu"]
    # later overrides of a key win; the benchmark's own (data, run dir) always last; --seed
    # trains unless the recipe names its own training seed (ensemble members on one split)
    args = cv.run_overrides(["data=synthetic", "seed=3", "data.image_size=[288,384]"],
                            Path("/d/fold 0"), Path("/w/r/fold0"), seed=0, quick=True)
    assert "data=synthetic" not in args and "seed=3" in args and "seed=0" not in args
    assert "seed=5" in cv.run_overrides(["trainer=cpu"], Path("/d"), Path("/w"), seed=5,
                                        quick=False)
    assert args.count("data.image_size=64") == 1 and "data.image_size=[288,384]" not in args
    assert "data.root='/d/fold 0'" in args and "hydra.run.dir=/w/r/fold0" in args
    assert cv.hydra_value("/a/it's") == "'/a/it\\'s'"
    with pytest.raises(SystemExit):
        cv.parse_recipe("no equals sign")
    # the recipes are conf/experiment/bench/*.yaml, in the table's order, base not among them
    names = cv.recipe_names()
    assert names[:6] == list(cv.RECIPE_ORDER) and "base" not in names
    assert cv.recipe_overrides("binary_288x384") == ["experiment=bench/binary_288x384"]
    assert cv.parse_variants(['tta="predict.tta=true"']) == {"tta": ["predict.tta=true"]}


@pytest.mark.parametrize("script, expected", [
    ("raise ValueError('bad recipe')", "exit code 1: ValueError: bad recipe"),
    ("print('trained, tested nothing')", "no test_metrics.json: trained, tested nothing"),
])
def test_a_failed_run_is_a_row_not_a_crash(tmp_path, monkeypatch, capsys, script, expected):
    cv = load_script()
    (tmp_path / "train.py").write_text(script + "\n")
    monkeypatch.setattr(cv, "ROOT", tmp_path)  # run_fold starts <ROOT>/train.py
    run = cv.run_fold("broken", ["model=unet"], 1, tmp_path / "fold1", tmp_path / "run",
                      seed=0, quick=False, resume=False)
    assert run["status"] == "failed" and run["error"].startswith(expected)
    assert run["wall_s"] > 0 and (tmp_path / "run" / report.RUN_LOG).is_file()
    assert "last lines of" in capsys.readouterr().err
    results = {"quick": False, "finished": "now", "git": {}, "command": "python x",
               "fixed_overrides": [], "recipes": {"broken": ["model=unet"]},
               "data": {"kind": "real", "n_pairs": 8, "name": "d", "folds": 2, "seed": 0,
                        "image_sizes": {"64×64": 8}, "fold_sizes_text": "4"},
               "methods": {"broken": {"kind": "recipe", "folds": [run]}}}
    results["methods"]["broken"]["summary"] = report.summarize([run])
    md = report.results_markdown(results)
    assert "| `broken` | — | 0/1 | failed |" in md and f"`broken` fold 0: {expected}" in md


def test_summary_over_folds():
    """Mean ± sample sd over the finished folds only; where the numbers were scored, one cell."""
    size = "256×256 (training size)"
    folds = [{"status": "ok", "wall_s": 10.0, "cpu_s": 20.0,
              "metrics": dict.fromkeys(report.METRICS, dice) | {"map": float("nan")},
              "resolution": dict.fromkeys(report.METRICS, "native") | {"dice": size}}
             for dice in (0.8, 0.9)] + [{"status": "failed", "error": "boom"}]
    s = report.summarize(folds)
    assert (s["folds_ok"], s["folds"]) == (2, 3)
    assert s["dice"]["n"] == 2 and s["dice"]["mean"] == pytest.approx(0.85)
    assert s["dice"]["sd"] == pytest.approx(math.sqrt(0.005))
    assert s["map"]["n"] == 0 and math.isnan(s["map"]["mean"])  # NaN folds are left out
    assert s["resolution"] == f"Dice: {size}; others: native"
    assert report.mean_sd([1.0])["n"] == 1 and math.isnan(report.mean_sd([1.0])["sd"])
    # results.json is strict JSON: NaN and infinities as null, paths as strings
    assert json.loads(report.results_json({"a": float("nan"), "p": Path("x"),
                                           "t": (1, float("inf"))})) == \
        {"a": None, "p": "x", "t": [1, None]}


def test_image_sizes_are_read_from_the_files_headers(tmp_path):
    from PIL import Image

    from bloodseg.data.bbbc041seg import Sample

    cv = load_script()
    samples = []
    for i, size in enumerate([(2, 1), (4, 3), (4, 3)]):
        Image.new("RGB", size).save(tmp_path / f"{i}.png")
        samples.append(Sample(str(i), tmp_path / f"{i}.png", tmp_path / f"{i}.png"))
    assert list(cv.image_sizes(samples).items()) == [("4×3", 2), ("2×1", 1)]


def test_a_run_error_is_its_exception_chain(tmp_path):
    log = tmp_path / report.RUN_LOG
    log.write_text("Traceback ...\nKeyError: 'x'\n\nDuring handling ...\n"
                   "hydra.errors.InstantiationException: bad model\nexiting\n")
    assert report.summarize_error(log) == "InstantiationException: bad model <- KeyError: 'x'"
    log.write_text("just output\nlast line\n")
    assert report.summarize_error(log) == "last line"
    assert report.summarize_error(tmp_path / "missing.log") == "no output"


@pytest.mark.slow
def test_quick_benchmark_end_to_end(tmp_path, capsys, monkeypatch):
    cv = load_script()
    data = write_dataset(tmp_path / "data", n_train=6, n_test=2, size=(64, 64), seed=0)
    before = snapshot(data)
    readme = tmp_path / "README.md"
    readme.write_text(README_STUB)
    work, out = tmp_path / "work", tmp_path / "out"
    argv = ["--quick", "--root", str(data), "--work", str(work), "--out", str(out),
            "--recipe", TINY, "--readme", str(readme)]
    assert cv.main(argv) == 0, capsys.readouterr().err[-3000:]

    res = json.loads((out / "results.json").read_text())
    assert res["quick"] is True and res["data"]["n_pairs"] == 8 and res["data"]["folds"] == 2
    assert set(res["methods"]) == {"otsu+cc", "otsu+watershed", cv.TUNED_BASELINE, "tiny"}
    for name, method in res["methods"].items():
        assert len(method["folds"]) == 2 and all(f["status"] == "ok" for f in method["folds"])
        for f in method["folds"]:
            assert all(math.isfinite(f["metrics"][k]) for k in report.METRICS), (name, f["metrics"])
            assert f["cpu_s"] >= 0 and f["wall_s"] > 0
            assert len(f["per_image"]) == 4
        assert method["summary"]["folds_ok"] == 2
    assert all(f["resolution"]["dice"] == "native"
               for m in ("otsu+cc", "otsu+watershed", cv.TUNED_BASELINE)
               for f in res["methods"][m]["folds"])
    assert all("split_ratio" in f["tuned"] for f in res["methods"][cv.TUNED_BASELINE]["folds"])

    md = (out / "results.md").read_text()
    assert report.QUICK_NOTE in md and "python benchmarks/real_cv.py --quick" in md
    for label in ("Otsu + connected components", "Otsu + bloodseg watershed",
                  "Otsu + bloodseg watershed, tuned", "`tiny`"):
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

    # --resume reuses both finished runs; the README section is written from a full result
    metrics_file = work / "tiny" / "fold0" / "test_metrics.json"
    stamp = metrics_file.stat().st_mtime_ns
    assert cv.main([*argv, "--resume"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert all(f["resumed"] for f in res["methods"]["tiny"]["folds"])
    assert metrics_file.stat().st_mtime_ns == stamp

    # --rescore re-tests both checkpoints under the recipe as it is now, training kept; the
    # checkpoint it was given is never rewritten (tuning goes to the rescore folder)
    ckpt = work / "tiny" / "fold0" / "checkpoints" / "best.ckpt"
    ckpt_stamp = ckpt.stat().st_mtime_ns
    own_tuning = work / "tiny" / "fold0" / "postprocess.json"  # the training run's own
    own_stamp = own_tuning.stat().st_mtime_ns
    code = {"commit": "a" * 40, "dirty": False}
    monkeypatch.setattr(cv, "git_info", lambda paths=(): dict(code))
    assert cv.main([*argv, "--rescore"]) == 0
    assert ckpt.stat().st_mtime_ns == ckpt_stamp
    tuning = json.loads((work / "tiny" / "fold0" / "rescore" / "tuning.json").read_text())
    assert "split_ratio" in tuning["chosen"]
    # the choice sits in the re-test's folder, tied to the checkpoint it was tuned for
    tuned = json.loads((work / "tiny" / "fold0" / "rescore" / "postprocess.json").read_text())
    assert tuned["weights"]["name"] == "best.ckpt"
    assert own_tuning.stat().st_mtime_ns == own_stamp
    res = json.loads((out / "results.json").read_text())
    for k, f in enumerate(res["methods"]["tiny"]["folds"]):
        assert f["rescored"] and f["run_dir"].endswith(f"fold{k}/rescore")
        assert (work / "tiny" / f"fold{k}" / "rescore" / "test_metrics.json").is_file()
        assert f["cpu_s"] is not None and f["rescore_wall_s"] > 0
    assert metrics_file.stat().st_mtime_ns == stamp
    assert "Re-tested with `--rescore`: `tiny`" in (out / "results.md").read_text()

    # --variant: the same checkpoints re-tested with test-time overrides, a method of its own
    assert cv.main([*argv, "--rescore", "--variant", 'tta="predict.tta=true"']) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["variants"] == {"tta": ["predict.tta=true"]}
    assert list(res["methods"])[-2:] == ["tiny", "tiny+tta"]
    for k, f in enumerate(res["methods"]["tiny+tta"]["folds"]):
        assert f["status"] == "ok" and f["run_dir"].endswith(f"fold{k}/rescore-tta")
        record = json.loads((Path(f["run_dir"]) / report.RUN_RECORD).read_text())
        assert record["overrides"][-3:-2] == ["predict.tta=true"]  # then train=false, ckpt
        assert f["trained_with"] == res["methods"]["tiny"]["folds"][k]["trained_with"]
        assert [r["file"] for r in f["per_image"]] == \
            [r["file"] for r in res["methods"]["tiny"]["folds"][k]["per_image"]]
    assert "| `tiny+tta` |" in (out / "results.md").read_text()
    with pytest.raises(SystemExit, match="--rescore"):
        cv.main([*argv, "--variant", "tta=predict.tta=true"])

    # --render: results.md again from results.json alone, the same text
    md = (out / "results.md").read_text()
    (out / "results.md").unlink()
    assert cv.main(["--render", "--out", str(out)]) == 0
    assert (out / "results.md").read_text() == md
    rescored = work / "tiny" / "fold0" / "rescore" / "test_metrics.json"
    stamp = rescored.stat().st_mtime_ns
    assert cv.main([*argv, "--rescore"]) == 0  # the same re-test is reused, not run again
    assert rescored.stat().st_mtime_ns == stamp
    code["dirty"] = True  # other code may score otherwise: re-tested again
    assert cv.main([*argv, "--rescore"]) == 0
    assert rescored.stat().st_mtime_ns != stamp
    res["quick"] = False
    report.update_readme(readme, "benchmark", res, out)
    text = readme.read_text()
    assert "\nold\n" not in text
    assert text.startswith("# readme\nbefore\n") and text.endswith("after\n")
    assert report.QUICK_NOTE not in text and "![Predicted vs true" in text
    assert "(out/counts.png)" in text

    # --ensemble: a second training seed of the same recipe (the recipe's seed= wins over
    # --seed), then both networks averaged on each fold, tuned together on its training images
    tiny2 = TINY.replace('tiny="', 'tiny2="seed=7 ')
    with pytest.raises(SystemExit, match="not a recipe of this call"):
        cv.main([*argv, "--resume", "--ensemble", 'ens="tiny,tiny2"'])
    assert cv.main([*argv, "--resume", "--recipe", tiny2, "--ensemble", 'ens="tiny,tiny2"']) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["ensembles"] == {"ens": ["tiny", "tiny2"]}
    trained = json.loads((work / "tiny2" / "fold0" / report.RUN_RECORD).read_text())
    assert "seed=7" in trained["overrides"] and "seed=0" not in trained["overrides"]
    for k, f in enumerate(res["methods"]["ens"]["folds"]):
        assert f["status"] == "ok", f
        members = [work / m / f"fold{k}" / "checkpoints" / "best.ckpt" for m in ("tiny", "tiny2")]
        tested = json.loads((work / "ens" / f"fold{k}" / "test_metrics.json").read_text())
        assert tested["ckpt_path"] == [str(p) for p in members]
        chosen = json.loads((work / "ens" / f"fold{k}" / "postprocess.json").read_text())
        assert chosen["tuning"]["split"] == "train" and chosen["tuning"]["tta"] == "none"
        assert [r["file"] for r in f["per_image"]] == \
            [r["file"] for r in res["methods"]["tiny"]["folds"][k]["per_image"]]
        assert f["cpu_s"] == pytest.approx(sum(res["methods"][m]["folds"][k]["cpu_s"]
                                               for m in ("tiny", "tiny2")), abs=0.02)
    md = (out / "results.md").read_text()
    assert "| `ens` |" in md and "`ens` = `tiny` + `tiny2`" in md
    # --only-variants with an ensemble: the members' finished runs are read, none trains
    member = work / "tiny2" / "fold1" / "test_metrics.json"
    stamp = member.stat().st_mtime_ns
    assert cv.main([*argv, "--only-variants", "--no-baselines", "--recipe", tiny2,
                    "--ensemble", 'ens="tiny,tiny2"']) == 0
    assert member.stat().st_mtime_ns == stamp
    res = json.loads((out / "results.json").read_text())
    assert all(f["status"] == "ok" for f in res["methods"]["ens"]["folds"])
    # --no-baselines: no Otsu row, and the caption says so instead of describing them
    assert set(res["methods"]) == {"tiny", "tiny2", "ens"}
    assert res["data"]["image_sizes"] == {"64×64": 8}
    md = (out / "results.md").read_text()
    assert "were not run (`--no-baselines`)" in md and "Otsu +" not in md.split("\n\n")[1]


def test_read_run_knows_which_numbers_are_native(tmp_path):
    """A run that scored natively logs test/native_dice; its instance metrics are native too,
    while test/dice is torchmetrics' at the training size."""
    (tmp_path / "test_metrics.json").write_text(json.dumps({"image_size": [256, 256], "metrics": {
        "test/dice": 0.9, "test/native_dice": 0.95, "test/count_mae": 3.0, "test/inst_f1": 0.9}}))
    metrics, where, _ = report.read_run(tmp_path)
    assert metrics["dice"] == 0.95 and where["dice"] == "native"
    assert where["count_mae"] == where["f1"] == "native"
    (tmp_path / "test_metrics.json").write_text(json.dumps({"image_size": [256, 256], "metrics": {
        "test/dice": 0.9, "test/count_mae": 3.0}}))
    metrics, where, _ = report.read_run(tmp_path)
    assert where["dice"] == where["count_mae"] == "256×256 (training size)"


def test_count_real_is_the_benchmarked_recipe(tmp_path):
    """experiment=count_real composes from the recipe the benchmark measured (no copy), so
    the README's numbers are the experiment's: everything but its name is the same."""
    from omegaconf import OmegaConf

    from tests.conftest import compose_cfg

    fixed = ["data=bbbc041seg", "data.root=/d", "seed=0"]
    a = OmegaConf.to_container(compose_cfg(tmp_path, ["experiment=bench/distance_s05", *fixed]),
                               resolve=False)
    b = OmegaConf.to_container(compose_cfg(tmp_path, ["experiment=count_real", *fixed]),
                               resolve=False)
    assert b.pop("name") == "count_real" and a.pop("name") != "count_real"
    a.pop("hydra"), b.pop("hydra")  # which experiment was chosen
    assert a == b and a["target"]["name"] == "distance"


def test_resume_knows_a_recipe_spelled_out_from_its_file():
    """Runs recorded before the recipe files spelled their recipe out; ``--resume`` reuses
    them when those overrides compose to what the recipe file composes to, and only then."""
    cv = load_script()
    fixed = cv.run_overrides([], Path("/d/fold0"), Path("/w/r/fold0"), seed=1, quick=False)
    spelled = ["target=distance", "data.color=gray", "data.scale=0.5", "data.crop_size=256",
               "data.crops_per_image=4", "data.contrast=percentile", "augment=strong",
               "model.base_channels=16", "trainer=cpu", "trainer.max_epochs=12",
               "optimizer.lr=1e-3", "scheduler=plateau", "callbacks.early_stopping=null",
               "tune={split:train,metric:f1}"]
    recorded = cv.merge_overrides(fixed[:1], spelled, fixed[1:])
    now = cv.run_overrides(cv.recipe_overrides("distance_s05"), Path("/d/fold0"),
                           Path("/w/r/fold0"), seed=1, quick=False)
    assert recorded != now and cv.same_training(recorded, now)
    assert not cv.same_training(recorded, cv.run_overrides(
        cv.recipe_overrides("distance_s05_e24"), Path("/d/fold0"), Path("/w/r/fold0"), seed=1,
        quick=False))
    assert not cv.same_training([*recorded[:-1], "seed=2", recorded[-1]], now)
    assert not cv.same_training(["no_such_key.x=1", *recorded], now)


def test_only_variants_reads_finished_runs_and_never_trains(tmp_path):
    """``--only-variants``: a recipe's row is its runs as they were tested; an unfinished
    run is a failed row (it is never trained from there), so the call can run beside a
    benchmark still training other folds."""
    from bloodseg import rundir

    done, pending = tmp_path / "fold0", tmp_path / "fold1"
    (done / "checkpoints").mkdir(parents=True)
    (done / "checkpoints" / "best.ckpt").write_bytes(b"")
    rundir.write_test_metrics(done, {"test/count_mae": 1.5, "test/inst_f1": 0.95,
                                     "test/dice": 0.94, "test/native_dice": 0.94}, "x", False, {})
    rundir.write_per_image(done, [{"file": "a.png", "true_count": 10, "pred_count": 11,
                                   "tp": 10, "fp": 1, "fn": 0}])
    row = real_cv.finished_fold("distance_s05", 0, done)
    assert row["status"] == "ok" and row["metrics"]["count_mae"] == 1.5
    assert row["metrics"]["f1"] == 0.95
    assert row["per_image"] == [{"file": "a.png", "true_count": 10, "pred_count": 11,
                                 "tp": 10, "fp": 1, "fn": 0}]
    pending.mkdir()
    assert real_cv.finished_fold("distance_s05", 1, pending)["status"] == "failed"
    assert not (pending / "checkpoints").exists()
    with pytest.raises(SystemExit, match="--only-variants needs"):
        real_cv.main(["--only-variants", "--out", str(tmp_path / "out")])


def test_fold_folders_are_links_kept_while_they_match(tmp_path):
    """A second call (e.g. --only-variants beside a benchmark still training) keeps fold
    folders that link exactly the same files, and rebuilds those that do not."""
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
