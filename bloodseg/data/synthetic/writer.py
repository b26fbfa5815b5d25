"""Datasets on disk: the Kaggle layout, per-image seeds, and cache folders named by content.

:func:`write_dataset` writes ``{train,test}/{original,mask,instances}/NAME.png`` plus
``dataset.json`` (its parameters and :data:`GENERATOR_VERSION`). :func:`cache_path` names a
cache folder after a hash of *all* parameters, so a cache is never reused for different data.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from bloodseg.data.synthetic.params import STYLES
from bloodseg.labels import mask_from_instances

# Part of every dataset_key: bump it whenever the rendered files change for the same
# arguments (rendering, RNG order, file format), so stale caches are not reused.
GENERATOR_VERSION = 1

# Written into every dataset folder: {"generator_version", "key", "params"}.
DATASET_JSON = "dataset.json"


def _image_rng(seed: int, split: int, index: int) -> np.random.Generator:
    """Independent generator per image, so that any subset or parallel run is reproducible."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, index)))


def _image_name(seed: int, split: int, index: int) -> str:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(split, index, 1)))
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _imwrite(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array):
        raise OSError(f"cv2.imwrite failed for {path}")


def _render_smear() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    # Looked up on the package at call time, so that patching
    # ``bloodseg.data.synthetic.render_smear`` (as tests do) reaches write_dataset.
    from bloodseg.data import synthetic

    return synthetic.render_smear


def _check_style(style: str) -> None:
    if style != "mixed" and style not in STYLES:
        raise ValueError(f"unknown style {style!r}; valid styles: mixed, {', '.join(STYLES)}")


def _optional_float(v: Any) -> float | None:
    return None if v is None else float(v)


# write_dataset arguments that do not change the files, and canonical JSON types for the rest
# (so that size=(256, 256) from Python and [256, 256] from a Hydra config give the same key).
_NOT_CONTENT = ("out", "overwrite")
_CANONICAL: dict[str, Callable[[Any], Any]] = {
    "n_train": int,
    "n_test": int,
    "size": lambda s: [int(v) for v in s],
    "seed": int,
    "style": str,
    "cell_diameter_frac": _optional_float,
    "native_aspect": _optional_float,
}


def dataset_params(**params: Any) -> dict[str, Any]:
    """Every content argument of :func:`write_dataset`, defaults filled in, canonical types.

    Takes the keyword arguments of :func:`write_dataset` except ``out``; ``overwrite`` is
    accepted and ignored. Raises TypeError for unknown or missing arguments.
    """
    bound = inspect.signature(write_dataset).bind(None, **params)
    bound.apply_defaults()
    args = {k: v for k, v in bound.arguments.items() if k not in _NOT_CONTENT}
    canonical = {k: _CANONICAL[k](v) for k, v in args.items()}
    _check_style(canonical["style"])
    if len(canonical["size"]) != 2:
        raise ValueError(f"size must be (width, height), got {canonical['size']}")
    return canonical


def dataset_key(**params: Any) -> str:
    """Short stable name of the dataset :func:`write_dataset` writes for these arguments.

    ``STYLE-{n_train}x{n_test}-{W}x{H}-seed{seed}-HASH``, where HASH (10 hex digits) is the
    SHA-1 of the canonical JSON of all :func:`dataset_params` and :data:`GENERATOR_VERSION`:
    any argument that changes the files (``cell_diameter_frac``, ``native_aspect``, ...)
    changes the key, and so does a new generator version. Example::

        dataset_key(n_train=200, n_test=40, size=(256, 256))  # 'mixed-200x40-256x256-seed0-...'
    """
    args = dataset_params(**params)
    blob = json.dumps(
        {"generator_version": GENERATOR_VERSION, "params": args},
        sort_keys=True,
        separators=(",", ":"),
    )
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    width, height = args["size"]
    return (
        f"{args['style']}-{args['n_train']}x{args['n_test']}-{width}x{height}"
        f"-seed{args['seed']}-{digest}"
    )


def cache_path(base_dir: str | Path, **params: Any) -> Path:
    """``base_dir / dataset_key(**params)``: where to cache the dataset of these arguments."""
    return Path(base_dir) / dataset_key(**params)


def write_dataset(
    out: Path,
    n_train: int,
    n_test: int,
    size: tuple[int, int] = (256, 256),
    seed: int = 0,
    style: str = "mixed",
    overwrite: bool = False,
    cell_diameter_frac: float | None = None,
    native_aspect: float | None = 4 / 3,
) -> Path:
    """Write a synthetic dataset in the Kaggle "BCCD Dataset with mask" layout.

    Layout: ``out/{train,test}/{original,mask,instances}/NAME.png`` with ``original`` an RGB
    PNG, ``mask`` an RGB PNG with values {0, 255} (three identical channels, as the real masks)
    and ``instances`` a 16-bit single-channel PNG of instance ids. NAME is a UUID derived from
    ``(seed, split, index)``. Same arguments give byte-identical files. ``out/dataset.json``
    records the arguments (:func:`dataset_params`), :data:`GENERATOR_VERSION` and the
    :func:`dataset_key`.

    The dataset is built in a temporary folder next to ``out`` and renamed into place at the
    end, so ``out`` is either complete or absent.

    Args:
        out: destination folder; must not exist or be empty unless ``overwrite``.
        n_train, n_test: number of images per split.
        size: ``(width, height)`` in pixels, i.e. W x H (images are H rows of W pixels).
        seed: base seed; image ``i`` of a split uses its own generator from ``(seed, split, i)``.
        style: one of :data:`STYLES` or ``"mixed"`` (alternates bbbc041 and bccd).
        overwrite: replace a non-empty ``out``.
        cell_diameter_frac: passed to :func:`render_smear`.
        native_aspect: width/height of the field of view each image stands for. Both real
            datasets are 4:3 and the training pipeline resizes them to ``size``; with the
            default 4/3 the synthetic images get the same distortion (at 256x256 cells are
            ~1.33x taller than wide, exactly like resized real images). ``None`` renders
            square pixels whatever ``size`` is.

    Returns:
        ``out``.
    """
    _check_style(style)
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    width, height = (int(v) for v in size)
    y_stretch = 1.0 if native_aspect is None else native_aspect * height / width
    params = dict(
        n_train=n_train,
        n_test=n_test,
        size=size,
        seed=seed,
        style=style,
        cell_diameter_frac=cell_diameter_frac,
        native_aspect=native_aspect,
    )
    info = {
        "generator_version": GENERATOR_VERSION,
        "key": dataset_key(**params),
        "params": dataset_params(**params),
    }
    out = Path(out)
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)
        for split_id, (split, n) in enumerate((("train", n_train), ("test", n_test))):
            dirs = {k: tmp / split / k for k in ("original", "mask", "instances")}
            for dd in dirs.values():
                dd.mkdir(parents=True)
            for i in range(n):
                global_index = i if split_id == 0 else n_train + i
                st = STYLES[global_index % len(STYLES)] if style == "mixed" else style
                image, inst = _render_smear()(
                    _image_rng(seed, split_id, i), width, height, st, cell_diameter_frac, y_stretch
                )
                mask = mask_from_instances(inst)
                name = _image_name(seed, split_id, i) + ".png"
                _imwrite(dirs["original"] / name, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                _imwrite(dirs["mask"] / name, cv2.merge([mask, mask, mask]))
                _imwrite(dirs["instances"] / name, inst)
        (tmp / DATASET_JSON).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if out.exists():
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            elif not overwrite:
                # another writer (e.g. a parallel sweep job) finished first: keep its data
                raise FileExistsError(f"{out} was written by another process meanwhile")
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
                os.replace(out, old / out.name)
                os.replace(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
                return out
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
