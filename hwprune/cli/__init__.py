"""The ``hwprune`` command line: parse, call the library, render.  Nothing else lives here.

Each sub-command lives in a module of this package exposing ``register(subparsers)``, which adds
its parser (with a one-line ``help``, which ``hwprune --help`` lists) and sets ``func`` to a
function ``(args) -> int``.  A new command appends its module name to :data:`COMMANDS`.
Library errors (:class:`~hwprune.errors.HwPruneError`) and usage errors become one line on
stderr and exit code 2.

Building the parser must stay cheap: every command, ``--help`` included, pays for it.  ``register``
imports nothing heavy (torch, scipy, matplotlib, amaranth, ray, onnx are imported inside ``run``),
and help texts name registered things through :mod:`hwprune.cli.helptext` placeholders, filled in
only when help is printed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import HwPruneError
from .helptext import HelpFormatter

__all__ = ["main", "build_parser", "COMMANDS"]

#: sub-command modules of this package, in the order ``--help`` lists their commands
COMMANDS = [
    "estimate",
    "search",
    "prune",
    "export",
    "hw",        # rtl, sim
    "sweep",
    "report",
    "demo",
]


class _UsageError(HwPruneError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors are one line and exit 2 too; its
    help (and its sub-commands', which are made by this class) fills in helptext placeholders."""

    def __init__(self, *args, formatter_class: type[argparse.HelpFormatter] = HelpFormatter, **kwargs) -> None:
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    """The ``hwprune`` parser with every command of :data:`COMMANDS` registered."""
    parser = _Parser(
        prog="hwprune",
        description="Hardware/software co-design of pruned networks for N:M sparse systolic arrays.",
        epilog="`hwprune COMMAND --help` explains a command, with examples.  Bad input exits with "
               "code 2 and one line on stderr.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for bad input)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except HwPruneError as exc:
        print(f"hwprune: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the library did not wrap (last line of defence)
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"hwprune: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwprune: interrupted", file=sys.stderr)
        return 130


def _one_line(text: str) -> str:
    return " ".join(text.split()) if "\n" in text else text


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
