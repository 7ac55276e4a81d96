"""Atomic, no-clobber file output shared by every writer in hwprune."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import ExportError

__all__ = ["atomic_path", "write_bytes", "write_text", "write_with", "check_writable"]


def check_writable(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse to overwrite an existing file unless ``force``; the error names the path."""
    p = Path(path)
    if p.exists() and not force:
        raise ExportError(f"{p} exists; pass --force (force=True) to overwrite it")
    if p.exists() and p.is_dir():
        raise ExportError(f"{p} is a directory, not a file")
    return p


@contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Nothing is left half-written: on any exception the temporary file is removed.
    """
    target = check_writable(path, force=force)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False) -> Path:
    with atomic_path(path, force=force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    return write_bytes(path, text.encode(), force=force)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None], *, force: bool = False) -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``torch.save``/``onnx.save``) and rename atomically."""
    with atomic_path(path, force=force) as tmp:
        writer(tmp)
    return Path(path)
