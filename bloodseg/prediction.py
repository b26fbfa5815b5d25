"""Predicting a folder of images: masks, instances, overlays, counts and per-cell measurements.

:func:`predict` runs every readable input through the one inference path
(:mod:`bloodseg.inference`) and writes the results as ``bloodseg-predict`` documents them
(:mod:`bloodseg.cli.predict`, the command). What keeps results safe lives here too: distinct output
names per input (:func:`output_names`), the output folder's checks (:func:`check_output`:
nothing mixes with or deletes what another run or the user left there), each image committed
as it finishes (an interrupted batch keeps its finished images; ``resume=true`` does the
rest, :func:`resume_folder`), and the staging folder that replaces earlier results only once
complete (:func:`swap_in`).
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import threading
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from bloodseg.config import to_plain
from bloodseg.inference import WARN_TILES, predictor_from_config
from bloodseg.io import IMAGE_SUFFIXES, DataError, write_png_atomic, write_text_atomic
from bloodseg.labels import instance_areas
from bloodseg.measure import CELL_COLUMNS, FORMATS, cell_rows, write_geojson, write_label_tiff
from bloodseg.progress import Eta
from bloodseg.render import overlay
from bloodseg.screening import screen
from bloodseg.trust import calibration_of

log = logging.getLogger(__name__)

#: what bloodseg-predict writes into its output folder; ``overwrite=true`` replaces these only
#: what a batch records about itself (inputs, model, options), so that resume=true continues it
BATCH = ".bloodseg-predict.json"
OUTPUTS = ("masks", "instances", "overlays", "geojson", "tiff", "counts.csv", "cells.csv",
           BATCH)
#: Hydra's own files in its run folder (the default ``output=``); they do not make it "used"
HYDRA_FILES = (".hydra",)
HYDRA_SUFFIXES = (".log",)
#: longest output stem (bytes): file systems allow 255 per name, and ".geojson" must fit
MAX_STEM_BYTES = 200
STAGING = ".bloodseg-predict-partial"
#: predict.* options that change how fast a batch runs, not what it writes
NOT_RESULTS = ("prefetch",)
#: counts.csv; ``count_low``/``count_high``: the model's calibrated 90 % interval and
#: ``review``: reasons to look by hand (:mod:`bloodseg.trust`; empty for a model without its
#: calibration); ``problem``: why an image was not counted (:mod:`bloodseg.screening`)
CSV_HEADER = ["file", "output", "cell_count", "count_low", "count_high", "mean_area_px",
              "median_area_px", "width", "height", "review", "problem"]


class OutputFolderError(ValueError):
    """The output folder would mix old and new results; the message says what to pass."""


def list_inputs(path: str | Path) -> tuple[list[Path], list[str]]:
    """The images of a file or folder, and what was passed over (named, never silently:
    dangling or looping links, folders with an image's name)."""
    path = Path(path)
    if path.is_file():
        return [path], []
    if path.is_dir():
        files, skipped = [], []
        for p in sorted(path.iterdir()):
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if p.is_file():
                files.append(p)
            elif p.is_symlink() and not p.exists():
                skipped.append(f"{p}: a link to nothing (dangling or looping); skipped")
            else:
                skipped.append(f"{p}: not a file (a folder?); skipped")
        if not files:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder"
                            + (f" ({len(skipped)} entries passed over: {skipped[0]})"
                               if skipped else ""))
        return files, skipped
    if path.is_symlink():
        raise DataError(f"{path}: a link to nothing (dangling or looping); pass the image itself")
    raise DataError(f"{path}: no such file or folder; pass input=<image or folder>")


def _fit(name: str) -> str:
    """``name`` cut to :data:`MAX_STEM_BYTES` with a hash of the whole name appended."""
    if len(name.encode()) <= MAX_STEM_BYTES:
        return name
    import hashlib

    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    cut = name.encode()[:MAX_STEM_BYTES - 11].decode(errors="ignore")
    return f"{cut}_{digest}"


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct output stem per input: the stem, or ``<stem>_<ext>`` where stems collide;
    a stem too long for the file system is cut and given a hash suffix.

    Names are compared case-insensitively, so results also stay apart on macOS/Windows disks.
    """
    stems = Counter(_fit(p.stem).casefold() for p in files)
    names: dict[Path, str] = {p: _fit(p.stem) for p in files
                              if stems[_fit(p.stem).casefold()] == 1}
    taken = {n.casefold() for n in names.values()}
    for p in files:
        if p in names:
            continue
        base = _fit(f"{p.stem}_{p.suffix.lstrip('.')}")
        name, i = base, 2
        while name.casefold() in taken:
            name, i = f"{base}_{i}", i + 1
        names[p] = name
        taken.add(name.casefold())
    return names


def _is_hydra_file(path: Path) -> bool:
    return path.name in HYDRA_FILES or (path.is_file() and path.suffix in HYDRA_SUFFIXES)


def check_output(out: str | Path, overwrite: bool = False,
                 inputs: Sequence[Path] = ()) -> list[Path]:
    """Check that ``out`` can take new results, touching nothing; returns the earlier results
    that ``overwrite`` will replace once the new ones are complete.

    Refuses (:class:`OutputFolderError`) a path under a file, and a folder with anything in it
    but Hydra's ``.hydra/`` and ``*.log`` unless ``overwrite``, so new masks never sit beside
    stale ones from another input.
    """
    out = Path(out)
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise OutputFolderError(f"output={out}: {parent} is a file, not a folder; pass "
                                    "another output=")
        if parent.exists():
            break
    if not out.is_dir():
        return []
    used = sorted(p.name for p in out.iterdir() if not _is_hydra_file(p) and p.name != STAGING)
    if not used:
        return []
    if not overwrite:
        shown = ", ".join(used[:5]) + (f", ... ({len(used)} entries)" if len(used) > 5 else "")
        raise OutputFolderError(
            f"output folder {out} is not empty ({shown}); new results would mix with what is "
            "there. Pass overwrite=true to replace bloodseg-predict's earlier results "
            f"({', '.join(OUTPUTS)}; other files are kept), or another output= folder.")
    ours = [out / name for name in OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    for path in ours:
        for f in inputs:
            if f.resolve().is_relative_to(path.resolve()):
                raise OutputFolderError(
                    f"overwrite=true would delete the input {f} (it is inside {path}); "
                    "move the images or pass another output= folder.")
    foreign = _foreign_files(out, ours)
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise OutputFolderError(
            f"overwrite=true would delete {foreign[0]}{more}, which bloodseg-predict did not "
            f"write (not listed in {out / 'counts.csv'}); move it out of that folder or pass "
            "another output= folder.")
    return ours


def _foreign_files(out: Path, ours: Sequence[Path]) -> list[Path]:
    """Files in the result folders that the earlier predict run (its ``counts.csv``) did not
    write: a user's own files there must survive ``overwrite=true``."""
    stems: set[str] = set()
    counts = out / "counts.csv"
    if counts.is_file():
        try:
            with open(counts, newline="") as f:
                stems = {Path(r.get("output") or "").stem for r in csv.DictReader(f)}
        except (OSError, UnicodeDecodeError, csv.Error):
            stems = set()
    foreign = []
    for folder in ours:
        if folder.is_dir() and not folder.is_symlink():
            foreign += [p for p in sorted(folder.rglob("*"))
                        if not p.is_dir() and (p.parent != folder or p.stem not in stems)]
    return foreign


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def swap_in(staging: Path, out: Path, old: Sequence[Path]) -> None:
    """Replace the earlier results ``old`` with the complete new ones in ``staging``."""
    for path in old:
        _remove(path)
        log.info("overwrite=true: replaced %s", path)
    for new in sorted(staging.iterdir()):
        new.replace(out / new.name)
    staging.rmdir()


def count_row(path: Path, labels: np.ndarray, output: str | None = None,
              interval: tuple[int, int] | None = None, review: Sequence[str] = ()) -> dict:
    areas = instance_areas(labels)
    return {
        "file": path.name,
        "output": output or f"{path.stem}.png",
        "cell_count": int(areas.size),
        "count_low": interval[0] if interval else "",
        "count_high": interval[1] if interval else "",
        "mean_area_px": round(float(areas.mean()), 1) if areas.size else 0.0,
        "median_area_px": round(float(np.median(areas)), 1) if areas.size else 0.0,
        "width": labels.shape[1],
        "height": labels.shape[0],
        "review": "; ".join(review),
        "problem": "",
    }


def problem_row(path: Path, image: np.ndarray, stem: str, problem: str) -> dict:
    """The ``counts.csv`` row of an image that was not counted: empty counts, the reason."""
    return {"file": path.name, "output": "", "cell_count": "", "count_low": "",
            "count_high": "", "mean_area_px": "", "median_area_px": "",
            "width": image.shape[1], "height": image.shape[0], "review": "", "problem": problem}


def write_csv(path: str | Path, rows: Sequence[dict], header: Sequence[str]) -> Path:
    """Rows as CSV (quoted as needed: names may hold commas or quotes), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n",
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())


class TileProgress:
    """Tile progress of the current image: a rich bar in a terminal, else a few log lines.

    Off a terminal (logs, SLURM) rich draws nothing until the end, so images over
    ``warn_tiles`` tiles log about every 10% instead; smaller ones stay quiet.
    """

    def __init__(self, bar, task, warn_tiles: int = WARN_TILES) -> None:
        self.bar, self.task, self.warn_tiles = bar, task, warn_tiles
        self.name, self.logged = "", 0

    def start(self, name: str) -> None:
        self.name, self.logged = name, 0
        self.bar.reset(self.task, total=None, visible=False, description=f"  {name} tiles")

    def __call__(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total, visible=total > 1)
        if not self.bar.console.is_terminal and total > self.warn_tiles:
            tenth = done * 10 // total
            if tenth > self.logged:
                self.logged = tenth
                log.info("%s: %d/%d tiles", self.name, done, total)


@contextmanager
def logs_above(bar) -> Iterator[None]:
    """While ``bar`` is live, send console log lines through rich so they print above it.

    Hydra's console handler holds the real stdout; written there, a warning would land on
    the bar's line and tear it.
    """
    out, err = sys.stdout, sys.stderr
    with bar:  # rich now proxies sys.stdout/sys.stderr to print above the bar
        proxy = {id(out): sys.stdout, id(sys.__stdout__): sys.stdout,
                 id(err): sys.stderr, id(sys.__stderr__): sys.stderr}
        swapped = []
        if bar.console.is_terminal:
            for handler in logging.getLogger().handlers:
                stream = getattr(handler, "stream", None)
                if (isinstance(handler, logging.StreamHandler) and id(stream) in proxy
                        and proxy[id(stream)] is not stream):
                    swapped.append((handler, handler.setStream(proxy[id(stream)])))
        try:
            yield
        finally:
            for handler, stream in swapped:
                handler.setStream(stream)


def _csv_line(row: dict, header: Sequence[str]) -> str:
    buf = io.StringIO()
    csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n",
                   extrasaction="ignore").writerow(row)
    return buf.getvalue()


def append_rows(path: Path, rows: Sequence[dict], header: Sequence[str]) -> None:
    """Append ``rows`` to a CSV and make them durable before the next image starts (flush +
    fsync): an interrupted batch keeps every row it finished, and only those."""
    if not rows:
        return
    with open(path, "a", newline="") as f:
        f.write("".join(_csv_line(r, header) for r in rows))
        f.flush()
        os.fsync(f.fileno())


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def manifest(cfg: DictConfig, files: Sequence[Path], names: dict[Path, str],
             formats: Sequence[str]) -> str:
    """What a batch is (its inputs, model files, options): resume continues only the same one.
    Nothing in it changes from run to run, so a resumed folder is the same, byte for byte."""
    from bloodseg.modelfile import file_sha256, model_files

    models = model_files(cfg.get("ckpt_path"), cfg.get("weights"))
    record = {"format": "bloodseg-predict-batch", "version": 1,
              "inputs": [[str(p.resolve()), names[p]] for p in files],
              "models": [file_sha256(m) for m in models],
              "postprocess": to_plain(cfg.get("postprocess")),
              "postprocess_file": cfg.get("postprocess_file"),
              "predict": {k: v for k, v in (to_plain(cfg.get("predict")) or {}).items()
                          if k not in NOT_RESULTS}}
    return json.dumps(record, indent=1, sort_keys=True, default=str) + "\n"


def resume_folder(out: Path, batch: str) -> Path:
    """The folder an interrupted batch left (``out`` itself, or its staging folder when it was
    replacing earlier results), checked to be this very batch."""
    for folder in (out / STAGING, out):
        if (folder / BATCH).is_file():
            if (folder / BATCH).read_text() != batch:
                raise OutputFolderError(
                    f"resume=true: {folder / BATCH} records another batch (other inputs, model "
                    "or options); rerun with the same arguments as the interrupted run, or "
                    "pass another output= folder without resume")
            return folder
    raise OutputFolderError(f"resume=true: {out} holds no interrupted bloodseg-predict batch; "
                            "run without resume=true")


def finished(folder: Path, names: dict[Path, str], formats: Sequence[str]) -> set[str]:
    """The outputs (stems) of an interrupted batch that are complete: a counts.csv row (the
    last thing written for an image) and every file it implies. The CSVs are rewritten with
    those rows only, so a row of an image cut short never survives."""
    stem_of = {p.name: s for p, s in names.items()}

    def stem(row: dict) -> str:
        return stem_of.get(row.get("file") or "", "")

    rows = read_rows(folder / "counts.csv")
    cells = read_rows(folder / "cells.csv")
    done = {stem(r) for r in rows if stem(r) and (r.get("problem") or all(
        (folder / f).is_file() for f in image_files(stem(r), formats)))}
    write_csv(folder / "counts.csv", [r for r in rows if stem(r) in done], CSV_HEADER)
    write_csv(folder / "cells.csv", [c for c in cells if stem(c) in done], CELL_COLUMNS)
    return done


def image_files(stem: str, formats: Sequence[str]) -> list[str]:
    """The files one counted image gets, relative to the output folder."""
    files = [f"masks/{stem}.png", f"instances/{stem}.png", f"overlays/{stem}.png"]
    if "geojson" in formats:
        files.append(f"geojson/{stem}.geojson")
    if "tiff" in formats:
        files.append(f"tiff/{stem}.tif")
    return files


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a scheduler's kill, a CI limit) ends a batch as Ctrl+C does: finished images
    kept, the summary says where it stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def judged(predictor: Any, image: np.ndarray, maps: np.ndarray, labels: np.ndarray
           ) -> tuple[tuple[int, int] | None, list[str]]:
    """The count's calibrated interval and the reasons to review it, when the model carries
    its calibration (:func:`bloodseg.trust.calibration_of`)."""
    calibration = calibration_of(predictor)
    if calibration is None:
        return None, []
    _, interval, reasons = calibration.judge(predictor, image, maps, labels)
    return interval, reasons


class Behind:
    """Runs submitted calls in order on one worker thread, at most ``depth`` behind the caller
    (0: at once, in the caller's thread): an image is post-processed and written while the
    network runs on the next. Leaving the block waits for every call, even on Ctrl+C (they
    are finished images), and raises the first call's error."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bloodseg-write") if depth else None
        self.pending: deque[Future] = deque()

    def submit(self, fn: Any, *args: Any) -> None:
        if self.pool is None:
            fn(*args)
            return
        self.pending.append(self.pool.submit(fn, *args))
        while len(self.pending) > self.depth:
            self.pending.popleft().result()

    def __enter__(self) -> Behind:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)


def read_ahead(files: Sequence[Path], load: Any, depth: int
               ) -> Iterator[tuple[Path, Any]]:
    """``(path, get)`` per file in order, ``get()`` returning ``load(path)`` (or raising its
    error); up to ``depth`` files are loaded ahead on a worker thread (OpenCV decodes without
    the GIL), so only ``depth`` images wait in memory."""
    if depth <= 0:
        for path in files:
            yield path, functools.partial(load, path)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="bloodseg-read") as pool:
        queue: deque[tuple[Path, Future]] = deque()
        rest = iter(files)
        try:
            for path in itertools.islice(rest, depth):
                queue.append((path, pool.submit(load, path)))
            while queue:
                path, future = queue.popleft()
                following = next(rest, None)
                if following is not None:
                    queue.append((following, pool.submit(load, following)))
                yield path, future.result
        finally:
            for _, future in queue:
                future.cancel()


class Interrupted(Exception):
    """A batch stopped by Ctrl+C or SIGTERM; the message says how far it got and how to go on."""


def predict(cfg: DictConfig) -> tuple[list[dict], list[str]]:
    """Predict every input image; returns the count rows and the unreadable or refused files.
    Checks the model, the inputs and the output folder before writing anything, then commits
    each image as it finishes (its files atomically, its CSV rows appended and fsynced): an
    interrupted batch keeps what it finished, and ``resume=true`` does only the rest."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    formats = [str(f) for f in (cfg.predict.get("formats") or [])]
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise DataError(f"predict.formats: unknown {unknown}; valid: {', '.join(FORMATS)}")
    predictor, _ = predictor_from_config(cfg)
    files, failed = list_inputs(cfg.input)
    names = output_names(files)
    out = Path(cfg.output)
    batch = manifest(cfg, files, names, formats)
    old: list[Path] = []
    if cfg.get("resume", False):
        folder = resume_folder(out, batch)
        if folder != out:
            old = [out / n for n in OUTPUTS if (out / n).exists() or (out / n).is_symlink()]
        done = finished(folder, names, formats)
        log.info("resume=true: %d of %d image(s) already done in %s", len(done), len(files),
                 folder)
    else:
        old = check_output(out, overwrite=bool(cfg.get("overwrite", False)), inputs=files)
        # earlier results stay untouched until the new batch is complete: it goes to a staging
        # folder then; a fresh folder takes each image as it finishes
        folder = out / STAGING if old else out
        if (out / STAGING).exists():  # an abandoned earlier batch: never shown as results
            shutil.rmtree(out / STAGING)
        folder.mkdir(parents=True, exist_ok=True)
        write_csv(folder / "counts.csv", [], CSV_HEADER)
        write_csv(folder / "cells.csv", [], CELL_COLUMNS)
        write_text_atomic(folder / BATCH, batch)
        done = set()
    rows: list[dict] = []
    skipped, flagged = [], []
    cells_written = [0]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    bar = Progress(*columns)
    todo = [p for p in files if names[p] not in done]
    ahead = int(cfg.predict.get("prefetch", 2))
    scale = min(predictor.scale)

    def load(path: Path) -> tuple[np.ndarray, str | None]:
        image = predictor.read(path)
        return image, screen(image, scale)

    def commit(k: int, path: Path, stem: str, image: np.ndarray, network: np.ndarray) -> None:
        """Everything after the network, on the worker thread while the network runs on the
        next smear: the maps at the image's size, instances, interval and review, the files,
        then the CSV rows (the image's commit)."""
        maps, labels = predictor.from_network(network, image.shape[:2])
        interval, review = judged(predictor, image, maps, labels)
        if review:
            flagged.append(path.name)
            log.warning("%s: review by hand: %s", path.name, "; ".join(review))
        png = f"{stem}.png"
        write_png_atomic(folder / "masks" / png, (predictor.mask(maps) * 255).astype(np.uint8))
        write_png_atomic(folder / "instances" / png, labels.astype(np.uint16))
        write_png_atomic(folder / "overlays" / png,
                         overlay(image, labels, count=int(labels.max()), interval=interval))
        if "geojson" in formats:
            write_geojson(folder / "geojson" / f"{stem}.geojson", labels)
        if "tiff" in formats:
            write_label_tiff(folder / "tiff" / f"{stem}.tif", labels)
        cells = cell_rows(labels, path.name, png, predictor.foreground(maps))
        row = count_row(path, labels, png, interval, review)
        append_rows(folder / "cells.csv", cells, CELL_COLUMNS)
        append_rows(folder / "counts.csv", [row], CSV_HEADER)  # the image's commit
        rows.append(row)
        cells_written[0] += len(cells)
        if quiet_bar:
            log.info("predict %s %s: %d cells", eta.line(k), path.name, int(labels.max()))

    def commit_problem(row: dict) -> None:
        append_rows(folder / "counts.csv", [row], CSV_HEADER)
        rows.append(row)

    writer = Behind(ahead)
    eta = Eta(len(todo))
    quiet_bar = not bar.console.is_terminal  # rich draws nothing in a log file
    try:
        with sigterm_as_interrupt(), logs_above(bar), writer:
            images = bar.add_task(f"predicting {len(files)} image(s)", total=len(files),
                                  visible=len(files) > 1, completed=len(files) - len(todo))
            tiles = TileProgress(bar, bar.add_task("tiles", visible=False),
                                 predictor.warn_tiles)
            for k, (path, loaded) in enumerate(read_ahead(todo, load, ahead), 1):
                try:
                    image, problem = loaded()
                except DataError as err:
                    failed.append(str(err))
                    bar.advance(images)
                    continue
                if problem:  # a row that says why, never a nonsense count
                    log.warning("%s: not counted: %s", path.name, problem)
                    row = problem_row(path, image, names[path], problem)
                    writer.submit(commit_problem, row)
                    skipped.append(f"{path}: not counted: {problem}")
                    bar.advance(images)
                    continue
                tiles.start(path.name)
                network = predictor.network_outputs(image, name=path.name, progress=tiles)
                writer.submit(commit, k, path, names[path], image, network)
                bar.advance(images)
            bar.update(tiles.task, visible=False)
    except KeyboardInterrupt:
        where = f"{folder} (earlier results in {out} untouched)" if folder != out else str(out)
        raise Interrupted(
            f"interrupted after {len(done) + len(rows)}/{len(files)} image(s); the finished "
            f"ones are in "
            f"{where}. Rerun the same command with resume=true to do the rest") from None
    except BaseException:
        if folder != out:  # replacing earlier results: a failed batch leaves them as they were
            shutil.rmtree(folder, ignore_errors=True)
        raise
    n_cells = cells_written[0]
    if folder != out:
        swap_in(folder, out, old)
    counted = len(rows) - len(skipped)
    calibration = calibration_of(predictor)
    print(f"{counted} image(s), {n_cells} cells written to {out} (counts.csv, cells.csv)"
          + (f"; each count with its {calibration.interval.level:.0%} interval "
             "(count_low-count_high)" if calibration else "")
          + (f"; {len(done)} done earlier" if done else ""))
    if flagged:
        print(f"{len(flagged)} smear(s) to review by hand (counts.csv says why in 'review')")
    if skipped:
        print(f"{len(skipped)} image(s) not counted (counts.csv says why in 'problem'): look "
              "at them by hand")
    return rows, failed + skipped
