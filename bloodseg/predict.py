"""``bloodseg-predict``: masks, instances, overlays and cell counts for any images.

    bloodseg-predict ckpt_path=run/checkpoints/best.ckpt input=smears/ output=pred/
    bloodseg-predict ckpt_path=... input=one.png predict.mode=resize predict.tta=true
    bloodseg-predict ckpt_path=... input=bccd/ predict.scale=0.4   # cells bigger than in training

For every PNG/JPEG/TIFF (gray, RGB or RGBA; 8 or 16 bit; any size) it writes
``masks/<stem>.png`` (0/255), ``instances/<stem>.png`` (16-bit labels),
``overlays/<stem>.png`` (contours + numbers) and one ``counts.csv``. Unreadable files are
listed at the end and make the exit code non-zero; every readable image is still written.

Scale: the network saw training images resized from their source size to ``image_size``
(BBBC041Seg: 1600x1200 -> 256x256). ``tile`` mode rescales each image by that same factor
(or ``predict.scale``), runs overlapping tiles of the training size with a smooth blending
window, and brings the probabilities back to native resolution, where the watershed runs;
any image size fits in memory. ``resize`` mode squeezes the whole image to ``image_size``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import hydra
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

import bloodseg  # noqa: F401  (resolvers)
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
from bloodseg.transforms import normalize, to_color

log = logging.getLogger(__name__)


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
                 batch_size: int = 8, tta: bool = False, device: str = "auto") -> None:
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
        if scale is None:
            self.scale = (self.tile_hw[0] / source[0], self.tile_hw[1] / source[1])
        elif isinstance(scale, (int, float)):
            self.scale = (float(scale), float(scale))
        else:
            self.scale = tuple(float(s) for s in scale)
        self.mode, self.overlap, self.batch_size = mode, overlap, batch_size

    def _in_channels(self) -> int:
        return int(self.module.hparams.model.get("in_channels", 3))

    def _normalize(self, img: np.ndarray) -> np.ndarray:
        return normalize(to_color(img, self.color), self.color)

    @torch.inference_mode()
    def _run(self, chunks: list[np.ndarray]) -> np.ndarray:
        x = torch.from_numpy(np.stack(chunks)).to(self.device)
        return self.module.predict_probs(x, tta=self.tta)[:, 0].float().cpu().numpy()

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """HxW foreground probability for an RGB or gray uint8 image at its own size."""
        h, w = image.shape[:2]
        if self.mode == "resize":
            th, tw = self.tile_hw
            small = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
            prob = self._run([self._normalize(small)])[0]
            return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
        sh, sw = max(1, round(h * self.scale[0])), max(1, round(w * self.scale[1]))
        interp = cv2.INTER_AREA if sh < h else cv2.INTER_LINEAR
        scaled = self._normalize(cv2.resize(image, (sw, sh), interpolation=interp))
        th, tw = min(self.tile_hw[0], sh), min(self.tile_hw[1], sw)
        acc = np.zeros((sh, sw), np.float32)
        weight = np.zeros((sh, sw), np.float32)
        window = blend_window(th, tw)
        boxes = [(y, x) for y in tile_starts(sh, th, self.overlap)
                 for x in tile_starts(sw, tw, self.overlap)]
        for i in range(0, len(boxes), self.batch_size):
            batch = boxes[i:i + self.batch_size]
            probs = self._run([scaled[:, y:y + th, x:x + tw] for y, x in batch])
            for (y, x), p in zip(batch, probs):
                acc[y:y + th, x:x + tw] += p * window
                weight[y:y + th, x:x + tw] += window
        prob = acc / weight
        return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)


def count_row(path: Path, labels: np.ndarray) -> dict:
    areas = instance_areas(labels)
    return {
        "file": path.name,
        "cell_count": int(areas.size),
        "mean_area_px": round(float(areas.mean()), 1) if areas.size else 0.0,
        "median_area_px": round(float(np.median(areas)), 1) if areas.size else 0.0,
        "width": labels.shape[1],
        "height": labels.shape[0],
    }


def predict(cfg: DictConfig) -> tuple[list[dict], list[str]]:
    """Predict every input image; returns the count rows and the unreadable files."""
    from rich.progress import track

    files = list_inputs(cfg.input)
    out = Path(cfg.output)
    p = cfg.predict
    predictor = Predictor(SegmentationModule.from_checkpoint(cfg.ckpt_path), mode=p.mode,
                          scale=p.scale, overlap=p.overlap, batch_size=p.batch_size, tta=p.tta,
                          device=p.device)
    watershed = instantiate(cfg.postprocess)
    rows, failed = [], []
    for path in track(files, description=f"predicting {len(files)} image(s)",
                      disable=len(files) < 2):
        try:
            # RGB for the overlay; the predictor converts to what the network was trained on
            image = read_image(path, color="rgb", strict=False)
        except DataError as err:
            failed.append(str(err))
            continue
        prob = predictor.probabilities(image)
        labels = watershed(prob)
        write_png_atomic(out / "masks" / f"{path.stem}.png",
                         ((prob > watershed.threshold) * 255).astype(np.uint8))
        write_png_atomic(out / "instances" / f"{path.stem}.png", labels.astype(np.uint16))
        write_png_atomic(out / "overlays" / f"{path.stem}.png", overlay(image, labels))
        rows.append(count_row(path, labels))
    header = ["file", "cell_count", "mean_area_px", "median_area_px", "width", "height"]
    lines = [",".join(header)] + [",".join(str(r[k]) for k in header) for r in rows]
    write_text_atomic(out / "counts.csv", "\n".join(lines) + "\n")
    print(f"{len(rows)} image(s) written to {out} (counts.csv)")
    return rows, failed


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def run(cfg: DictConfig) -> None:
    _, failed = predict(cfg)
    if failed:
        print(f"{len(failed)} file(s) could not be read:", file=sys.stderr)
        for msg in failed:
            print(f"  - {msg}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    run()


if __name__ == "__main__":
    main()
