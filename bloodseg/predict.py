"""``bloodseg-predict``: masks, instances, overlays and cell counts for any images.

    bloodseg-predict ckpt_path=run/checkpoints/best.ckpt input=smears/ output=pred/
    bloodseg-predict ckpt_path=... input=one.png predict.mode=resize predict.tta=true
    bloodseg-predict ckpt_path=... input=bccd/ predict.scale=0.4   # cells bigger than in training
    bloodseg-predict ckpt_path=... 'input="/data/dätä"' output=pred/ overwrite=true

For every PNG/JPEG/TIFF (gray, RGB or RGBA; 8 or 16 bit; any size) it writes
``masks/<name>.png`` (0/255), ``instances/<name>.png`` (16-bit labels),
``overlays/<name>.png`` (contours + numbers) and one ``counts.csv``. Unreadable files are
listed at the end and make the exit code non-zero; every readable image is still written.

Output names: ``<name>`` is the input's stem (``smear.tif`` -> ``masks/smear.png``) unless another
input has the same stem (compared case-insensitively), then stem and extension
(``cell.png`` -> ``cell_png.png``, ``cell.jpg`` -> ``cell_jpg.png``), with ``_2``, ``_3``...
added should that name be taken too. ``counts.csv`` has one row per image: ``file`` (the
input's name) and ``output`` (the PNG name used in masks/, instances/ and overlays/).

Output folder: results never mix with an earlier run's. A folder that already holds anything
(besides Hydra's own ``.hydra/`` and ``*.log``) is refused unless ``overwrite=true``, which
first deletes what bloodseg-predict writes there (masks/, instances/, overlays/, counts.csv)
and nothing else.

Scale: the network saw training images resized from their source size to ``image_size``
(BBBC041Seg: 1600x1200 -> 256x256). ``tile`` mode rescales each image by that same factor
(or ``predict.scale``), runs overlapping tiles of the training size with a smooth blending
window, and brings the probabilities back to native resolution, where the watershed runs;
any image size fits in memory. ``resize`` mode squeezes the whole image to ``image_size``.
An image of more than 200 tiles gets a warning first (how many, and the faster options);
its tiles show as a progress bar in a terminal, as a log line per 10% elsewhere.

Paths with non-ASCII letters, ``=`` or ``,`` must be quoted for Hydra and the shell
(``'input="/data/dätä"'``); an unquoted one exits 2 with that hint (:mod:`bloodseg.cli_errors`).
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

import bloodseg  # noqa: F401  (resolvers)
from bloodseg.checkpoint import CheckpointError
from bloodseg.cli_errors import run_hydra_main
from bloodseg.config import CONF_DIR
from bloodseg.io import (
    IMAGE_SUFFIXES,
    DataError,
    read_image,
    write_png_atomic,
    write_text_atomic,
)
from bloodseg.labels import instance_areas
from bloodseg.module import SegmentationModule
from bloodseg.render import overlay
from bloodseg.transforms import adjust_contrast, normalize, to_color, upsample

log = logging.getLogger(__name__)

#: what bloodseg-predict writes into its output folder; ``overwrite=true`` removes these only
OUTPUTS = ("masks", "instances", "overlays", "counts.csv")
#: Hydra's own files in its run folder (the default ``output=``); they do not make it "used"
HYDRA_FILES = (".hydra",)
HYDRA_SUFFIXES = (".log",)
#: images needing more tiles than this get a warning with ways to go faster
WARN_TILES = 200
CSV_HEADER = ["file", "output", "cell_count", "mean_area_px", "median_area_px", "width",
              "height"]


class OutputFolderError(ValueError):
    """The output folder would mix old and new results; the message says what to pass."""


def list_inputs(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return files
    raise DataError(f"{path}: no such file or folder; pass input=<image or folder>")


def output_names(files: Sequence[Path]) -> dict[Path, str]:
    """A distinct output stem per input: the stem, or ``<stem>_<ext>`` where stems collide.

    Names are compared case-insensitively, so results also stay apart on macOS/Windows disks.
    """
    stems = Counter(p.stem.casefold() for p in files)
    names: dict[Path, str] = {p: p.stem for p in files if stems[p.stem.casefold()] == 1}
    taken = {n.casefold() for n in names.values()}
    for p in files:
        if p in names:
            continue
        base = f"{p.stem}_{p.suffix.lstrip('.')}"
        name, i = base, 2
        while name.casefold() in taken:
            name, i = f"{base}_{i}", i + 1
        names[p] = name
        taken.add(name.casefold())
    return names


def _is_hydra_file(path: Path) -> bool:
    return path.name in HYDRA_FILES or (path.is_file() and path.suffix in HYDRA_SUFFIXES)


def prepare_output(out: str | Path, overwrite: bool = False,
                   inputs: Sequence[Path] = ()) -> Path:
    """Make sure ``out`` holds no earlier results; with ``overwrite`` delete only those.

    Refuses (:class:`OutputFolderError`) a folder with anything in it but Hydra's ``.hydra/``
    and ``*.log``, so new masks never sit beside stale ones from another input.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output={out} is a file, not a folder; pass another output=")
    if not out.is_dir():
        return out
    used = sorted(p.name for p in out.iterdir() if not _is_hydra_file(p))
    if not used:
        return out
    if not overwrite:
        shown = ", ".join(used[:5]) + (f", ... ({len(used)} entries)" if len(used) > 5 else "")
        raise OutputFolderError(
            f"output folder {out} is not empty ({shown}); new results would mix with what is "
            "there. Pass overwrite=true to replace bloodseg-predict's earlier results "
            "(masks/, instances/, overlays/, counts.csv; other files are kept), "
            "or another output= folder.")
    ours = [out / name for name in OUTPUTS if (out / name).exists() or (out / name).is_symlink()]
    for path in ours:
        for f in inputs:
            if f.resolve().is_relative_to(path.resolve()):
                raise OutputFolderError(
                    f"overwrite=true would delete the input {f} (it is inside {path}); "
                    "move the images or pass another output= folder.")
    for path in ours:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        log.info("overwrite=true: removed %s", path)
    return out


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Tile origins covering ``length`` with at least ``overlap`` shared between neighbours."""
    if length <= tile:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def blend_window(h: int, w: int) -> np.ndarray:
    """Weights that fade towards tile borders, where a network sees the least context."""
    wy = np.minimum(np.arange(h) + 1, np.arange(h)[::-1] + 1).astype(np.float32)
    wx = np.minimum(np.arange(w) + 1, np.arange(w)[::-1] + 1).astype(np.float32)
    return np.outer(wy / wy.max(), wx / wx.max()) + 1e-3


class Predictor:
    """Probability maps at native resolution from a trained :class:`SegmentationModule`."""

    def __init__(self, module: SegmentationModule, mode: str = "tile",
                 scale: float | Sequence[float] | None = None, overlap: float = 0.25,
                 batch_size: int = 8, tta: bool = False, device: str = "auto",
                 warn_tiles: int = WARN_TILES) -> None:
        if mode not in ("tile", "resize"):
            raise ValueError(f"predict.mode must be 'tile' or 'resize', got {mode!r}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.tta = tta
        info = module.hparams.get("data_info") or {}
        self.color = info.get("color") or ("gray" if self._in_channels() == 1 else "rgb")
        self.tile_hw = tuple(info.get("image_size") or (256, 256))
        source = info.get("source_size") or self.tile_hw
        if scale is None and info.get("scale"):
            self.scale = (float(info["scale"]), float(info["scale"]))  # trained on scaled crops
        elif scale is None:
            self.scale = (self.tile_hw[0] / source[0], self.tile_hw[1] / source[1])
        elif isinstance(scale, (int, float)):
            self.scale = (float(scale), float(scale))
        else:
            self.scale = tuple(float(s) for s in scale)
        self.mode, self.overlap, self.batch_size = mode, overlap, batch_size
        self.contrast = info.get("contrast") or "none"
        self.warn_tiles = warn_tiles

    def _in_channels(self) -> int:
        return int(self.module.hparams.model.get("in_channels", 3))

    def _normalize(self, img: np.ndarray) -> np.ndarray:
        return normalize(to_color(img, self.color), self.color)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """The whole image as the network's training data was: its color and contrast."""
        return adjust_contrast(to_color(image, self.color), self.contrast)

    @torch.inference_mode()
    def _run(self, chunks: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(chunks)).to(self.device)
        return self.module.predict_outputs(x, tta=self.tta).float().cpu().numpy()

    def tile_plan(self, h: int, w: int) -> tuple[tuple[int, int], tuple[int, int],
                                                  list[tuple[int, int]]]:
        """Scaled size, tile size and tile origins for an ``h`` x ``w`` image (tile mode)."""
        sh, sw = max(1, round(h * self.scale[0])), max(1, round(w * self.scale[1]))
        th, tw = min(self.tile_hw[0], sh), min(self.tile_hw[1], sw)
        boxes = [(y, x) for y in tile_starts(sh, th, self.overlap)
                 for x in tile_starts(sw, tw, self.overlap)]
        return (sh, sw), (th, tw), boxes

    def outputs(self, image: np.ndarray, name: str = "image",
                progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(C, H, W) probability maps of the network's target (binary: C=1, the foreground)
        for an RGB or gray uint8 image, at the image's own size.

        ``progress(done, total)`` is called with the tile count after every batch of tiles.
        """
        h, w = image.shape[:2]
        image = self._prepare(image)
        if self.mode == "resize":
            th, tw = self.tile_hw
            small = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
            return upsample(self._run([self._normalize(small)])[0], (h, w))
        (sh, sw), (th, tw), boxes = self.tile_plan(h, w)
        if len(boxes) > self.warn_tiles:
            log.warning(
                "%s: %dx%d px at predict.scale=%.3g is %d tiles of %dx%d px on %s; this can "
                "take a long time. To go faster, lower predict.scale (if the cells are larger "
                "than in training) or use predict.mode=resize (one coarse pass).",
                name, w, h, self.scale[0], len(boxes), tw, th, self.device)
        interp = cv2.INTER_AREA if sh < h else cv2.INTER_LINEAR
        scaled = self._normalize(cv2.resize(image, (sw, sh), interpolation=interp))
        acc = np.zeros((self.module.hparams.target["channels"], sh, sw), np.float32)
        weight = np.zeros((sh, sw), np.float32)
        window = blend_window(th, tw)
        for i in range(0, len(boxes), self.batch_size):
            batch = boxes[i:i + self.batch_size]
            probs = self._run([scaled[:, y:y + th, x:x + tw] for y, x in batch])
            for (y, x), p in zip(batch, probs):
                acc[:, y:y + th, x:x + tw] += p * window
                weight[y:y + th, x:x + tw] += window
            if progress is not None:
                progress(i + len(batch), len(boxes))
        return upsample(acc / weight, (h, w))


def count_row(path: Path, labels: np.ndarray, output: str | None = None) -> dict:
    areas = instance_areas(labels)
    return {
        "file": path.name,
        "output": output or f"{path.stem}.png",
        "cell_count": int(areas.size),
        "mean_area_px": round(float(areas.mean()), 1) if areas.size else 0.0,
        "median_area_px": round(float(np.median(areas)), 1) if areas.size else 0.0,
        "width": labels.shape[1],
        "height": labels.shape[0],
    }


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


def predict(cfg: DictConfig) -> tuple[list[dict], list[str]]:
    """Predict every input image; returns the count rows and the unreadable files."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    files = list_inputs(cfg.input)
    names = output_names(files)
    out = prepare_output(cfg.output, overwrite=bool(cfg.get("overwrite", False)), inputs=files)
    p = cfg.predict
    module = SegmentationModule.from_checkpoint(cfg.ckpt_path)
    predictor = Predictor(module, mode=p.mode, scale=p.scale, overlap=p.overlap,
                          batch_size=p.batch_size, tta=p.tta, device=p.device)
    postprocess = instantiate(cfg.get("postprocess") or module.postprocess_config())
    rows, failed = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    bar = Progress(*columns)
    with logs_above(bar):
        images = bar.add_task(f"predicting {len(files)} image(s)", total=len(files),
                              visible=len(files) > 1)
        tiles = TileProgress(bar, bar.add_task("tiles", visible=False), predictor.warn_tiles)
        for path in files:
            try:
                # RGB for the overlay; the predictor converts to what the network was trained on
                image = read_image(path, color="rgb", strict=False)
            except DataError as err:
                failed.append(str(err))
                bar.advance(images)
                continue
            tiles.start(path.name)
            maps = predictor.outputs(image, name=path.name, progress=tiles)
            labels = postprocess(maps)
            png = f"{names[path]}.png"
            fg = postprocess.foreground(maps) > postprocess.threshold
            write_png_atomic(out / "masks" / png, (fg * 255).astype(np.uint8))
            write_png_atomic(out / "instances" / png, labels.astype(np.uint16))
            write_png_atomic(out / "overlays" / png, overlay(image, labels))
            rows.append(count_row(path, labels, png))
            bar.advance(images)
        bar.update(tiles.task, visible=False)
    write_csv(out / "counts.csv", rows, CSV_HEADER)
    print(f"{len(rows)} image(s) written to {out} (counts.csv)")
    return rows, failed


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def run(cfg: DictConfig) -> None:
    try:
        _, failed = predict(cfg)
    except (DataError, OutputFolderError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    if failed:
        print(f"{len(failed)} file(s) could not be read:", file=sys.stderr)
        for msg in failed:
            print(f"  - {msg}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    run_hydra_main(run)


if __name__ == "__main__":
    main()
