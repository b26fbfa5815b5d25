"""The run folder: the one place that writes and reads what a run leaves behind.

``bloodseg-train`` / ``bloodseg-evaluate`` write a run folder; ``bloodseg-report`` reads it.
Both sides go through this module, so the schema below is the only list of files::

    <run>/
      meta.json            what ran: model, data, optimizer, epochs, time, status (train)
      metrics.csv          per-step/epoch metrics (bloodseg.loggers.CSVLogger; a resume
                           appends to it)
      test_metrics.json    test metrics (test/<name>: InstanceStats' and the pixel
                           metrics' names) + the checkpoint and data that produced them
      per_image.csv        one row per test image: counts, TP/FP/FN, F1, AP50
      size_hist.csv        predicted vs true cell-area histogram (common bins)
      tuning.json          post-processing parameters chosen on training images, every
                           value tried and its scores (only with tune)
      postprocess.json     the tuned post-processing, tied to checkpoints/best.ckpt by its
                           sha256 (bloodseg.inference reads it; written by tune and
                           bloodseg-tune, never into a checkpoint)
      samples/             index.json + <name>_{image,mask,prob,instances,truth,overlay}.png test
                           samples at native size (truth: the true instances)
      checkpoints/         best.ckpt, last.ckpt
      error.txt            the exception of a failed run (absent when it succeeded)
      run.lock             the pid of the process writing the folder, while it runs
      .hydra/              the composed config (Hydra)

A folder belongs to one run: :func:`claim` locks it for the run's life and refuses one that
another run is writing to or left results in (unless resuming from its ``last.ckpt``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import socket
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bloodseg.io import write_png_atomic, write_text_atomic
from bloodseg.quoting import quoting_hint

log = logging.getLogger(__name__)

META = "meta.json"
METRICS = "metrics.csv"
TEST_METRICS = "test_metrics.json"
PER_IMAGE = "per_image.csv"
SIZE_HIST = "size_hist.csv"
SAMPLES = "samples"
ERROR = "error.txt"
TUNING = "tuning.json"
TUNED = "postprocess.json"
LOCK = "run.lock"
CHECKPOINTS = "checkpoints"
SAMPLE_KINDS = ("image", "mask", "prob", "instances")

#: ``per_image.csv``'s columns: the keys of an ``InstanceStats`` row (``metrics.ROW_KEYS``)
PER_IMAGE_COLUMNS = [
    "file", "true_count", "pred_count", "count_error", "abs_count_error", "tp", "fp", "fn",
    "precision", "recall", "f1", "ap50", "mean_matched_iou",
    # with boxes (data.boxes) / a model that carries its calibration; else empty
    "box_tp", "box_fp", "box_fn", "box_count", "count_low", "count_high", "in_interval",
]


class RunDirError(ValueError):
    """A run folder's file is missing or unreadable; the message names it."""


class RunFolderTaken(RuntimeError):
    """The run folder holds, or is being written by, another run; the message says what to
    pass instead."""


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[dict | Sequence]) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(k, "") for k in header] if isinstance(row, dict) else row)
    return write_text_atomic(path, buf.getvalue())


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); re-run the step that writes it") from e


# -- writers -------------------------------------------------------------------------------


def write_meta(out: str | Path, meta: dict) -> Path:
    return write_text_atomic(Path(out) / META, json.dumps(meta, indent=2, default=str))


def write_test_metrics(out: str | Path, metrics: dict, ckpt_path: str | Path | None,
                       tta: bool, data_info: dict) -> Path:
    """``test_metrics.json``: the metrics plus what produced them."""
    # an ensemble's members as a list of paths
    ckpt = [str(c) for c in ckpt_path] if isinstance(ckpt_path, list | tuple) else str(ckpt_path)
    payload = {"ckpt_path": ckpt, "tta": tta, **data_info, "metrics": metrics}
    return write_text_atomic(Path(out) / TEST_METRICS, json.dumps(payload, indent=2))


def write_tuning(out: str | Path, tuning: dict) -> Path:
    """``tuning.json``: the post-processing parameters chosen after training and the grid."""
    return write_text_atomic(Path(out) / TUNING, json.dumps(tuning, indent=2, default=str))


def write_per_image(out: str | Path, rows: Sequence[dict]) -> Path:
    return _write_csv(Path(out) / PER_IMAGE, PER_IMAGE_COLUMNS, rows)


def write_size_hist(out: str | Path, pred_areas: np.ndarray, true_areas: np.ndarray,
                    bins: int = 30) -> Path:
    """Histogram of predicted and true cell areas on common bins (every cell falls in one)."""
    edges = np.histogram_bin_edges(np.concatenate([pred_areas, true_areas]), bins)
    counts, _ = np.histogram(pred_areas, edges)
    true_counts, _ = np.histogram(true_areas, edges)
    rows = [(f"{a:.1f}", f"{b:.1f}", c, t)
            for a, b, c, t in zip(edges[:-1], edges[1:], counts, true_counts)]
    return _write_csv(Path(out) / SIZE_HIST, ["bin_start", "bin_end", "pred_cells", "true_cells"],
                      rows)


def write_samples(out: str | Path, samples: Sequence[dict]) -> None:
    """Test samples for the report: dicts with name, image (RGB uint8), mask {0,1}, prob
    (float 0..1), instances (labels), true_count and optionally truth (true labels)."""
    folder = Path(out) / SAMPLES
    index = []
    for s in samples:
        base = folder / s["name"]
        write_png_atomic(f"{base}_image.png", s["image"])
        write_png_atomic(f"{base}_mask.png", s["mask"] * 255)
        write_png_atomic(f"{base}_prob.png", (s["prob"] * 255).round().astype(np.uint8))
        write_png_atomic(f"{base}_instances.png", s["instances"].astype(np.uint16))
        if s.get("overlay") is not None:  # the labels are 16-bit: black in any viewer
            write_png_atomic(f"{base}_overlay.png", s["overlay"])
        if s.get("truth") is not None:
            write_png_atomic(f"{base}_truth.png", s["truth"].astype(np.uint16))
        index.append({"name": s["name"], "true_count": s["true_count"],
                      "pred_count": int(s["instances"].max())})
    if index:
        write_text_atomic(folder / "index.json", json.dumps(index, indent=2))


def write_error(out: str | Path, error: BaseException) -> Path:
    """Record why a run failed (the full traceback), for SLURM/nohup users and the report."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return write_text_atomic(Path(out) / ERROR, text)


def clear_error(out: str | Path) -> None:
    (Path(out) / ERROR).unlink(missing_ok=True)


def write_failure(out: str | Path, name: str, error: BaseException) -> None:
    """``error.txt`` and a ``failed`` meta.json, best effort: on a full disk these writes
    fail too, and that must not replace the run's own error (it is logged instead)."""
    reason = str(error) or ("interrupted (Ctrl+C or SIGINT)"
                            if isinstance(error, KeyboardInterrupt) else "")
    meta = {"name": name, "status": "failed", "error": f"{type(error).__name__}: {reason}"}
    for write in (lambda: write_error(out, error), lambda: write_meta(out, meta)):
        try:
            write()
        except Exception as err:  # whatever it is, the run's own error comes first
            log.error("could not record the failure in %s: %s", out, err)


# -- one run per folder --------------------------------------------------------------------


def last_checkpoint(out: str | Path) -> Path:
    """Where a run keeps the checkpoint a resume starts from."""
    return Path(out) / CHECKPOINTS / "last.ckpt"


def earlier_run(out: str | Path) -> list[str]:
    """The files an earlier run left in ``out`` (empty for a fresh folder). A meta.json that
    still says ``running`` alone is a run killed before it wrote anything: nothing to mix."""
    out = Path(out)
    found = []
    if (out / META).is_file():
        try:
            status = read_meta(out).get("status", "completed")
        except RunDirError:
            status = "unreadable"
        if status != "running":
            found.append(f"{META} (status: {status})")
    found += [f"{CHECKPOINTS}/{p.name}" for p in sorted((out / CHECKPOINTS).glob("*.ckpt"))]
    return found + [name for name in (METRICS, TEST_METRICS) if (out / name).is_file()]


class RunLock:
    """:data:`LOCK` held by this process: an ``flock``, which the kernel drops however the
    process ends (a SIGKILL too), plus the pid, so a refusal can say who holds it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path, self._fd = path, fd

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # still locked: a newcomer cannot adopt it
        finally:
            os.close(self._fd)
            self._fd = None


def _holder(fd: int) -> str:
    return os.pread(fd, 200, 0).decode(errors="replace").strip()


def _lock(path: Path) -> RunLock:
    import fcntl  # POSIX; imported here so the report still imports rundir anywhere

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd) or "a process that is starting"
            os.close(fd)
            raise RunFolderTaken(
                f"{path.parent}: another run ({holder}) is writing to this folder now, and two "
                "runs in one folder mix their files. Pass a new hydra.run.dir=<folder>, or "
                "wait until that run ends.") from None
        except BaseException:
            os.close(fd)
            raise
        try:  # the holder may have removed the file between our open and our lock
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    stale = _holder(fd)
    if stale:
        log.warning("%s: taking over the lock of %s, which is no longer running", path, stale)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    return RunLock(path, fd)


def _override(key: str, value: str | Path) -> str:
    """``key=value`` as the user types it (quoted for Hydra and the shell where needed)."""
    text = f"{key}={value}"
    return text if re.fullmatch(r"[\w./+:@-]+=[\w./+:@-]+", text) else quoting_hint(text)


def claim(out: str | Path, resume_from: str | Path | None = None) -> RunLock:
    """Make ``out`` this run's folder, before anything is written into it: lock it while the
    run lives, and refuse (:class:`RunFolderTaken`) a folder that another run is writing to
    or left results in, unless ``resume_from`` is that folder's ``checkpoints/last.ckpt``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out / LOCK)
    last = last_checkpoint(out)
    resuming = resume_from is not None and Path(resume_from).resolve() == last.resolve()
    found = [] if resuming else earlier_run(out)
    if found:
        lock.release()
        resume = (f"to continue that run, pass {_override('ckpt_path', last)}"
                  if last.is_file() else "it has no checkpoints/last.ckpt to resume from")
        raise RunFolderTaken(
            f"{out}: holds another run ({', '.join(found)}); a new run there would mix its "
            f"files with that run's. For a new run pass a new hydra.run.dir=<folder>; {resume}.")
    # temp files of a writer killed mid-write (bloodseg.io): ours to remove, we hold the lock
    for tmp in [*out.glob(".*.tmp"), *(out / CHECKPOINTS).glob(".*.tmp")]:
        log.info("removing %s, left by a run killed while writing it", tmp)
        tmp.unlink(missing_ok=True)
    return lock


# -- readers -------------------------------------------------------------------------------


@dataclass
class SampleFiles:
    """One saved test image: its counts and the four PNGs."""

    name: str
    true_count: int | None
    pred_count: int | None
    files: dict[str, Path]


def read_meta(folder: str | Path) -> dict:
    path = Path(folder) / META
    if not path.is_file():
        raise RunDirError(f"{folder}: no {META}; is this a bloodseg-train output folder?")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return meta


def read_test_payload(folder: str | Path) -> dict | None:
    """``test_metrics.json`` whole (checkpoint, data, image size...), its metrics as floats;
    None when the folder has none."""
    path = Path(folder) / TEST_METRICS
    if not path.is_file():
        return None
    payload = read_json(path)
    if not isinstance(payload, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    metrics = payload.get("metrics") or {}
    payload["metrics"] = {k: float(v) for k, v in metrics.items()}
    return payload


def read_test_metrics(folder: str | Path) -> dict[str, float] | None:
    payload = read_test_payload(folder)
    return None if payload is None else payload["metrics"]


def read_per_image(folder: str | Path) -> list[dict]:
    """``per_image.csv`` rows, numbers as int/float, ``file`` as text (empty cells dropped);
    [] when absent."""
    path = Path(folder) / PER_IMAGE
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for raw in csv.DictReader(f):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if value in (None, ""):
                    continue
                if key == "file":  # a name, even one of digits only
                    row[key] = value
                    continue
                try:
                    row[key] = int(value)
                except ValueError:
                    try:
                        row[key] = float(value)
                    except ValueError:
                        row[key] = value
            rows.append(row)
    return rows


def read_error(folder: str | Path) -> str | None:
    """The last line of a failed run's traceback (the exception), or None."""
    path = Path(folder) / ERROR
    if not path.is_file():
        return None
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else "failed"


def read_samples(folder: str | Path) -> tuple[list[SampleFiles], list[str]]:
    """Saved samples and the problems found (a sample whose PNGs are missing is skipped)."""
    folder = Path(folder) / SAMPLES
    index_file = folder / "index.json"
    if not index_file.is_file():
        return [], []
    samples, problems = [], []
    for entry in read_json(index_file):
        name = str(entry["name"])
        files = {k: folder / f"{name}_{k}.png" for k in SAMPLE_KINDS}
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            problems.append(f"{folder}: sample {name!r} skipped, missing {', '.join(missing)}")
            continue
        samples.append(SampleFiles(name, entry.get("true_count"), entry.get("pred_count"), files))
    return samples, problems
