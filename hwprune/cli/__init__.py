"""The ``hwprune`` command line: parse, call the library, render.  Nothing else lives here.

Each sub-command lives in a module of this package exposing ``register(subparsers)``, which adds
its parser and sets ``func`` to a function ``(args) -> int``.  Library errors
(:class:`~hwprune.errors.HwPruneError`) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import HwPruneError

__all__ = ["main", "build_parser"]

#: sub-command modules, in the order ``--help`` lists them
COMMAND_MODULES = ("estimate", "search", "prune", "export", "hw", "report", "demo")


class _UsageError(HwPruneError):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting, so usage errors are one line and exit 2 too."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hwprune",
        description="Hardware/software co-design of pruned networks for N:M sparse systolic arrays.\n"
                    "  estimate  cycles, bytes and energy of each layer on an array\n"
                    "  search    choose a sparsity pattern per layer under a cycle budget\n"
                    "  prune     prune (and fine-tune) a built-in task or checkpoint\n"
                    "  rtl, sim  generate the sparse MAC array and simulate it cycle-accurately\n"
                    "  demo      the whole flow on built-in data",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except HwPruneError as exc:
        print(f"hwprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
