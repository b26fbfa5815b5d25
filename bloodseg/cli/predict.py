"""``bloodseg-predict``: masks, instances, overlays, cell counts and per-cell measurements.

    bloodseg-predict weights=count_real input=smears/ output=counts/     # a shipped model
    bloodseg-predict ckpt_path=run/checkpoints/best.ckpt input=smears/ output=pred/
    bloodseg-predict ckpt_path=... input=one.png predict.mode=tile predict.tta=true
    bloodseg-predict ckpt_path=... input=bccd/ predict.scale=0.4   # cells bigger than in training
    bloodseg-predict weights=count_real input=... predict.formats=[geojson,tiff]
    bloodseg-predict weights=list                                   # the shipped models

For every PNG/JPEG/TIFF (gray, RGB or RGBA; 8 or 16 bit; any size) it writes
``masks/<name>.png`` (0/255), ``instances/<name>.png`` (16-bit labels),
``overlays/<name>.png`` (contours, numbers and the total), one ``counts.csv`` (a row per
image) and one ``cells.csv`` (a row per cell: area, centroid, bounding box, equivalent
diameter, eccentricity, whether it touches the frame; ``skimage.measure.regionprops_table``).
``predict.formats`` adds ``geojson/<name>.geojson`` (cell polygons QuPath imports) and
``tiff/<name>.tif`` (label images for napari and Fiji). Unreadable inputs are listed at the
end and make the exit code non-zero; every readable image is still written.

The model (``weights=`` or ``ckpt_path=``) is read from its spec and runs through the one
inference path (:mod:`bloodseg.inference`) with its own preprocessing and tuned
post-processing, as the run's test and ``bloodseg-evaluate`` do: the same image gives the same
cells everywhere. What a prediction does lives in :mod:`bloodseg.prediction`; this module is the
command (Hydra, ``weights=list``, exit status).

Output names: ``<name>`` is the input's stem (``smear.tif`` -> ``masks/smear.png``) unless another
input has the same stem (compared case-insensitively), then stem and extension
(``cell.png`` -> ``cell_png.png``, ``cell.jpg`` -> ``cell_jpg.png``), with ``_2``, ``_3``...
added should that name be taken too; a name too long for the file system is cut and given a
hash suffix. ``counts.csv`` has one row per image: ``file`` (the input's name) and ``output``
(the PNG name used in masks/, instances/ and overlays/).

Output folder: results never mix with an earlier run's, and nothing is lost to a mistake.
Everything is checked first (model file, inputs, output path); a folder that already holds
anything (besides Hydra's own ``.hydra/`` and ``*.log``) is refused unless ``overwrite=true``.
Each image is committed as it finishes (its files atomically, its CSV rows appended and
fsynced), so Ctrl+C or SIGTERM leaves a consistent folder of the finished images and says
``interrupted after k/N`` (exit 130); the same command with ``resume=true`` does only the rest
and gives the same files as an uninterrupted run. With ``overwrite=true`` the new batch goes
into a hidden folder beside the earlier results and replaces them (masks/, instances/,
overlays/, geojson/, tiff/, counts.csv, cells.csv, and nothing else) only once it is complete:
a failure or an interruption leaves them as they were.

Scale: ``auto`` runs the image as the network was trained: at the training scale, whole (tiles
beyond a size limit), or squashed to the training size for networks trained that way.
``tile`` runs overlapping tiles of the training size with a smooth blending window; any image
size fits in memory. An image of more than 200 tiles gets a warning first (how many, and the
faster options); its tiles show as a progress bar in a terminal, as a log line per 10%
elsewhere.

Paths with non-ASCII letters, ``=`` or ``,`` must be quoted for Hydra and the shell
(``'input="/data/dätä"'``); an unquoted one exits 2 with that hint (:mod:`bloodseg.cli.errors`).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from bloodseg.cli.errors import model_options, run_hydra_main, user_errors
from bloodseg.config import CONF_DIR

EXAMPLE = "bloodseg-predict weights=count_real input=smears/ output=counts/"


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def run(cfg: DictConfig) -> None:
    if model_options(cfg, "bloodseg-predict", EXAMPLE):
        return
    from bloodseg.prediction import Interrupted, OutputFolderError, predict

    try:
        with user_errors(OutputFolderError, OSError):
            _, failed = predict(cfg)
    except Interrupted as err:  # Ctrl+C / SIGTERM: the finished images are kept
        print(f"{err}", file=sys.stderr)
        sys.exit(130)
    if failed:
        print(f"{len(failed)} file(s) could not be read or were passed over:", file=sys.stderr)
        for msg in failed:
            print(f"  - {msg}", file=sys.stderr)
        sys.exit(1)


def main() -> None:
    run_hydra_main(run)


if __name__ == "__main__":
    main()
