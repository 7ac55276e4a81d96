"""``hwprune demo``: the whole flow on built-in data, with a progress bar per stage."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Self

from ..config import preset_names
from .args import nonnegative_int
from .helptext import RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo", help="the whole flow on built-in data: train, plan, prune, int8, RTL, simulate",
        description="Train the digits CNN, estimate it on the array, choose a per-layer plan under "
                    "a cycle budget, prune and fine-tune by it, quantize to int8, export, generate "
                    "the RTL (with yosys cell counts) and run the pruned layers on the "
                    "Verilator-simulated array, checked bit for bit and cycle for cycle. Writes "
                    "DIR/summary.json (every figure and the wall time of each stage) and "
                    "DIR/report.html (one self-contained page; rebuild it with `hwprune report DIR`).",
        epilog="examples:\n"
               "  hwprune demo\n"
               "  hwprune demo --out run1 --array os16x16 --budget 0.4 --force\n"
               "  hwprune demo --out quick --epochs 4 --images 64 --no-stats --json\n"
               "Exit code "
               "1 when a check fails (the simulated RTL disagrees with the integer reference or "
               "the cost model); the summary and report are still written.",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("--out", default="hwprune_demo", metavar="DIR", help="output directory (default: hwprune_demo)")
    p.add_argument("--array", default="os8x8", metavar="PRESET|FILE.toml",
                   help=f"array preset ({', '.join(preset_names())}) or a TOML file (default: os8x8)")
    p.add_argument("--budget", type=float, default=0.5,
                   help="cycle budget as a fraction of the dense model's cycles (default 0.5)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="training, pruning and simulation seed")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the task's recipe)")
    p.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs after pruning (default 5)")
    p.add_argument("--images", type=int, default=None,
                   help="test images run through the simulated RTL (default: the whole test set)")
    p.add_argument("--criterion", default="l1", help="pruning criterion (default l1)")
    p.add_argument("--no-stats", dest="stats", action="store_false", help="skip yosys synthesis (~30 s per design)")
    p.add_argument("--force", action="store_true", help="replace an existing DIR")
    p.add_argument("--json", action="store_true", help="print summary.json instead of tables")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..demo import DemoOptions, run_demo

    options = DemoOptions(out=Path(args.out), array=args.array, budget=args.budget, seed=args.seed,
                          epochs=args.epochs, finetune_epochs=args.finetune_epochs, images=args.images,
                          criterion=args.criterion, stats=args.stats, force=args.force)
    console = Console(stderr=True)
    with _RichEvents(console) as events:
        summary = run_demo(options, events)
    failed = any(s["status"] == "failed" for s in summary["stages"])
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        _render(summary, Path(args.out))
    return 1 if failed else 0


class _RichEvents:
    """rich progress: one bar per stage, on stderr so --json stdout stays clean."""

    def __init__(self, console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console)
        self.task = None

    def __enter__(self) -> Self:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, stage: str, total: int | None) -> None:
        self.task = self.progress.add_task(stage, total=total, note="")

    def advance(self, steps: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, steps)

    def finish(self, record) -> None:
        if self.task is None:
            self.task = self.progress.add_task(record.name, total=None, note="")
        total = self.progress.tasks[self.task].total or 1
        mark = "[green]done[/]" if record.status == "done" else f"[yellow]{record.status}[/]"
        self.progress.update(self.task, total=total, completed=total, note=mark)
        self.task = None


def _render(summary: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    from ..report import headline_rows

    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    st = Table(title="stages", title_justify="left")
    for col in ("stage", "status", "wall s", "CPU s", "what happened"):
        st.add_column(col, justify="right" if col.endswith(" s") else "left", overflow="fold")
    for s in summary["stages"]:
        style = None if s["status"] == "done" else "red"
        st.add_row(s["name"], s["status"], f"{s['seconds']:.1f}", f"{s['cpu_seconds']:.1f}", s["note"], style=style)
    st.add_row("total", "", f"{summary['total_seconds']:.1f}", f"{summary['total_cpu_seconds']:.1f}", "")
    console.print(st)
    t = Table(title=f"hwprune demo: {summary['model']} on {summary['array']['name']}", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for label, value in headline_rows(summary):
        t.add_row(label, value)
    console.print(t)
    console.print(f"wrote {out / 'summary.json'} and {out / 'report.html'}")
