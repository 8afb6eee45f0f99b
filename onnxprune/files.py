"""Atomic file writes: a temporary file in the target directory, then a rename, so a
reader never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(data: bytes | str, path: str | os.PathLike) -> None:
    """Write `data` (text as UTF-8) to `path` atomically, with the usual permissions."""
    target = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    with tempfile.NamedTemporaryFile("wb", dir=target.parent or ".", delete=False,
                                     suffix=".tmp", prefix=".onnxprune-") as handle:
        handle.write(payload)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(handle.name, 0o666 & ~umask)
    os.replace(handle.name, target)
