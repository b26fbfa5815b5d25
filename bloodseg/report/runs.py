"""Run folders as :class:`Run` objects, and the sweep scan that finds them.

Every file is read through :mod:`bloodseg.rundir`; this module turns what it returns into
pandas/Python objects and decides which folders are finished, failed or unfinished runs.
"""

from __future__ import annotations

import os
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bloodseg import rundir
from bloodseg.rundir import SampleFiles as Sample

__all__ = [
    "Found", "Incomplete", "Run", "Sample", "assign_labels", "data_caption", "find_runs",
    "load_history", "load_run", "safe_stem", "warn",
]

# meta.json "status" values of runs that have no results (anything else is finished);
# an interrupted run (Ctrl+C, SIGTERM) has curves up to where it stopped and a resume command
RUNNING, FAILED, INTERRUPTED = "running", "failed", "interrupted"
# checkpoint the resume command of an interrupted run names (see bloodseg.train)
LAST_CKPT = Path("checkpoints") / "last.ckpt"


def warn(message: str) -> None:
    print(f"bloodseg-report: warning: {message}", file=sys.stderr)


def data_caption(kind: str | None) -> str:
    """How figures name their data: the demo data must never pass for the real dataset."""
    kind = kind if isinstance(kind, str) and kind else "unknown"
    return {"synthetic": "synthetic data (demo)", "real": "real BBBC041Seg"}.get(
        kind, f"{kind} data")


def short_target(spec: Any) -> str | None:
    """``torch.optim.lr_scheduler.StepLR`` -> ``StepLR`` (configs or plain strings)."""
    target = spec.get("_target_") if isinstance(spec, dict) else spec
    return str(target).rsplit(".", 1)[-1] if target else None


def join(*parts: Any) -> str:
    return " · ".join(str(p) for p in parts if p)


def safe_stem(label: str) -> str:
    """A file-name-safe form of an experiment label (README links must not need escaping)."""
    return re.sub(r"[^\w.+-]+", "_", label).strip("_") or "run"


@dataclass
class Run:
    """One finished run folder.

    ``history`` has one row per epoch (index ``epoch``, 0-based) and the logged columns
    (``train/loss``, ``val/iou``, ``lr-*``, ...); ``test`` maps ``test/...`` names to values.
    ``label`` is ``meta["name"]`` unless another run shares it (see :func:`assign_labels`).
    """

    path: Path
    meta: dict
    history: pd.DataFrame
    test: dict[str, float]
    per_image: pd.DataFrame | None = None
    size_hist: pd.DataFrame | None = None
    samples: list[Sample] = field(default_factory=list)
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.name

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.path.name)

    @property
    def stem(self) -> str:
        return safe_stem(self.label)

    @property
    def interrupted(self) -> bool:
        return self.meta.get("status") == INTERRUPTED

    @property
    def data_kind(self) -> str | None:
        return self.meta.get("data_kind")

    @property
    def caption(self) -> str:
        return data_caption(self.data_kind)

    @property
    def stopped_epoch(self) -> int | None:
        # Lightning reports 0 when early stopping never fired
        value = self.meta.get("stopped_epoch")
        return int(value) if value else None

    @property
    def best_epoch(self) -> int | None:
        if "val/loss" not in self.history or self.history["val/loss"].isna().all():
            return None
        return int(self.history["val/loss"].idxmin())

    def setup_line(self) -> str:
        """Model, colour and training setup, like the study's "Training History" line."""
        m = self.meta
        opt = m.get("optimizer") or {}
        parts = [m.get("model") and short_target(m["model"]), m.get("color")]
        if m.get("batch_size"):
            parts.append(f"batch {m['batch_size']}")
        if opt:
            lr = opt.get("lr") if isinstance(opt, dict) else None
            parts.append(f"{short_target(opt)}" + (f" lr {lr:g}" if lr is not None else ""))
        if "scheduler" in m:
            parts.append(short_target(m["scheduler"]) or "no scheduler")
        return join(*parts)


# -- metrics.csv -----------------------------------------------------------------------------


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise rundir.RunDirError(
            f"{path}: damaged, not a readable CSV ({' '.join(str(err).split())}); a run killed "
            "mid-write or a full disk leaves one. Fix or delete its broken lines, or run the "
            "run again into a new folder (hydra.run.dir=<folder>)") from None


def _no_history() -> pd.DataFrame:
    return pd.DataFrame(index=pd.Index([], dtype=int, name="epoch"))


def load_history(path: str | Path) -> pd.DataFrame:
    """Per-epoch metrics from a Lightning CSVLogger ``metrics.csv`` (a resume appends to it).

    The logger writes sparse rows: train and validation metrics of an epoch on different
    rows, step losses on their own rows, LR rows without an epoch. Test metrics are left
    out (see :attr:`Run.test`).
    """
    raw = _read_csv(Path(path))
    if raw.empty or "epoch" not in raw:
        return _no_history()
    # LR rows are logged as an epoch starts, so they belong to the epoch of the next row
    raw["epoch"] = raw["epoch"].bfill().ffill()
    raw = raw.dropna(subset=["epoch"])
    raw = raw.drop(columns=[c for c in raw if c.startswith("test/")])
    epochs = raw.groupby("epoch")
    hist = epochs.last().drop(columns=["step", "train/loss_step"], errors="ignore")
    # one train-loss column however it was logged (on_epoch only, on_step + on_epoch, ...)
    if "train/loss" not in hist:
        if "train/loss_epoch" in hist:
            hist["train/loss"] = hist["train/loss_epoch"]
        elif "train/loss_step" in raw:
            hist["train/loss"] = epochs["train/loss_step"].mean()
    hist = hist.dropna(how="all")  # e.g. the epoch the test row was logged at
    hist.index = hist.index.astype(int)
    return hist


def _test_from_csv(path: Path) -> dict[str, float]:
    """Fallback when ``test_metrics.json`` is missing: the last test values logged."""
    raw = _read_csv(path)
    cols = [c for c in raw if c.startswith("test/")]
    return {c: float(raw[c].dropna().iloc[-1]) for c in cols if raw[c].notna().any()}


# -- loading ---------------------------------------------------------------------------------


# what an evaluate folder's row takes over from the run that trained its checkpoint
_TRAINING_KEYS = ("model", "experiment", "params", "loss", "optimizer", "scheduler",
                  "batch_size", "max_epochs")


def evaluate_meta(folder: Path) -> dict:
    """The ``meta.json`` an evaluate folder lacks: its data (from ``test_metrics.json``),
    the training setup of its checkpoint's run folder when that is still there, and a name
    saying it was evaluated (``unet_gray (evaluate)``)."""
    payload = rundir.read_json(folder / rundir.TEST_METRICS)
    if not isinstance(payload, dict):
        raise rundir.RunDirError(f"{folder / rundir.TEST_METRICS}: expected a JSON object")
    ckpt_path = payload.get("ckpt_path") or ""
    members = ckpt_path if isinstance(ckpt_path, list) else [ckpt_path]  # a list: an ensemble
    ckpt = Path(str(members[0] if members else ""))
    trained_in = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    training: dict = {}
    if trained_in is not None and (trained_in / rundir.META).is_file():
        try:
            training = rundir.read_meta(trained_in)
        except rundir.RunDirError:
            pass
    name = training.get("name") or (trained_in.name if trained_in else folder.name)
    how = "evaluate, TTA" if payload.get("tta") else "evaluate"
    if len(members) > 1:
        how += f", ensemble of {len(members)}"
    data = {k: v for k, v in payload.items() if k not in ("metrics", "ckpt_path", "tta")}
    return {**{k: training[k] for k in _TRAINING_KEYS if k in training}, **data,
            "name": f"{name} ({how})", "status": "evaluated", "ckpt_path": str(ckpt)}


def load_run(path: str | Path) -> Run:
    """Load a run folder (or its ``meta.json``), or an evaluate folder (``test_metrics.json``
    without ``meta.json``: no curves); raises ValueError naming a bad file."""
    path = Path(path)
    folder = path.parent if path.name == rundir.META else path
    evaluated = not (folder / rundir.META).is_file() and (folder / rundir.TEST_METRICS).is_file()
    meta = evaluate_meta(folder) if evaluated else rundir.read_meta(folder)
    metrics = folder / rundir.METRICS
    if not metrics.is_file() and not evaluated:
        raise rundir.RunDirError(f"{folder}: no {rundir.METRICS}; train with logger=csv (the "
                                 "default logs it next to W&B) to get training curves")
    history = load_history(metrics) if metrics.is_file() else _no_history()
    test = rundir.read_test_metrics(folder)
    samples, problems = rundir.read_samples(folder)
    for problem in problems:
        warn(problem)
    per_image, sizes = folder / rundir.PER_IMAGE, folder / rundir.SIZE_HIST
    return Run(
        path=folder,
        meta=meta,
        history=history,
        test=test if test is not None else _test_from_csv(metrics),
        per_image=_read_csv(per_image) if per_image.is_file() else None,
        size_hist=_read_csv(sizes) if sizes.is_file() else None,
        samples=samples,
    )


def assign_labels(runs: Sequence[Run]) -> None:
    """Give runs that share a name distinct labels, so their figure files do not collide."""
    names = Counter(r.name for r in runs)
    for r in runs:
        r.label = r.name
        if names[r.name] > 1:
            exp = r.meta.get("experiment")
            r.label = f"{r.name}_{exp}" if exp and exp != r.name else f"{r.name}_{r.path.name}"
    seen: Counter[str] = Counter()
    for r in runs:
        seen[r.label] += 1
        if seen[r.label] > 1:
            r.label = f"{r.label}_{seen[r.label]}"


# -- finding run folders ---------------------------------------------------------------------


@dataclass
class Incomplete:
    """A run folder without results: why it failed (its exception) or what it lacks."""

    path: Path
    reason: str


@dataclass
class Found:
    """The run folders under the report's folders: finished ones and the rest."""

    runs: list[Path] = field(default_factory=list)
    failed: list[Incomplete] = field(default_factory=list)
    unfinished: list[Incomplete] = field(default_factory=list)


def _job_folders(root: Path) -> list[Path]:
    """Folders under ``root`` that a job wrote: ``meta.json``, ``error.txt``, ``.hydra/`` or
    a ``*.log``. Not searched below one (its ``wandb/`` logs are no jobs); a folder with
    only a log and jobs below it (a stray log in a parent folder) is not one either."""
    strong, logs = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if {rundir.META, rundir.ERROR} & set(filenames) or ".hydra" in dirnames:
            strong.append(here)
            dirnames.clear()
            continue
        if any(f.endswith(".log") for f in filenames):
            logs.append(here)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "wandb")
    found = strong + [d for d in logs if not any(o != d and d in o.parents
                                                 for o in strong + logs)]
    return sorted(found)


def _job_name(folder: Path) -> str | None:
    """``train``/``evaluate``/``predict``: Hydra names each job's log after the command."""
    logs = sorted(p.stem for p in folder.glob("*.log"))
    return logs[0] if len(logs) == 1 else None


def interrupted_reason(folder: Path, meta: dict) -> str:
    """``interrupted at epoch 7/12 (SIGTERM); resume with: python train.py ...``: the last
    epoch in ``metrics.csv`` and the command :mod:`bloodseg.train` recorded."""
    metrics = folder / rundir.METRICS
    history = load_history(metrics) if metrics.is_file() else _no_history()
    done = int(history.index.max()) + 1 if len(history) else 0
    total = meta.get("max_epochs")
    how = f" ({meta['reason']})" if meta.get("reason") else ""
    if not done or not (folder / LAST_CKPT).is_file():
        return f"interrupted before its first checkpoint{how}; run it again"
    at = f"interrupted at epoch {done}" + (f"/{total}" if total else "") + how
    resume = meta.get("resume")
    return f"{at}; resume with: {resume}" if resume else \
        f"{at}; resume with ckpt_path={folder / LAST_CKPT} hydra.run.dir={folder}"


def _classify(folder: Path, found: Found) -> None:
    """Put ``folder`` into ``found``: meta.json's status is ``running``, ``failed``,
    ``interrupted`` or ``completed`` (older runs have none: completed); ``error.txt`` means
    failed. An interrupted run is listed as unfinished, with how to resume, and its curves
    are drawn; an evaluate folder (test metrics, no meta.json) is a run without curves."""
    meta: dict = {}
    has_meta = (folder / rundir.META).is_file()
    if has_meta:
        try:
            meta = rundir.read_meta(folder)
        except rundir.RunDirError:
            pass  # load_run names the bad file
    error = rundir.read_error(folder)
    if error is not None or meta.get("status") == FAILED:
        reason = error or str(meta.get("error") or f"{rundir.META} status: {FAILED}")
        found.failed.append(Incomplete(folder, reason))
    elif meta.get("status") == RUNNING:
        found.unfinished.append(Incomplete(folder, f"{rundir.META} status: {RUNNING}"))
    elif meta.get("status") == INTERRUPTED:
        found.unfinished.append(Incomplete(folder, interrupted_reason(folder, meta)))
        if (folder / rundir.METRICS).is_file():
            found.runs.append(folder)
    elif not has_meta:
        # evaluate/predict jobs write no meta.json; evaluate's results are test metrics
        if rundir.read_test_metrics(folder) is not None:
            found.runs.append(folder)
        elif _job_name(folder) in (None, "train"):
            found.unfinished.append(Incomplete(folder, f"no {rundir.META} yet"))
    elif (folder / rundir.METRICS).is_file():
        found.runs.append(folder)
    else:
        warn(f"{folder}: skipped, no {rundir.METRICS} (a run without the CSV logger?)")


def find_runs(dirs: Sequence[str | Path]) -> Found:
    """Run folders under ``dirs``: finished ones (``meta.json`` + ``metrics.csv``), failed
    ones (``error.txt`` or status failed) and unfinished jobs (no results yet)."""
    folders: dict[Path, None] = {}
    for d in dirs:
        d = Path(d)
        roots = [d.parent] if d.name == rundir.META and d.is_file() else _job_folders(d)
        folders.update((f.resolve(), None) for f in roots)
    found = Found()
    for folder in folders:
        _classify(folder, found)
    return found
