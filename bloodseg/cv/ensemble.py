"""Ensembles in a cross-validation: the members' finished fold runs, averaged.

``--recipe a=... --recipe b=... --ensemble ab="a,b"`` adds the method ``ab``: on each fold,
the members' ``best.ckpt`` (trained on the same fold's training images, e.g. one recipe with
two training seeds) are averaged through the one inference path (``ckpt_path=[a,b]``); the
ensemble's post-processing is tuned on the fold's training images as each member's own run
tunes its (``bloodseg-tune``, ``output=``), then the fold's test images are scored by
``bloodseg-evaluate``. Nothing trains here; the training time of a fold is the sum of its
members'. Fold folders: ``<work>/<ensemble>/fold<k>/``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from bloodseg import rundir
from bloodseg.cv import steps
from bloodseg.cv.recipes import RecipeError, hydra_value, parse_named
from bloodseg.cv.results import RUN_LOG, RUN_RECORD, run_scores
from bloodseg.io import write_text_atomic

__all__ = ["TUNE_OVERRIDES", "ensemble_commands", "ensemble_fold", "parse_ensembles"]

# the members' recipes tune so (conf/experiment/count_real.yaml: tune: {split: train,
# metric: f1}); the ensemble's choice is made the same way
TUNE_OVERRIDES = ("tune.split=train", "tune.metric=f1")


def parse_ensembles(texts: Sequence[str], recipes: Sequence[str]) -> dict[str, list[str]]:
    """``--ensemble NAME="a,b"`` -> name -> member recipes (each one of this call's recipes,
    at least two, none twice); RecipeError otherwise."""
    out: dict[str, list[str]] = {}
    for text in texts:
        name, words = parse_named(text, "--ensemble")
        members = [m.strip() for m in " ".join(words).split(",") if m.strip()]
        if name in out or name in recipes:
            raise RecipeError(f"--ensemble {name!r}: the name is taken (a recipe or an "
                              "ensemble)")
        unknown = [m for m in members if m not in recipes]
        if unknown:
            raise RecipeError(f"--ensemble {name}: {', '.join(unknown)} is not a recipe of this "
                              f"call ({', '.join(recipes)}); add it with --recipe or --recipes")
        if len(members) < 2 or len(set(members)) != len(members):
            raise RecipeError(f"--ensemble {name}: needs two or more different recipes, got "
                              f"{', '.join(members) or 'none'}")
        out[name] = members
    return out


def ensemble_commands(members: Sequence[Path], fold_dir: Path, out: Path
                      ) -> list[tuple[str, list[str]]]:
    """(step, command) of one fold's ensemble: tune, then evaluate."""
    ckpts = "[" + ",".join(hydra_value(p) for p in members) + "]"
    chosen = out / rundir.TUNED
    common = [f"ckpt_path={ckpts}", f"data.root={hydra_value(fold_dir)}"]
    return [
        ("tune", steps.command("tune", [
            *common, *TUNE_OVERRIDES, f"output={hydra_value(chosen)}", "overwrite=true",
            f"hydra.run.dir={hydra_value(out / 'tune')}"])),
        ("evaluate", steps.command("evaluate", [
            *common, f"postprocess_file={hydra_value(chosen)}",
            f"hydra.run.dir={hydra_value(out)}"])),
    ]


def ensemble_fold(name: str, members: dict[str, Path], fold: int, fold_dir: Path, out: Path
                  ) -> dict:
    """One fold of an ensemble: ``members`` (recipe -> its fold run folder) tuned together on
    the fold's training images, then tested; a failed row when a member has not finished or
    a step fails (its log named). RecipeError when ``out`` holds something this module did
    not make."""
    ckpts = [run / rundir.CHECKPOINTS / "best.ckpt" for run in members.values()]
    missing = [str(run) for run, ck in zip(members.values(), ckpts, strict=True)
               if not (ck.is_file() and (run / rundir.TEST_METRICS).is_file())]
    if missing:
        return {"status": "failed", "run_dir": str(out),
                "error": f"members not finished: {', '.join(missing)}"}
    records = [rundir.read_json(run / RUN_RECORD) if (run / RUN_RECORD).is_file() else {}
               for run in members.values()]
    log = out / RUN_LOG
    if out.exists():  # an earlier try of this fold: only a folder this module made is replaced
        if any(out.iterdir()) and not (log.is_file() or (out / RUN_RECORD).is_file()):
            raise RecipeError(f"{out}: not an ensemble fold folder of a cross-validation (no "
                              f"{RUN_LOG}); move it away or use another --work")
        shutil.rmtree(out)
    out.mkdir(parents=True)
    commands = ensemble_commands(ckpts, fold_dir, out)
    print(f"[{name} fold {fold}] ensemble of {', '.join(members)} (log: {log})", flush=True)
    wall = cpu = 0.0
    for step, cmd in commands:
        rc, w, c = steps.run_logged(cmd, log, append=True)
        wall, cpu = wall + w, cpu + c
        if rc != 0:
            print(f"[{name} fold {fold}] FAILED (exit code {rc}); last lines of {log}:\n"
                  f"{steps.tail(log, 20)}", file=sys.stderr, flush=True)
            return {"status": "failed", "run_dir": str(out), "command": shlex.join(cmd),
                    "error": f"bloodseg-{step} exit code {rc} (log {log})"}
    write_text_atomic(out / RUN_RECORD, json.dumps(
        {"ensemble": name, "members": {m: str(p) for m, p in members.items()}, "fold": fold,
         "commands": [cmd for _, cmd in commands], "test_wall_s": round(wall, 2),
         "test_cpu_s": round(cpu, 2)}, indent=2))
    metrics, resolution, per_image = run_scores(out)

    def total(key: str) -> float | None:
        values = [r.get(key) for r in records]
        return round(sum(values), 2) if all(v is not None for v in values) else None

    return {"status": "ok", "run_dir": str(out), "members": list(members),
            "command": " && ".join(shlex.join(cmd) for _, cmd in commands),
            "wall_s": total("wall_s"), "cpu_s": total("cpu_s"),
            "test_wall_s": round(wall, 2), "test_cpu_s": round(cpu, 2),
            "metrics": metrics, "resolution": resolution, "per_image": per_image}
