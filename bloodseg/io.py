"""Image and mask file I/O with errors that name the file and the fix.

Every reader in bloodseg goes through here, so a corrupt PNG, a 16-bit TIFF or a
mask with stray values fails the same way everywhere (dataset, verify, predict).

    >>> img = read_image("smear.png", color="rgb")      # HxWx3 uint8, RGB order
    >>> mask = read_mask("smear_mask.png")              # HxW uint8 {0, 1}
    >>> write_png_atomic("out/mask.png", mask * 255)    # never leaves half a file
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


class DataError(ValueError):
    """Bad input data; the message names the file and says how to fix it."""


class CheckpointError(ValueError):
    """A model file that cannot be used; the message names the file and what to pass
    instead (raised by :mod:`bloodseg.modelfile` and :mod:`bloodseg.spec`)."""


class OptionError(ValueError):
    """An option outside its allowed values; the message names the option and the fix
    (raised by :mod:`bloodseg.options` and :mod:`bloodseg.tuning`)."""


#: a user's mistake (bad data, model file or option): said in one line, the fix in it, exit 2
USER_ERRORS = (DataError, CheckpointError, OptionError)


def decode(path: str | Path) -> np.ndarray:
    """Decode any image file as stored (any depth, 1/3/4 channels, BGR order)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    data = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(
            f"{path}: cannot decode this file as an image (corrupt or not an image). "
            "Re-download it or remove it (and its mask) from the dataset."
        )
    return img


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Scale 16-bit or float images to uint8 (8-bit images pass through)."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img / 257.0).round().astype(np.uint8)
    img = img.astype(np.float32)
    hi = float(img.max()) if img.size else 1.0
    scale = 255.0 if hi <= 1.0 else 255.0 / hi
    return np.clip(img * scale, 0, 255).round().astype(np.uint8)


def read_image(path: str | Path, color: str = "rgb", strict: bool = True) -> np.ndarray:
    """Read an image as uint8: HxWx3 RGB (``color="rgb"``) or HxW (``color="gray"``).

    With ``strict`` (datasets), a single-channel file in an RGB run is an error, since
    silently replicating gray into three channels hides a mixed-up dataset. Prediction
    passes ``strict=False`` and accepts gray, RGB or RGBA files of 8 or 16 bit.
    """
    if color not in ("rgb", "gray"):
        raise ValueError(f"color must be 'rgb' or 'gray', got {color!r}")
    img = to_uint8(decode(path))
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        if color == "gray":
            return img
        if strict:
            raise DataError(
                f"{path}: is a single-channel (grayscale) image but this run uses color=rgb. "
                "Use data.color=gray, or convert the file to RGB."
            )
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}.get(img.shape[2])
    if code is None:
        raise DataError(f"{path}: has {img.shape[2]} channels; expected 1, 3 or 4")
    rgb = cv2.cvtColor(img, code)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if color == "gray" else rgb


def read_mask(path: str | Path) -> np.ndarray:
    """Read a binary mask (L or RGB PNG, values {0,255} or {0,1}) as HxW uint8 {0,1}."""
    m = decode(path)
    if m.ndim == 3:
        m = m[:, :, :3]
        if not (np.array_equal(m[:, :, 0], m[:, :, 1]) and np.array_equal(m[:, :, 0], m[:, :, 2])):
            raise DataError(
                f"{path}: mask channels differ; a mask must be gray or have three equal "
                "channels. Convert it to a single-channel {0,255} PNG."
            )
        m = m[:, :, 0]
    values = np.unique(m)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if values.size > 10 else "")
        raise DataError(
            f"{path}: mask is not binary: found values {{{shown}}}; expected {{0, 255}}. "
            "Masks must be lossless PNGs (no JPEG) thresholded to 0/255."
        )
    return (m > 0).astype(np.uint8)


def read_instances(path: str | Path) -> np.ndarray:
    """Read a 16-bit instance-label PNG (0 = background) as int32."""
    lab = decode(path)
    if lab.ndim != 2 or lab.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: instance labels must be a single-channel 8/16-bit PNG")
    return lab.astype(np.int32)


def write_png_atomic(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` (RGB if 3 channels) as PNG via a temp file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"{path}: PNG encoding failed")
    write_bytes_atomic(path, buf.tobytes())
    return path


@functools.cache
def _umask() -> int:
    """The process umask, read once at the first write (not at import: no side effect)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> Path:
    """Write bytes to ``path`` through a temp file in the same folder, fsync and
    ``os.replace``: a crash, a kill or a full disk leaves the old file (or none) under
    ``path``, never part of a new one. An ``OSError`` names ``path``."""
    path = Path(path)
    with naming_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())  # the bytes reach the disk before the name points at them
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    _fsync_dir(path.parent)
    return path


@contextlib.contextmanager
def naming_errors(path: str | Path) -> Iterator[None]:
    """Re-raise an ``OSError`` (same type and errno) with a message naming ``path``, plus the
    fix for a full disk: Python's own "No space left on device" names no file."""
    try:
        yield
    except OSError as err:
        if str(path) in str(err):
            raise
        hint = ("; free space on that disk or write to another folder"
                if err.errno in (errno.ENOSPC, errno.EDQUOT) else "")
        if err.errno is None:
            raise type(err)(f"{path}: {err}{hint}") from err
        raise type(err)(err.errno, f"{path}: {err.strerror}{hint}") from err


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())
