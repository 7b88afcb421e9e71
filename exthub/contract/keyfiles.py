"""Small file helpers for key material: create a file exactly once, atomically, with mode 0600."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def read_or_create_once(path: Path, content: bytes, *, mode: int = 0o600) -> bytes:
    """Return the content of ``path``, creating it with ``content`` first if it does not exist.

    The file is written to a temporary file in the same directory and published with ``os.link``
    (which fails if the target exists), so concurrent first starts in several processes agree on one
    content and nobody ever reads a half-written file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
    return path.read_bytes()


def replace_atomically(path: Path, content: bytes, *, mode: int = 0o644) -> None:
    """Write ``content`` to ``path`` through a temporary file and ``os.replace`` (readers never see halves)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
