"""Argument types shared by the commands: each rejects a bad value at parse time, naming it.

Used as ``type=`` in ``add_argument``; argparse turns the :class:`argparse.ArgumentTypeError`
into ``hwprune CMD: argument --flag: …`` (one line, exit code 2, see :mod:`hwprune.cli`).
"""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonnegative_int", "density", "positive_number"]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, not {text!r}") from None


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    v = _int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return v


def nonnegative_int(text: str) -> int:
    """An integer ≥ 0 (seeds, epoch counts that may be zero)."""
    v = _int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be an integer ≥ 0, not {text!r}")
    return v


def _float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return v


def positive_number(text: str) -> float:
    """A finite number > 0."""
    v = _float(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text!r}")
    return v


def density(text: str) -> float:
    """A fraction kept, in (0, 1]."""
    v = _float(text)
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a density in (0, 1], not {text!r}")
    return v


def import_path(text: str) -> str:
    """``package.module:attribute``: user code named by import path (checked, not imported)."""
    from ..userland import is_import_path

    if not is_import_path(text):
        raise argparse.ArgumentTypeError(f"must be an import path 'package.module:function', not {text!r}")
    return text


def add_data_argument(parser: argparse.ArgumentParser, use: str) -> None:
    """``--data pkg.mod:make_loaders``, the user's data, worded once for every command; ``use``
    says what this command does with it."""
    parser.add_argument("--data", default=None, metavar="PKG.MOD:MAKE_LOADERS", type=import_path,
                        help="your data: a function returning (train_loader, val_loader[, loss_fn[, "
                             f"metric]]), a dict of hwprune.Workload arguments or a Workload; {use}")
