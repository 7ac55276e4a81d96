"""Help texts that name registered things, filled in from the registries only when help is printed.

The registries of criteria, tasks and export formats live beside code that imports torch (and the
search package beside scipy); importing them to build the parser made every ``hwprune`` command,
``--help`` included, pay ~2 s before doing anything.  So a help string, description or epilog
writes a placeholder such as ``%(criteria)s`` (argparse's own ``%(default)s`` syntax) and the
formatters below replace it by the registry's names at the moment help is formatted.  The registry
stays the one list: a newly registered criterion or task shows in ``--help`` with no edit here.

Commands validate names against the same registries in their ``run`` function, so nothing about
what is accepted depends on this module.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

__all__ = ["LAZY_TEXTS", "expand", "HelpFormatter", "RawDescriptionHelpFormatter"]


def _criteria() -> str:
    from ..prune.criteria import criterion_names

    return ", ".join(criterion_names())


def _tasks() -> str:
    from ..tasks import task_names

    return ", ".join(task_names())


def _formats() -> str:
    from ..export import ALL_FORMATS

    return ",".join(ALL_FORMATS)


def _candidates_syntax() -> str:
    from ..search.candidates import CANDIDATES_SYNTAX

    return CANDIDATES_SYNTAX


#: placeholder name → the text it stands for, computed (and its registry imported) on demand
LAZY_TEXTS: dict[str, Callable[[], str]] = {
    "criteria": _criteria,
    "tasks": _tasks,
    "formats": _formats,
    "candidates_syntax": _candidates_syntax,
}

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def expand(text: str) -> str:
    """``text`` with every ``%(NAME)s`` of :data:`LAZY_TEXTS` filled in; argparse's own
    placeholders (``%(prog)s``, ``%(default)s``…) are left for argparse."""
    return _PLACEHOLDER.sub(lambda m: LAZY_TEXTS[m[1]]() if m[1] in LAZY_TEXTS else m[0], text)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter (wrapped text) with :data:`LAZY_TEXTS` placeholders filled in."""

    # the two places argparse reads help text: an action's help, and free text (description,
    # epilog, argument-group descriptions); ArgumentDefaultsHelpFormatter hooks the first the same way
    def _get_help_string(self, action: argparse.Action) -> str:
        return expand(super()._get_help_string(action))

    def add_text(self, text: str | None) -> None:
        super().add_text(expand(text) if text else text)


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """argparse's raw-description formatter (examples keep their lines) with placeholders filled in."""
