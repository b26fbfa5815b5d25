"""Lightning's checkpoint writer, made atomic and durable: every ``.ckpt`` a run writes.

Lightning's ``TorchCheckpointIO`` writes through an fsspec transaction whose temp file lies
in the system temp folder; when that is another disk (a tmpfs ``/tmp``, a scratch mount)
the "commit" is a copy into the final name, so a full disk or a kill leaves a truncated
``best.ckpt``/``last.ckpt`` there, and a small ``/tmp`` fails saves that would fit. Here
the checkpoint goes to a temp file next to its final name, is fsynced and renamed
(:func:`bloodseg.io.write_bytes_atomic`): the final name holds the old complete checkpoint
or the new one, never part of one. Every trainer config uses it (``conf/trainer/default.yaml``)::

    plugins:
      - _target_: bloodseg.checkpoint_io.AtomicCheckpointIO
"""

from __future__ import annotations

import io
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from lightning_fabric.utilities.types import _PATH

from bloodseg.io import write_bytes_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are temp file + fsync + rename; remote URLs
    (``s3://`` ...) keep Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            # Lightning's writer raises the clear TypeError for storage_options itself
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # in memory first, as Lightning does: a pickling
        write_bytes_atomic(path, buffer.getbuffer())  # error never touches the disk
