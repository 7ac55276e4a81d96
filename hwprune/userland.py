"""User code by import path: ``package.module:function``, as uvicorn and Hydra name it.

The command line reaches a user's model, data and example inputs through import paths
(``hwprune prune mypkg.models:make_model --data mypkg.data:make_loaders``), and checkpoints
record the factory that rebuilds their model the same way.  Everything that can go wrong in
*their* code — a module that does not import, a missing attribute, a factory that raises, a
value of the wrong type — becomes one :class:`~hwprune.errors.UserCodeError` whose message names
the import path and the exception, so the CLI prints one line, not a traceback of ours.  (The
original exception stays chained as ``__cause__`` for Python callers who want it.)

The current working directory is put on ``sys.path`` (as ``uvicorn`` does), so
``hwprune prune models:make_model`` finds ``./models.py``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any

from .errors import HwPruneError, UserCodeError

__all__ = ["is_import_path", "resolve", "call", "one_line", "import_path_of"]


def one_line(exc: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` (at most ``limit`` characters)."""
    text = str(exc).strip().splitlines()
    msg = text[0][:limit] if text else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _split(path: str) -> tuple[str, str] | None:
    if not isinstance(path, str) or path.count(":") != 1:
        return None
    mod, _, attr = path.strip().partition(":")
    parts = mod.split(".") + attr.split(".")
    if not mod or not attr or not all(p.isidentifier() for p in parts):
        return None
    return mod, attr


def is_import_path(text: object) -> bool:
    """True for text of the form ``package.module:attribute`` (attribute may be dotted)."""
    return isinstance(text, str) and _split(text) is not None


def resolve(path: str, *, what: str = "object") -> Any:
    """The object an import path names.

    Parameters
    ----------
    path : str
        ``package.module:attribute`` (``attribute`` may be dotted: ``mod:Class.method``).
    what : str
        What the object is for, used in error messages ("model factory", "data loaders").

    Raises
    ------
    UserCodeError
        The path is malformed, its module does not import (any exception raised while
        importing is reported), or the attribute is missing.
    """
    parsed = _split(path)
    if parsed is None:
        raise UserCodeError(f"{what} must be an import path 'package.module:function', not {path!r}")
    mod, attr = parsed
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(mod)
    except Exception as exc:  # noqa: BLE001 - any failure inside user code is reported, not raised raw
        raise UserCodeError(f"{what} {path!r}: cannot import module {mod!r} ({one_line(exc)})") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UserCodeError(f"{what} {path!r}: {type(obj).__name__} {getattr(obj, '__name__', mod)!r} "
                                f"has no attribute {part!r}") from None
    return obj


def call(target: str | Callable[..., Any], *args: Any, what: str = "function", **kwargs: Any) -> Any:
    """Call user code (an import path or a callable); its exceptions become one line.

    :class:`~hwprune.errors.HwPruneError` raised by hwprune code the user called passes through
    unchanged.

    Raises
    ------
    UserCodeError
        ``target`` does not resolve, is not callable, or raised (message: the import path or
        the callable's name, and ``Type: message``).
    """
    fn = resolve(target, what=what) if isinstance(target, str) else target
    label = target if isinstance(target, str) else import_path_of(fn) or repr(fn)
    if not callable(fn):
        raise UserCodeError(f"{what} {label!r} is not callable (it is a {type(fn).__name__})")
    try:
        return fn(*args, **kwargs)
    except HwPruneError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code may raise anything
        raise UserCodeError(f"{what} {label!r} raised {one_line(exc)}") from exc


def import_path_of(obj: Any) -> str | None:
    """``module:qualname`` of a module-level function or class, or None (lambdas, locals)."""
    mod, qual = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not mod or not qual or "<" in qual or mod == "__main__":
        return None
    return f"{mod}:{qual}"
