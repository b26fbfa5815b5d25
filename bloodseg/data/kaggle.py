"""The Kaggle dataset (BCCD Dataset with mask) fetched into the layout the readers expect.

:func:`download` gets it with kagglehub, or unpacks a zip downloaded by hand (offline
machines); :func:`install_dataset` copies an unpacked download into ``<out>/BCCD Dataset with
mask`` through a temporary folder and a rename, so a half-copied dataset never looks complete.
The command is ``bloodseg-data download`` (:mod:`bloodseg.data.cli`).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from bloodseg.data.bbbc041seg import KAGGLE_FOLDER, resolve_root
from bloodseg.io import DataError

KAGGLE_HANDLE = "jeetblahiri/bccd-dataset-with-mask"
KAGGLE_URL = f"https://www.kaggle.com/datasets/{KAGGLE_HANDLE}"


def _find_dataset(folder: Path) -> Path:
    """The folder holding train/ and test/ somewhere under an unpacked download."""
    for cand in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        try:
            return resolve_root(cand)
        except DataError:
            continue
    raise DataError(
        f"{folder}: the download holds no Kaggle layout (train/ and test/ with original/ "
        "and mask/). Is it the right dataset?"
    )


def install_dataset(source: Path, out: Path) -> Path:
    """Copy an unpacked dataset into ``out/BCCD Dataset with mask`` via temp dir + rename."""
    target = out / KAGGLE_FOLDER
    if target.exists():
        raise FileExistsError(f"{target}: already exists; remove it to download again")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".download-") as tmp:
        staged = Path(tmp) / KAGGLE_FOLDER
        shutil.copytree(_find_dataset(source), staged)
        staged.rename(target)
    return target


def download(out: Path, zip_path: Path | None = None) -> Path:
    """Fetch the Kaggle dataset with kagglehub (or unpack a hand-downloaded zip)."""
    if zip_path is not None:
        if not zipfile.is_zipfile(zip_path):
            raise DataError(f"{zip_path}: not a zip archive; download it again from {KAGGLE_URL}")
        with tempfile.TemporaryDirectory(prefix="bloodseg-zip-") as tmp:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)
            return install_dataset(Path(tmp), out)
    try:
        import kagglehub

        cached = Path(kagglehub.dataset_download(KAGGLE_HANDLE))
    except Exception as err:  # kagglehub raises many types (HTTP, DNS, auth)
        raise DataError(
            f"could not download {KAGGLE_HANDLE} with kagglehub ({type(err).__name__}: {err}).\n"
            f"Offline? Download the zip by hand from {KAGGLE_URL} on a machine with internet, "
            f"copy it here, then run: bloodseg-data download --zip archive.zip --out {out}"
        ) from err
    return install_dataset(cached, out)
