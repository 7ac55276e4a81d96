"""``hwprune search``: choose each layer's sparsity pattern under a hardware budget, exactly."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from ..config import preset_names
from .args import add_data_argument, density, nonnegative_int, positive_int, positive_number
from .helptext import RawDescriptionHelpFormatter

CRITERION_HELP = "importance criterion that makes each candidate's mask, as prune does (default: l1)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search", help="choose a sparsity pattern per layer under a cycle/energy/bytes budget",
        description="Measure how much every layer suffers under every candidate pattern (one shot, "
                    "cached), cost every candidate on the array with its real mask, and pick one "
                    "pattern per layer minimising the summed loss increase under the budget — an "
                    "exact multiple-choice knapsack (MILP, HiGHS). Writes a plan that `hwprune prune "
                    "--plan` applies and `hwprune estimate --plan` costs, to the same cycle.",
        epilog="examples:\n"
               "  hwprune search digits_cnn --array os16x16 --budget 0.5 --out plan.json\n"
               "  hwprune search transformer --cycles 60000 --energy-uj 40 --criterion taylor --out t.json --pareto t.png\n"
               "  hwprune search mlp --weight-kib 64 --candidates dense,2:4,1:4,channel:0.5 --out mlp.json\n"
               "  hwprune search cnn24.pt --budget 0.35 --candidates=-unstructured --out tighter.json\n"
               "  hwprune search mypkg.models:trained --data mypkg.data:make_loaders --budget 0.5 --out mine.json\n"
               "then: hwprune prune digits_cnn --plan plan.json --out pruned.pt; "
               "hwprune estimate digits_cnn --plan plan.json\n"
               "built-in tasks: %(tasks)s",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="TASK_OR_CKPT",
                   help="built-in task (trained first, seeded as prune does), a checkpoint saved by "
                        "hwprune prune, or pkg.module:make_model (a trained nn.Module; needs --data)")
    add_data_argument(p, "calibration batches come from train, sensitivity from val")
    p.add_argument("--array", default="os16x16", metavar="PRESET|FILE.toml",
                   help=f"array preset ({', '.join(preset_names())}) or a TOML file (default: os16x16)")
    b = p.add_argument_group("budget (at least one; several at once are all met)")
    b.add_argument("--budget", type=density, default=None, metavar="FRACTION",
                   help="cycles ≤ FRACTION × the unpruned model's cycles, e.g. 0.5")
    b.add_argument("--cycles", type=positive_int, default=None, metavar="N", help="cycles ≤ N (compute + fill + stall)")
    b.add_argument("--energy-uj", type=positive_number, default=None, metavar="E", help="energy per inference ≤ E µJ")
    b.add_argument("--weight-kib", type=positive_number, default=None, metavar="B",
                   help="stored weights and N:M indices ≤ B KiB")
    p.add_argument("--criterion", default="l1", metavar="NAME", help=CRITERION_HELP + "; known: %(criteria)s")
    p.add_argument("--candidates", default=None, metavar="LIST", help="%(candidates_syntax)s" +
                   " (default: dense, the array's N:M and one below, channel 0.75/0.5/0.25/0.125, "
                   "tile-aligned blocks 0.5/0.25, unstructured 0.5/0.25); "
                   "write --candidates=-unstructured when the list starts with '-'")
    p.add_argument("--sensitivity", choices=("measured", "fisher"), default="measured",
                   help="measured: one-shot validation loss per layer × candidate (cached on disk); "
                        "fisher: OBD ½·F·w² proxy, no extra forward passes")
    p.add_argument("--objective", choices=("loss", "accuracy"), default="loss",
                   help="minimise the summed validation-loss increase (default) or accuracy drop")
    p.add_argument("--method", choices=("exact", "greedy"), default="exact",
                   help="exact (MILP optimum, default) or greedy (NetAdapt-style baseline)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of training and calibration (default 0)")
    p.add_argument("--train-epochs", type=positive_int, default=None, help="epochs of the baseline training of a task")
    p.add_argument("--calib-batches", type=positive_int, default=8, help="calibration batches of the criterion (default 8)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="sensitivity cache (default $HWPRUNE_CACHE/sensitivity or ~/.cache/hwprune/sensitivity)")
    p.add_argument("--no-cache", action="store_true", help="measure everything again and cache nothing")
    p.add_argument("--out", required=True, metavar="PLAN.json", help="plan to write")
    p.add_argument("--pareto", default=None, metavar="PNG",
                   help="also draw predicted accuracy loss vs cycles: exact front, greedy front, uniform patterns")
    p.add_argument("--force", action="store_true", help="overwrite --out / --pareto if they exist")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (no progress bars)")
    p.set_defaults(func=run)


def budget_from_args(args: argparse.Namespace):
    """The :class:`~hwprune.search.Budget` of the budget options (ConfigError if none)."""
    from ..errors import ConfigError
    from ..search import Budget

    if all(v is None for v in (args.budget, args.cycles, args.energy_uj, args.weight_kib)):
        raise ConfigError("give a budget: --budget FRACTION, --cycles N, --energy-uj E and/or --weight-kib B")
    return Budget(fraction=args.budget, cycles=args.cycles,
                  energy_pj=None if args.energy_uj is None else args.energy_uj * 1e6,
                  weight_bytes=None if args.weight_kib is None else int(args.weight_kib * 1024))


def load_source(args: argparse.Namespace, *, progress: bool):
    """(trained model, workload) of ``TASK_OR_CKPT`` and ``--data``."""
    from torch import nn

    from ..checkpoint import load_checkpoint
    from ..errors import ConfigError
    from ..tasks import load_task
    from ..train import train_task
    from ..usermodel import checkpoint_workload
    from ..userland import call, is_import_path
    from ..workload import check_workload, workload_from

    data = workload_from(call(args.data, what="data loaders"), source=args.data) if args.data else None
    source = Path(args.source)
    if is_import_path(args.source) and not source.is_file():
        if data is None:
            raise ConfigError(f"{args.source}: a model given by import path needs --data PKG.MOD:FUNC")
        model = call(args.source, what="model factory")
        if not isinstance(model, nn.Module):
            raise ConfigError(f"{args.source} returned a {type(model).__name__}, not a torch.nn.Module")
    elif source.suffix.lower() in (".pt", ".pth") or source.is_file():
        ckpt = load_checkpoint(source)
        model, data = ckpt.model, data or checkpoint_workload(ckpt, source)
    else:
        task = load_task(args.source)
        data = data or task
        model, _ = train_task(task, seed=args.seed, epochs=args.train_epochs, progress=progress)
    check_workload(model, data)
    return model, data


def run(args: argparse.Namespace) -> int:
    from ..config import load_array
    from ..io import check_writable
    from ..prune import save_plan
    from ..prune.criteria import get_criterion
    from ..search import parse_candidates, plot_pareto, search

    # every cheap check before minutes of training and measuring
    check_writable(args.out, force=args.force)
    if args.pareto:
        check_writable(args.pareto, force=args.force)
    budget = budget_from_args(args)
    array = load_array(args.array)
    parse_candidates(args.candidates, array)
    get_criterion(args.criterion)
    progress = not args.json

    model, task = load_source(args, progress=progress)
    result = search(model, task, array, budget, criterion=args.criterion, candidates=args.candidates,
                    sensitivity=args.sensitivity, objective=args.objective, method=args.method,
                    seed=args.seed, calib_batches=args.calib_batches, cache_dir=args.cache_dir,
                    use_cache=not args.no_cache, progress=progress)
    front = result.pareto() if args.pareto else None
    save_plan(args.out, result.plan, force=args.force)
    if front is not None:
        plot_pareto(front, args.pareto, force=args.force,
                    title=f"{task.name} on {array.name}: predicted loss vs cycles")
    if args.json:
        out = {"source": args.source, "task": task.name, "out": args.out, "pareto_png": args.pareto,
               "selection": result.selection.to_dict(), "plan": result.plan.to_dict(),
               "table": result.table.to_dict()}
        for layer in out["plan"]["layers"].values():  # masks are in the file, not on stdout
            if isinstance(layer, dict):
                layer.pop("mask", None)
        if front is not None:
            out["pareto"] = front.to_dict()
        print(json.dumps(out, indent=2))
        return 0
    render(result, source=args.source, out=args.out, pareto_png=args.pareto)
    return 0


def render(result, *, source: str, out: str, pareto_png: str | None) -> None:
    """Per-layer table (pattern, cycles dense → planned, sensitivity) with totals."""
    from rich.console import Console
    from rich.table import Table

    table, sel = result.table, result.selection
    meta = table.meta
    t = Table(title=f"{source} on {table.array.name}: {sel.method} search, {meta.criterion if meta else '?'} "
                    f"criterion, {meta.sensitivity if meta else '?'} sensitivity", title_justify="left")
    for col, just in (("layer", "left"), ("pattern", "left"), ("cycles dense", "right"), ("→ planned", "right"),
                      ("µJ", "right"), ("weight KiB", "right"), ("Δ val loss", "right"), ("Δ val acc", "right")):
        t.add_column(col, justify=just, no_wrap=col != "layer")
    for i, name in enumerate(table.layers):
        j = sel.choice[i]
        ref, c = table.layer_cost(i), sel.layer_costs[i]
        acc = table.accuracy[i, j]
        t.add_row(name, str(table.candidates[j]), f"{ref.cycles:,}", f"{c.cycles:,}", f"{c.energy_pj / 1e6:,.3f}",
                  f"{c.weight_bytes / 1024:,.2f}", f"{table.loss[i, j]:+.4f}",
                  "—" if math.isnan(acc) else f"{acc * 100:+.2f} pt")
    if table.fixed.cycles:
        t.add_row("(not prunable)", "—", f"{table.fixed.cycles:,}", f"{table.fixed.cycles:,}",
                  f"{table.fixed.energy_pj / 1e6:,.3f}", "", "", "")
    t.add_section()
    ref = table.reference
    t.add_row("total", "", f"{ref.cycles:,}", f"{sel.cost.cycles:,}", f"{sel.cost.energy_pj / 1e6:,.3f}",
              f"{sel.cost.weight_bytes / 1024:,.2f}", f"{sel.loss:+.4f}",
              "—" if sel.accuracy is None else f"{sel.accuracy * 100:+.2f} pt", style="bold")
    console = Console()
    if not console.is_terminal:
        console = Console(width=130)
    console.print(t)
    caps = ", ".join(f"{k} ≤ {v:,.0f}" for k, v in sel.caps.items())
    console.print(f"budget {caps} · {sel.cost.cycles / ref.cycles:.3f} of dense cycles "
                  f"({ref.cycles / sel.cost.cycles:.2f}× faster) · solved in {sel.solve_seconds * 1e3:.1f} ms")
    if meta is not None:
        console.print(f"sensitivities: {meta.measured} measured, {meta.reused} reused from cache · "
                      f"baseline val accuracy {meta.baseline_accuracy:.2%}")
    console.print(f"wrote {out}" + (f" and {pareto_png}" if pareto_png else ""))
