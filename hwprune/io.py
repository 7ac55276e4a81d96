"""Atomic, no-clobber file output shared by every writer in hwprune.

A file is written to a temporary sibling and renamed onto its target, so the target is either
absent, the old file, or the complete new one.  The temporary name records the writer's process
id (``.<name>.hwprune-<pid>-<random>.tmp``): a writer killed with SIGKILL cannot clean up after
itself, so the next write to the same target removes temporaries whose process is gone.

Every failure to write (a parent that is a regular file, a read-only directory, a full disk)
becomes an :class:`~hwprune.errors.ExportError` naming the path, and :func:`check_writable`
finds most of them *before* the expensive work that produces the file.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from .errors import ExportError

__all__ = ["atomic_path", "write_bytes", "write_text", "write_with", "print_json", "check_writable",
           "check_output_dir", "clean_stale_temps", "source_digest"]

_TAG = "hwprune-"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _existing_ancestor(p: Path) -> Path:
    """The nearest ancestor of ``p`` that exists (``p``'s parent folders may be created)."""
    parent = p.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def check_output_dir(path: str | os.PathLike, *, what: str = "output folder") -> Path:
    """ExportError unless ``path`` is a folder we can create files in, or can be created.

    Parameters
    ----------
    path : path
        A folder; missing folders are fine when their nearest existing ancestor is writable.
    what : str
        What the folder is for, starting the message (e.g. ``"cannot write out/x.pt:"``).
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ExportError(f"{what} {p} is a file, not a folder")
    base = p if p.is_dir() else _existing_ancestor(p)
    if not base.is_dir():
        raise ExportError(f"{what} {base} is a file, not a folder")
    try:  # the only reliable test (root passes os.access; read-only mounts do not)
        with tempfile.TemporaryFile(dir=base, prefix=f".{_TAG}probe-"):
            pass
    except OSError as exc:
        raise ExportError(f"{what} cannot create files in {base} ({_reason(exc)})") from None
    return p


def check_writable(path: str | os.PathLike, *, force: bool) -> Path:
    """Refuse a target we must not or cannot write; the error names the path.

    Raises :class:`~hwprune.errors.ExportError` when the file exists and ``force`` is false, when
    it is a folder, or when its folder cannot be created or written to.
    """
    p = Path(path)
    if p.is_dir():
        raise ExportError(f"{p} is a folder, not a file")
    if p.exists() and not force:
        raise ExportError(f"{p} exists; pass --force (force=True) to overwrite it")
    check_output_dir(p.parent if str(p.parent) else Path("."), what=f"cannot write {p}:")
    return p


def clean_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``target`` left by hwprune processes that no longer run."""
    t = Path(target)
    removed = []
    if not t.parent.is_dir():
        return removed
    for tmp in t.parent.glob(f".{t.name}.{_TAG}*.tmp"):
        pid_text = tmp.name[len(f".{t.name}.{_TAG}"):].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


@contextmanager
def atomic_path(path: str | os.PathLike, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    Nothing is left half-written: on any exception the temporary file is removed.  Operating
    system failures become :class:`~hwprune.errors.ExportError` naming ``path``.
    """
    target = check_writable(path, force=force)
    clean_stale_temps(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_TAG}{os.getpid()}-", suffix=".tmp",
                                   dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise ExportError(f"cannot write {target}: {_reason(exc)}") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise ExportError(f"cannot write {target}: {_reason(exc)}") from None
    except OSError as exc:  # the writer's own I/O failure (disk full …)
        raise ExportError(f"cannot write {target}: {_reason(exc)}") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, force=force) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_path`)."""
    return write_bytes(path, text.encode(), force=force)


def print_json(obj: object, out: str | os.PathLike | None = None, *, force: bool = False) -> None:
    """Print ``obj`` as indented JSON (what the benchmarks report) and, with ``out``, also write
    it there atomically."""
    import json

    text = json.dumps(obj, indent=2)
    print(text)
    if out:
        write_text(out, text + "\n", force=force)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None], *, force: bool = False) -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``torch.save``/``onnx.save``) and rename atomically."""
    with atomic_path(path, force=force) as tmp:
        writer(tmp)
    return Path(path)


@functools.lru_cache(maxsize=8)
def source_digest(package: str, suffixes: tuple[str, ...] = (".py", ".v")) -> str:
    """sha256 of the files of ``package`` ending in ``suffixes`` (names and contents, sorted),
    found without importing it: what a cache of the package's products (a Verilator build, a
    synthesis result) must be keyed by, so that changing a generator invalidates it."""
    import hashlib
    from importlib.util import find_spec

    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"{package!r} is not a package")
    folder = Path(next(iter(spec.submodule_search_locations)))
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.name.endswith(suffixes)):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
