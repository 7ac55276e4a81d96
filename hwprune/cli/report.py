"""``hwprune report DIR``: rebuild DIR/report.html from DIR/summary.json alone."""

from __future__ import annotations

import argparse

from .helptext import RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="rebuild a demo's report.html from its summary.json",
        description="Render DIR/summary.json (written by `hwprune demo`) to DIR/report.html: one "
                    "self-contained page with the array, per-layer cycles, utilisation, energy, "
                    "the search's Pareto front, masks, accuracy by stage, RTL cells, simulation "
                    "exactness and exported files with their sha256.",
        epilog="example:\n  hwprune report hwprune_demo --force",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("dir", metavar="DIR", help="a directory written by `hwprune demo`")
    p.add_argument("--force", action="store_true", help="overwrite an existing report.html")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..report import write_report

    path = write_report(args.dir, force=args.force)
    print(f"wrote {path}")
    return 0
