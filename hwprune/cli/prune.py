"""``hwprune prune``: prune (and fine-tune) a built-in task or a checkpoint, report before/after."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import preset_names
from ..patterns import PATTERN_SYNTAX
from .args import add_data_argument, density, nonnegative_int, positive_int
from .helptext import RawDescriptionHelpFormatter

CRITERIA_HELP = ("importance criterion: l1 (|w|), l2 (w²), random (seeded), taylor (first-order, per "
                 "sample: mean of |w·∂ℓᵢ/∂w|), "
                 "hessian (OBD ½·F·w², F the diagonal empirical Fisher: mean of per-sample squared "
                 "gradients), activation (Wanda |w|·‖x‖, layer-normalised; channels: mean "
                 "|activation|), obs (Optimal Brain Surgeon w²/[H⁻¹]_kk with H = XᵀX of the layer's "
                 "calibration inputs, then the kept weights re-fitted by least squares). Default: l1")
PATTERN_HELP = (f"sparsity pattern for every weight layer: {PATTERN_SYNTAX}; any N<M; channel pruning "
                "keeps all channels of the output layer")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prune", help="prune (and fine-tune) a built-in task, a checkpoint or your own model",
        description="Prune a model with any criterion × any sparsity pattern, on a schedule, with "
                    "fine-tuning; print accuracy, parameters, size, MACs, cycles and energy before "
                    "and after, and save a checkpoint that `hwprune estimate` and `export` read.",
        epilog="examples:\n"
               "  hwprune prune digits_cnn --criterion taylor --pattern 2:4 --out cnn24.pt\n"
               "  hwprune prune lenet300100 --pattern unstructured:0.25 --scope global --schedule agp --steps 8 --out lenet.pt\n"
               "  hwprune prune digits_cnn --pattern channel:0.5 --shrink --out small.pt\n"
               "  hwprune prune cnn24.pt --plan plan.json --out hybrid.pt --force\n"
               "  hwprune prune mypkg.models:make_model --data mypkg.data:make_loaders --pattern 2:4 --out my24.pt\n"
               "a model given by import path is built by calling that function (it returns a trained\n"
               "nn.Module); --data names a function returning (train_loader, val_loader[, loss_fn[, metric]])\n"
               "built-in tasks: %(tasks)s",
        formatter_class=RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="TASK|CKPT|pkg.mod:factory",
                   help="built-in task (trained first, seeded), a checkpoint saved by hwprune prune, or "
                        "the import path of a function returning your trained model")
    add_data_argument(p, "needed for a model given by import path, else replaces a checkpoint's task")
    p.add_argument("--criterion", default=None, metavar="NAME", help=CRITERIA_HELP + "; known: %(criteria)s"
                   "; with --plan, default: the criterion the plan was searched with (its masks)")
    p.add_argument("--pattern", default=None, help=PATTERN_HELP)
    p.add_argument("--plan", default=None, metavar="PLAN.json",
                   help='per-layer patterns: {"array": "os16x16", "layers": {"conv1": "2:4", ...}}; '
                        "unlisted layers stay dense")
    p.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="layer: every layer gets the pattern; global: one threshold across layers "
                        "(unstructured only) with a per-layer floor --min-density")
    p.add_argument("--min-density", type=density, default=0.02, help="global scope: per-layer floor (default 0.02)")
    p.add_argument("--schedule", choices=("oneshot", "iterative", "agp"), default="oneshot",
                   help="oneshot, iterative (STEPS prune→fine-tune rounds) or agp (Zhu & Gupta cubic)")
    p.add_argument("--steps", type=positive_int, default=None, help="rounds (iterative) or pruning events (agp); default 4")
    p.add_argument("--finetune-epochs", type=nonnegative_int, default=None,
                   help="total fine-tuning epochs shared by all rounds (default: task epochs / 4, or --data's)")
    p.add_argument("--train-epochs", type=positive_int, default=None, help="epochs of the baseline training of a task")
    p.add_argument("--row-floor", type=nonnegative_int, default=1, metavar="N",
                   help="unstructured patterns keep at least N weights in every output row (default 1; 0: off)")
    p.add_argument("--calib-batches", type=positive_int, default=None,
                   help="calibration batches for taylor/hessian/activation/obs (default 8, or the plan's)")
    p.add_argument("--rescore", type=positive_int, default=None, metavar="K",
                   help="times the criterion re-scores the partly pruned model on the way to the final "
                        "pattern, spread over the pruning events (no training in between); default 16 "
                        "for taylor/hessian with --scope global, else 1")
    p.add_argument("--shrink", action="store_true",
                   help="physically remove pruned channels (smaller dense layers) before saving")
    p.add_argument("--array", default=None, metavar="PRESET|FILE.toml",
                   help=f"array for cycles and energy ({', '.join(preset_names())} or TOML; "
                        "default: the plan's array, else os16x16)")
    p.add_argument("--out", required=True, metavar="OUT.pt", help="checkpoint to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of training, calibration and fine-tuning")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table (no progress bars)")
    p.set_defaults(func=run)


def validate(args: argparse.Namespace):
    """Check every cheap argument before minutes of training; return the plan (or None).

    Numeric ranges are checked by the argument types at parse time; this checks the output
    path, the combinations, and every name (criterion, pattern, plan, array) against its registry.
    """
    from ..config import load_array
    from ..errors import ConfigError
    from ..io import check_writable
    from ..patterns import parse_pattern
    from ..prune import load_plan
    from ..prune.criteria import get_criterion
    from ..prune.schedules import check_schedule

    check_writable(args.out, force=args.force)
    if (args.pattern is None) == (args.plan is None):
        raise ConfigError("give exactly one of --pattern and --plan")
    plan = load_plan(args.plan) if args.plan is not None else None
    # a searched plan's masks (and so its predicted cycles) come from its criterion and calibration
    args.criterion = args.criterion or (plan.criterion if plan else None) or "l1"
    if args.calib_batches is None:
        args.calib_batches = int(((plan.search or {}) if plan else {}).get("calib_batches", 8))
    get_criterion(args.criterion)
    if args.pattern is not None:
        parse_pattern(args.pattern)
    if args.schedule == "oneshot" and args.steps not in (None, 1):
        raise ConfigError(f"--steps {args.steps}: the oneshot schedule prunes once; use "
                          "--schedule iterative or agp for several steps")
    check_schedule(args.schedule, args.steps if args.steps is not None else (1 if args.schedule == "oneshot" else 4))
    if args.array is not None:
        load_array(args.array)
    if plan is not None:
        try:
            load_array(plan.array)
        except ConfigError as exc:
            raise ConfigError(f"plan {args.plan}: {exc}") from None
    return plan


def _check_budget(args: argparse.Namespace, data) -> None:  # noqa: ANN001
    """AGP events that cannot fit the fine-tune budget are refused before any training."""
    from ..prune.schedules import check_agp_budget

    if args.schedule == "agp":
        epochs = data.finetune_epochs if args.finetune_epochs is None else args.finetune_epochs
        spe = data.steps_per_epoch()
        check_agp_budget(epochs * spe, args.steps or 4, steps_per_epoch=spe)


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint, save_checkpoint
    from ..errors import ConfigError
    from ..metrics import compare
    from ..prune import compose_patterns, prunable_layers, prune_model, shrink_channels
    from ..tasks import load_task
    from ..train import clone_model, evaluate, train_task
    from ..usermodel import build_model, checkpoint_workload, load_workload
    from ..userland import is_import_path

    plan = validate(args)
    array = args.array or (plan.array if plan else "os16x16")
    progress = not args.json

    source = Path(args.source)
    if is_import_path(args.source) and not source.is_file():
        if args.data is None:
            raise ConfigError(f"{args.source}: a model given by import path needs --data pkg.mod:make_loaders")
        model, _ = build_model(args.source)
        task = load_workload(args.data)
        _check_budget(args, task)
        if plan is not None:
            plan.check_layers(prunable_layers(model))
        arch, arch_kwargs, prior = args.source, {}, {}
    elif source.suffix.lower() in (".pt", ".pth") or source.is_file():
        ckpt = load_checkpoint(source)
        task = checkpoint_workload(ckpt, source, args.data)
        _check_budget(args, task)
        model, arch, arch_kwargs = ckpt.model, ckpt.arch, ckpt.arch_kwargs
        prior = dict(ckpt.patterns)
    else:
        task = load_task(args.source)
        _check_budget(args, task)
        if plan is not None:  # layer names are known before training
            plan.check_layers(prunable_layers(task.make_model()))
        model, _ = train_task(task, seed=args.seed, epochs=args.train_epochs, progress=progress)
        arch, arch_kwargs = task.arch, dict(task.arch_kwargs)
        prior = {}
    before = clone_model(model)
    result = prune_model(model, args.pattern, data=task, criterion=args.criterion, plan=plan,
                         scope=args.scope, schedule=args.schedule, steps=args.steps,
                         finetune_epochs=args.finetune_epochs, min_density=args.min_density,
                         calib_batches=args.calib_batches, row_floor=args.row_floor, rescore=args.rescore,
                         seed=args.seed, progress=progress)
    final = result.model
    # pruning composes: layers pruned before keep their zeros, and the recorded pattern is the
    # combination (untouched layers keep theirs)
    patterns = {**prior, **{n: compose_patterns(prior.get(n), p) for n, p in result.patterns.items()}}
    if args.shrink:
        final = shrink_channels(result.model, task.example_inputs(2))
        patterns = {k: v for k, v in patterns.items() if v.kind != "channel"}  # now dense, smaller
    comparison = compare(before, final, task, array=array)
    metrics = {**comparison.to_dict(), "prune": result.to_dict(), "test_accuracy": evaluate(final, task)}
    save_checkpoint(args.out, final, arch=arch, task=task, patterns=patterns, masks=None,
                    metrics=metrics, force=args.force, arch_kwargs=arch_kwargs)
    if args.json:
        print(json.dumps({"source": args.source, "task": task.name, "out": args.out, "array": array,
                          "shrunk": bool(args.shrink), **metrics}, indent=2))
        return 0
    from rich.console import Console

    console = Console()
    what = args.pattern or f"plan {args.plan}"
    console.print(comparison.table(title=f"{task.name}: {args.criterion} × {what}, {args.scope} scope, "
                                         f"{result.schedule} ({result.steps} step(s), "
                                         f"{result.finetune_epochs} fine-tune epoch(s)"
                                         f"{f', {result.scorings} scorings' if result.scorings > result.steps else ''})"))
    console.print(f"kept {result.density:.1%} of the pruned layers' weights"
                  f"{' · channels removed physically' if args.shrink else ''} · wrote {args.out}")
    return 0
