"""``hwprune estimate``: cycles, bytes and energy of every layer of a model on an array."""

from __future__ import annotations

import argparse
import json

from ..config import load_array, preset_names
from ..cost import ModelCost, estimate_model
from ..patterns import PATTERN_SYNTAX, Dense, parse_pattern
from .args import positive_int
from .helptext import RawDescriptionHelpFormatter

PATTERN_HELP = (f"sparsity pattern applied to every weight layer: {PATTERN_SYNTAX}. Default: each "
                "layer's own (a CSV Sparsity column, a pruned checkpoint), else dense")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "estimate", help="cycles, bytes and energy per layer on an array",
        description="Estimate each layer's cycles (compute, fill/drain, stall), utilization, bytes "
                    "moved and energy on an output-stationary N:M sparse systolic array.",
        epilog="examples:\n"
               "  hwprune estimate resnet18 --array os16x16 --pattern 2:4\n"
               "  hwprune estimate model.onnx --array examples/array.toml --json\n"
               "  hwprune estimate examples/topology.csv --array os32x32   # SCALE-Sim topology\n"
               "  hwprune estimate digits_cnn --plan plan.json    # a plan from hwprune search\n"
               "  hwprune estimate mypkg.models:make_model --input-shape 1,3,32,32   # your torch model\n"
               "MODEL is a zoo name, an .onnx file, a SCALE-Sim .csv, a checkpoint saved by "
               "`hwprune prune`, or the import path of a function returning a torch.nn.Module.",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="zoo name, .onnx, SCALE-Sim .csv, hwprune .pt checkpoint, or pkg.mod:make_model")
    p.add_argument("--input-shape", default=None, metavar="1,3,32,32",
                   help="pkg.mod:make_model only: the shape of the example input (zeros)")
    p.add_argument("--input-dtype", default="float32", choices=("float32", "float64", "int64", "int32"),
                   help="dtype of the --input-shape tensor (int64 for token ids); default float32")
    p.add_argument("--batch", type=positive_int, default=1, metavar="N",
                   help="checkpoints only: cost N examples at once (the recorded example input, "
                        "batch 1, repeated; default 1)")
    p.add_argument("--example", default=None, metavar="pkg.mod:example_inputs",
                   help="pkg.mod:make_model only: a function returning the example input tensor(s)")
    p.add_argument("--array", default=None, metavar="PRESET|FILE.toml",
                   help=f"array preset ({', '.join(preset_names())}) or a TOML file (default: the "
                        "plan's array, else os16x16)")
    p.add_argument("--pattern", default=None, help=PATTERN_HELP)
    p.add_argument("--plan", default=None, metavar="PLAN.json",
                   help="cost a per-layer plan (hwprune search writes one) without pruning: the "
                        "cycles the search predicted")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.plan is not None and args.pattern is not None:
        raise ConfigError("give at most one of --pattern and --plan")
    plan = None
    if args.plan is not None:  # hwprune.prune and hwprune.search import torch and scipy: only a plan needs them
        from ..prune.plan import load_plan

        plan = load_plan(args.plan)
    array = load_array(args.array or (plan.array if plan else "os16x16"))
    pattern = parse_pattern(args.pattern) if args.pattern is not None else None
    specs = _user_or_file(args)
    if plan is not None:
        from ..search.costs import plan_cost

        cost = plan_cost(specs, plan, array)
    else:
        cost = estimate_model(specs, array, pattern)
    dense = estimate_model(specs, array, Dense(), masks={}) if pattern is not None or plan or any(
        layer.pattern != "dense" for layer in cost.layers) else cost
    if args.json:
        out = cost.to_dict()
        out["model"] = args.model
        out["total"]["speedup_vs_dense"] = dense.cycles / cost.cycles
        if plan is not None:
            out["plan"] = args.plan
            out["total"]["plan_predicted_cycles"] = (plan.search or {}).get("predicted", {}).get("cycles")
        print(json.dumps(out, indent=2))
    else:
        render(cost, dense, title=f"{args.model} on {array.name}")
    return 0


def _user_or_file(args: argparse.Namespace) -> list:
    """Layers of MODEL: a user's factory by import path, else :func:`hwprune.importers.load_model`."""
    from pathlib import Path

    from ..errors import ConfigError
    from ..importers import load_model
    from ..usermodel import user_layers
    from ..userland import is_import_path

    if is_import_path(args.model) and not Path(args.model).exists():
        if args.batch != 1:
            raise ConfigError(f"--batch {args.batch} applies to checkpoints; give a user model's batch "
                              "in --input-shape or --example")
        return user_layers(args.model, input_shape=args.input_shape, example=args.example,
                           dtype=args.input_dtype)
    if args.input_shape is not None or args.example is not None:
        raise ConfigError(f"--input-shape and --example apply to a model given by import path, not {args.model!r}")
    return load_model(args.model, batch=args.batch)


def _passes(layer) -> str:
    """Passes, their outer loop when there are several, and the K split: "12 rows K/3"."""
    if layer.passes == 1 or not layer.pass_order:
        return f"{layer.passes:,}"
    return f"{layer.passes:,} {layer.pass_order.split('-')[0]}" + (f" K/{layer.k_split}" if layer.k_split > 1 else "")


def render(cost: ModelCost, dense: ModelCost, *, title: str) -> None:
    """Rich table of per-layer costs with a totals row and the speedup over dense."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col, just in (("layer", "left"), ("M", "right"), ("K", "right"), ("N", "right"),
                      ("pattern", "left"), ("cycles", "right"), ("stall", "right"), ("passes", "right"),
                      ("util", "right"), ("KiB moved", "right"), ("µJ", "right")):
        if col == "layer":
            t.add_column(col, justify=just, min_width=14, overflow="fold")
        else:
            t.add_column(col, justify=just, no_wrap=True)
    for layer in cost.layers:
        name = layer.name if layer.groups == 1 else f"{layer.name} (g={layer.groups})"
        t.add_row(name, f"{layer.M:,}", f"{layer.K:,}", f"{layer.N:,}", layer.pattern,
                  f"{layer.cycles:,}", f"{layer.stall_cycles:,}", _passes(layer), f"{layer.utilization:.0%}",
                  f"{(layer.bytes.sram + layer.bytes.dram) / 1024:,.1f}", f"{layer.energy_pj / 1e6:,.2f}")
    traffic = cost.bytes
    util = cost.utilization
    t.add_section()
    t.add_row("total", "", "", "", "", f"{cost.cycles:,}", f"{int(cost.total('stall_cycles')):,}",
              f"{int(cost.total('passes')):,}", f"{util:.0%}",
              f"{(traffic.sram + traffic.dram) / 1024:,.1f}", f"{cost.total('energy_pj') / 1e6:,.2f}",
              style="bold")
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)  # piped: rich would wrap at 80 and fold the table
    console.print(t)
    if cost.array.dataflow == "os":
        console.print(f"stall: cycles the array waits for the DMA ({'double' if cost.array.double_buffer else 'single'}"
                      f"-buffered, {cost.array.dram_bytes_per_cycle:g} B/cycle) · passes: SRAM-sized pieces "
                      "of a layer, cols/rows outer, K/n: K split")
    console.print(f"latency {cost.latency_us:,.1f} µs at {cost.array.clock_mhz:g} MHz · "
                  f"speedup over dense {dense.cycles / cost.cycles:.2f}× · "
                  f"energy {dense.total('energy_pj') / cost.total('energy_pj'):.2f}× lower")
    notes = sorted({layer.note for layer in cost.layers if layer.note})
    for note in notes:  # e.g. a sparse pattern costed dense on a WS/IS array
        console.print(f"note: {note}")
