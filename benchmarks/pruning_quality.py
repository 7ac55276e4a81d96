"""Pruning quality: test accuracy and os16x16 cycles for criterion × pattern × sparsity.

For the digits CNN and LeNet-300-100 (MLP) tasks: one fp32 baseline per seed (the task's own
recipe), then every criterion × pattern pruned one-shot (layer scope) and fine-tuned with the
same budget; plus global-scope unstructured magnitude pruning and a schedule comparison.
Prints JSON (stdout); ``--out FILE`` also writes it atomically.  Figures, not asserts.

    python benchmarks/pruning_quality.py                 # full grid, 1 seed (~minutes on 2 cores)
    python benchmarks/pruning_quality.py --seeds 0 1 2   # mean over seeds for the targets
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from hwprune.io import write_text
from hwprune.metrics import hardware_cost
from hwprune.prune import prune_model, shrink_channels
from hwprune.tasks import load_task
from hwprune.train import clone_model, evaluate, train_task

CRITERIA = ["l1", "l2", "random", "taylor", "hessian", "activation"]
PATTERNS = {  # label → (pattern text, sparsity)
    "unstructured 50%": ("unstructured:0.5", 0.5),
    "unstructured 75%": ("unstructured:0.25", 0.75),
    "unstructured 90%": ("unstructured:0.1", 0.9),
    "2:4": ("2:4", 0.5),
    "1:4": ("1:4", 0.75),
    "channel 50%": ("channel:0.5", 0.5),
}


def run_one(base, task, *, criterion, pattern, scope="layer", schedule="oneshot", steps=None,
            epochs, seed, array):
    t0 = time.perf_counter()
    res = prune_model(clone_model(base), task, criterion=criterion, pattern=pattern, scope=scope,
                      schedule=schedule, steps=steps, finetune_epochs=epochs, seed=seed)
    acc = evaluate(res.model, task, "test")
    cycles = hardware_cost(res.model, task.example_inputs(1), array).cycles
    extra = {}
    if pattern.startswith("channel"):  # zero rows save cycles only once removed physically
        small = shrink_channels(res.model, task.example_inputs(2))
        extra["cycles_shrunk"] = hardware_cost(small, task.example_inputs(1), array).cycles
        extra["accuracy_shrunk"] = evaluate(small, task, "test")
    return {**extra, "criterion": criterion, "pattern": pattern, "scope": scope, "schedule": schedule,
            "steps": res.steps, "seed": seed, "accuracy": acc, "density": res.density,
            "cycles": cycles, "seconds": round(time.perf_counter() - t0, 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["digits_cnn", "mlp"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--finetune-epochs", type=int, default=8)
    ap.add_argument("--array", default="os16x16")
    ap.add_argument("--criteria", nargs="+", default=CRITERIA)
    ap.add_argument("--out", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    E = args.finetune_epochs
    report = {"array": args.array, "finetune_epochs": E, "seeds": args.seeds, "tasks": {}}
    for name in args.tasks:
        task = load_task(name)
        runs, baselines = [], []
        for seed in args.seeds:
            t0 = time.perf_counter()
            base, _ = train_task(task, seed=seed)
            baselines.append({"seed": seed, "accuracy": evaluate(base, task, "test"),
                              "cycles": hardware_cost(base, task.example_inputs(1), args.array).cycles,
                              "train_seconds": round(time.perf_counter() - t0, 2)})
            for crit in args.criteria:
                for label, (pat, sparsity) in PATTERNS.items():
                    r = run_one(base, task, criterion=crit, pattern=pat, epochs=E, seed=seed, array=args.array)
                    runs.append({"label": label, "sparsity": sparsity, **r})
                    print(f"{name} seed {seed} {crit:10s} {label:18s} {r['accuracy']:.4f}", file=sys.stderr)
            for label, (pat, sparsity) in PATTERNS.items():
                if pat.startswith("unstructured"):
                    r = run_one(base, task, criterion="l1", pattern=pat, scope="global", epochs=E,
                                seed=seed, array=args.array)
                    runs.append({"label": f"{label} global", "sparsity": sparsity, **r})
            for sched, steps in (("iterative", 4), ("agp", 4)):
                for pat, sparsity, label in (("unstructured:0.1", 0.9, "unstructured 90%"), ("2:4", 0.5, "2:4")):
                    r = run_one(base, task, criterion="l1", pattern=pat, schedule=sched, steps=steps,
                                epochs=E, seed=seed, array=args.array)
                    runs.append({"label": label, "sparsity": sparsity, **r})
        fp32 = statistics.mean(b["accuracy"] for b in baselines)

        def mean_acc(**match):
            accs = [r["accuracy"] for r in runs if all(r[k] == v for k, v in match.items())]
            return statistics.mean(accs) if accs else None

        table = {}
        for r in runs:
            key = f"{r['criterion']} | {r['label']} | {r['scope']} | {r['schedule']}"
            table.setdefault(key, {"accuracy": [], "cycles": r["cycles"], "density": r["density"],
                                   **({"cycles_shrunk": r["cycles_shrunk"]} if "cycles_shrunk" in r else {})})
            table[key]["accuracy"].append(r["accuracy"])
        summary = {k: {"accuracy": statistics.mean(v["accuracy"]),
                       "delta_pt": round((statistics.mean(v["accuracy"]) - fp32) * 100, 2),
                       "cycles": v["cycles"], "density": round(v["density"], 4),
                       **({"cycles_shrunk": v["cycles_shrunk"]} if "cycles_shrunk" in v else {})}
                   for k, v in table.items()}
        nm = mean_acc(criterion="l1", label="2:4", scope="layer", schedule="oneshot")
        best_nm = max(mean_acc(criterion=c, label="2:4", scope="layer", schedule="oneshot") for c in args.criteria)
        glob = mean_acc(criterion="l1", label="unstructured 75% global", scope="global", schedule="oneshot")
        report["tasks"][name] = {
            "fp32": {"accuracy": fp32, "cycles": baselines[0]["cycles"], "per_seed": baselines},
            "targets": {
                "2:4 l1 within 1.0 pt": {"accuracy": nm, "delta_pt": round((nm - fp32) * 100, 2),
                                         "met": (fp32 - nm) <= 0.01},
                "2:4 best criterion within 1.0 pt": {"accuracy": best_nm, "delta_pt": round((best_nm - fp32) * 100, 2),
                                                     "met": (fp32 - best_nm) <= 0.01},
                "75% global magnitude within 1.0 pt": {"accuracy": glob, "delta_pt": round((glob - fp32) * 100, 2),
                                                       "met": (fp32 - glob) <= 0.01},
            },
            "summary": summary,
            "runs": runs,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        write_text(args.out, text + "\n", force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
