"""``hwprune sweep``: which array for which pruned model, over a design space, on Ray or in-process."""

from __future__ import annotations

import argparse
import json

from .helptext import RawDescriptionHelpFormatter


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep", help="design-space sweep: Pareto fronts of arrays × patterns per model",
        description="Evaluate every design point of a space file (rows, cols, M, N-sets, fold "
                    "overlap, SRAM sizes, dataflow) for each model and pattern: cycles and energy "
                    "from the vectorised cost model, yosys cells / iCE40 LUTs (and nextpnr fmax "
                    "with --fmax) of each distinct RTL config, accuracy after a short fine-tune for "
                    "built-in tasks.  Results stream into DIR/parts/*.parquet (resumable) and are "
                    "joined into DIR/points.parquet, with Pareto fronts (fronts.csv, fronts.json), "
                    "plots (DIR/plots/*.png) and one recommendation per model and cell budget.",
        epilog="examples:\n"
               "  hwprune sweep digits_cnn resnet18 --space space.toml --out sweep/\n"
               "  hwprune sweep bert_layer --space space.toml --out sweep/ --engine ray\n"
               "  hwprune sweep resnet18 --space space.toml --out sweep/ --resume   # after an interruption\n"
               "The space file format is documented in hwprune.sweep.space (python -m pydoc).",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", metavar="MODEL", help="zoo names, .onnx, SCALE-Sim .csv or checkpoints")
    p.add_argument("--space", required=True, metavar="SPACE.toml", help="the design space and patterns")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="run tasks in-process (local) or as Ray tasks (default local)")
    p.add_argument("--address", metavar="ADDR", help="Ray cluster address (default: a local ray.init)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep in DIR")
    p.add_argument("--force", action="store_true", help="start over in a DIR that holds a sweep")
    p.add_argument("--no-area", dest="area", action="store_false", help="skip yosys (no cells: faster)")
    p.add_argument("--no-ice40", dest="ice40", action="store_false", help="skip synth_ice40 LUT/FF counts")
    p.add_argument("--fmax", action="store_true", help="nextpnr-ice40 fmax estimate per RTL config (slow)")
    p.add_argument("--no-accuracy", dest="accuracy", action="store_false", help="skip fine-tunes")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="accuracy a recommendation may lose vs dense (fraction, default 0.01)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..sweep.pareto import write_answers
    from ..sweep.run import read_points, run_sweep
    from ..sweep.space import load_space

    if args.address and args.engine != "ray":
        raise ConfigError("--address needs --engine ray")
    space = load_space(args.space)
    if args.json:
        result = run_sweep(args.models, space, args.out, engine=args.engine, address=args.address,
                           resume=args.resume, force=args.force, area=args.area, ice40=args.ice40,
                           fmax=args.fmax, accuracy=args.accuracy)
    else:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn()) as bar:
            ids: dict[str, int] = {}
            names = {"cost": "cost-model batches", "area": "yosys RTL configs", "acc": "fine-tunes",
                     "plan": "search plans"}

            def progress(kind: str, done: int, total: int) -> None:
                if kind not in ids:
                    ids[kind] = bar.add_task(names[kind], total=total)
                bar.update(ids[kind], completed=done)

            result = run_sweep(args.models, space, args.out, engine=args.engine, address=args.address,
                               resume=args.resume, force=args.force, area=args.area, ice40=args.ice40,
                               fmax=args.fmax, accuracy=args.accuracy, on_progress=progress)
    summary = write_answers(args.out, read_points(args.out).to_pylist(), max_drop=args.max_drop)
    info = {"out": str(result.out), "points": result.rows, "computed": result.computed,
            "skipped": result.skipped, "seconds": round(result.seconds, 2), "engine": result.engine,
            "models": {m: {"front_size": v["front_size"], "recommendations": [r["line"] for r in v["recommendations"]]}
                       for m, v in summary["models"].items()}}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    console = Console()
    console.print(f"{result.rows:,} points in {result.out}/points.parquet ({result.seconds:.1f} s, "
                  f"{result.engine}); computed {result.computed}, already done {result.skipped}")
    for model, v in info["models"].items():
        console.print(f"[bold]{model}[/bold]: {v['front_size']} points on the Pareto front")
        for line in v["recommendations"]:
            console.print(f"  {line}")
    return 0
