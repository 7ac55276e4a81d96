"""Pruning quality: test accuracy (and os16x16 cycles) of criteria × patterns × schedules.

For each task (digits CNN, LeNet-300-100, the Transformer and the GCN) and seed: one fp32
baseline with the task's recipe, then

* ``nm``        — l1 one-shot 2:4 and 1:4 with the default fine-tune (all tasks);
* ``global90``  — every criterion at 90 % global unstructured (density 0.1), one-shot, with the
                  default fine-tune *and* without fine-tuning (what a sensitivity analysis sees);
                  taylor/hessian re-score 16 times on the way unless ``--rescore`` says otherwise;
* ``noft``      — 1:4 and 2:4 one-shot without fine-tuning (how hard the task is);
* ``schedules`` — one-shot vs iterative (4 rounds) vs AGP (4 events) at equal total epochs, for
                  1:4 and 90 % global unstructured;
* ``grid``      — (``--grid``) the old criterion × pattern grid at layer scope.

Prints JSON (stdout) with per-run rows, per-configuration means over seeds, and the issue's
targets with ``met`` flags; ``--table`` also prints a Markdown table on stderr; ``--out FILE``
writes the JSON atomically.  Figures, not asserts.

    python benchmarks/pruning_quality.py --seeds 0 1 2 --table
    python benchmarks/pruning_quality.py --tasks digits_cnn --sections global90 --seeds 0 1
    python benchmarks/pruning_quality.py --tasks digits_cnn --sections schedules --seeds 0 1 2 --prune-seeds 4

Running several at once (e.g. one process per task), give each ``OMP_NUM_THREADS=1``: the
models are small, and two processes with two intra-op threads each on two cores ran 20–60×
slower (the whole default run took ~4 min as two single-threaded processes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from hwprune.io import print_json
from hwprune.metrics import hardware_cost
from hwprune.prune import prune_model, shrink_channels
from hwprune.tasks import load_task
from hwprune.train import clone_model, evaluate, train_task

CRITERIA = ["l1", "l2", "random", "taylor", "hessian", "activation", "obs"]
SECTIONS = ["nm", "global90", "noft", "schedules", "grid"]
GRID = {"unstructured 50%": "unstructured:0.5", "unstructured 75%": "unstructured:0.25",
        "unstructured 90%": "unstructured:0.1", "2:4": "2:4", "1:4": "1:4", "channel 50%": "channel:0.5"}


def run_one(base, task, *, label, criterion="l1", pattern, scope="layer", schedule="oneshot", steps=None,
            epochs=None, seed, array, cycles=True, prune_seed=None, rescore=None):
    t0 = time.perf_counter()
    prune_seed = seed if prune_seed is None else prune_seed
    res = prune_model(clone_model(base), pattern, data=task, criterion=criterion, scope=scope,
                      schedule=schedule, steps=steps, finetune_epochs=epochs, seed=prune_seed, rescore=rescore)
    row = {"label": label, "criterion": criterion, "pattern": pattern, "scope": scope, "schedule": schedule,
           "steps": res.steps, "finetune_epochs": res.finetune_epochs, "seed": seed, "prune_seed": prune_seed,
           "accuracy": evaluate(res.model, task, "test"), "density": res.density,
           "finetune_steps": res.finetune_steps, "scorings": res.scorings, "notes": res.notes}
    if cycles:
        row["cycles"] = hardware_cost(res.model, task.example_inputs(1), array).cycles
        if pattern.startswith("channel"):  # zero rows save cycles only once removed physically
            small = shrink_channels(res.model, task.example_inputs(2))
            row["cycles_shrunk"] = hardware_cost(small, task.example_inputs(1), array).cycles
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def plan_runs(sections, criteria):
    """(label, kwargs) of every run of one seed."""
    runs = []
    if "nm" in sections:
        runs += [(f"{p} l1", {"pattern": p}) for p in ("2:4", "1:4")]
    if "global90" in sections:
        for c in criteria:
            runs.append((f"global90 {c}", {"criterion": c, "pattern": "unstructured:0.1", "scope": "global"}))
            runs.append((f"global90 {c} noft", {"criterion": c, "pattern": "unstructured:0.1", "scope": "global",
                                                "epochs": 0}))
    if "noft" in sections:
        runs += [(f"{p} l1 noft", {"pattern": p, "epochs": 0}) for p in ("2:4", "1:4")]
    if "schedules" in sections:
        for pat, scope, name in (("1:4", "layer", "1:4"), ("unstructured:0.1", "global", "global90")):
            if "nm" not in sections or name != "1:4":
                runs.append((f"{name} oneshot", {"pattern": pat, "scope": scope}))
            for sched in ("iterative", "agp"):
                runs.append((f"{name} {sched}", {"pattern": pat, "scope": scope, "schedule": sched, "steps": 4}))
    if "grid" in sections:
        runs += [(f"grid {c} {lbl}", {"criterion": c, "pattern": p}) for c in criteria for lbl, p in GRID.items()]
    return runs


def summarise(rows, fp32):
    out = {}
    for r in rows:
        out.setdefault(r["label"], []).append(r)
    return {k: {"accuracy": statistics.mean(r["accuracy"] for r in v),
                "delta_pt": round((statistics.mean(r["accuracy"] for r in v) - fp32) * 100, 2),
                "seeds": [r["seed"] for r in v], "density": round(v[0]["density"], 4),
                **({"cycles": v[0]["cycles"]} if "cycles" in v[0] else {}),
                **({"cycles_shrunk": v[0]["cycles_shrunk"]} if "cycles_shrunk" in v[0] else {}),
                **({"notes": v[0]["notes"]} if v[0]["notes"] else {})}
            for k, v in out.items()}


def targets(name, summary, fp32, criteria):
    """The issue's targets that this task's runs can check (means over the seeds run)."""
    t = {}

    def acc(label):
        return summary.get(label, {}).get("accuracy")

    def add(key, value, ref, tol):
        if value is not None and ref is not None:
            t[key] = {"accuracy": value, "reference": ref, "gap_pt": round((ref - value) * 100, 2),
                      "met": (ref - value) * 100 <= tol}
    if name == "digits_cnn":
        add("1:4 l1 within 1.0 pt of fp32", acc("1:4 l1"), fp32, 1.0)
    if name == "tiny_transformer":
        add("2:4 l1 within 1.0 pt of fp32", acc("2:4 l1"), fp32, 1.0)
    for c in criteria:
        if c != "random":
            add(f"global90 {c} within 2.0 pt of fp32", acc(f"global90 {c}"), fp32, 2.0)
    for c in ("taylor", "hessian", "obs"):  # obs: the second-order criterion with its compensation
        add(f"global90 {c} one-shot no-FT within 2.0 pt of l1", acc(f"global90 {c} noft"), acc("global90 l1 noft"), 2.0)
    for name_ in ("1:4", "global90"):
        base = acc(f"{name_} oneshot") if f"{name_} oneshot" in summary else acc(f"{name_} l1")
        add(f"{name_} iterative not worse than one-shot", acc(f"{name_} iterative"), base, 0.0)
    return t


def markdown(report):
    lines = ["| task | run | accuracy | Δ vs fp32 (pt) | cycles |", "|---|---|---:|---:|---:|"]
    for name, tr in report["tasks"].items():
        lines.append(f"| {name} | fp32 (seeds {', '.join(map(str, report['seeds']))}) | "
                     f"{tr['fp32']['accuracy']:.2%} | — | {tr['fp32']['cycles']:,} |")
        for label, s in tr["summary"].items():
            cycles = s.get("cycles_shrunk", s.get("cycles"))
            lines.append(f"| {name} | {label} | {s['accuracy']:.2%} | {s['delta_pt']:+.2f} | "
                         f"{'—' if cycles is None else f'{cycles:,}'} |")
        for key, v in tr["targets"].items():
            lines.append(f"| {name} | target: {key} | {v['accuracy']:.2%} | gap {v['gap_pt']:+.2f} | "
                         f"{'met' if v['met'] else 'MISSED'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["digits_cnn", "lenet300100", "tiny_transformer", "gcn"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--sections", nargs="+", default=["nm", "global90", "noft", "schedules"], choices=SECTIONS)
    ap.add_argument("--prune-seeds", type=int, default=1, metavar="K",
                    help="prune (calibrate and fine-tune) each trained model K times, with seeds s, s+100, … "
                         "(means then average all K × seeds runs: a finer look at differences of one test "
                         "example)")
    ap.add_argument("--finetune-epochs", type=int, default=None,
                    help="fine-tune budget of every run (default: each task's own, a quarter of its training)")
    ap.add_argument("--rescore", type=int, default=None, metavar="K",
                    help="scorings from dense to the final pattern, every run (default: the engine's: 16 for "
                         "taylor/hessian under global scope, else 1); --rescore 1 scores once")
    ap.add_argument("--array", default="os16x16")
    ap.add_argument("--criteria", nargs="+", default=CRITERIA)
    ap.add_argument("--table", action="store_true", help="also print a Markdown table on stderr")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="merge reports of separate runs (e.g. one per seed) instead of running")
    ap.add_argument("--out", default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    if args.merge:
        return _merge(args)
    report = {"array": args.array, "finetune_epochs": args.finetune_epochs or "task default",
              "rescore": args.rescore or "engine default",
              "seeds": args.seeds, "prune_seeds": args.prune_seeds, "tasks": {}}
    for name in args.tasks:
        task = load_task(name)
        rows, baselines = [], []
        for seed in args.seeds:
            t0 = time.perf_counter()
            base, _ = train_task(task, seed=seed)
            baselines.append({"seed": seed, "accuracy": evaluate(base, task, "test"),
                              "cycles": hardware_cost(base, task.example_inputs(1), args.array).cycles,
                              "train_seconds": round(time.perf_counter() - t0, 2)})
            print(f"{name} seed {seed} fp32 {baselines[-1]['accuracy']:.4f}", file=sys.stderr, flush=True)
            for label, kw in plan_runs(args.sections, args.criteria):
                kw = {"epochs": args.finetune_epochs, "rescore": args.rescore, **kw}
                for k in range(args.prune_seeds):
                    r = run_one(base, task, label=label, seed=seed, prune_seed=seed + 100 * k, array=args.array, **kw)
                    rows.append(r)
                    print(f"{name} seed {seed}/{r['prune_seed']} {label:28s} {r['accuracy']:.4f} ({r['seconds']} s)",
                          file=sys.stderr, flush=True)
        report["tasks"][name] = task_report(name, baselines, rows, args.criteria)
    return emit(report, args)


def task_report(name, baselines, rows, criteria):
    """fp32 baseline, per-configuration means, targets and the rows of one task."""
    fp32 = statistics.mean(b["accuracy"] for b in baselines)
    summary = summarise(rows, fp32)
    return {"fp32": {"accuracy": fp32, "cycles": baselines[0]["cycles"], "per_seed": baselines},
            "targets": targets(name, summary, fp32, criteria), "summary": summary, "runs": rows}


def emit(report, args) -> int:
    print_json(report, args.out, force=args.force)
    if args.table:
        print(markdown(report), file=sys.stderr)
    return 0


def _merge(args) -> int:
    parts = [json.loads(open(f).read()) for f in args.merge]
    report = {"array": parts[0]["array"], "finetune_epochs": parts[0]["finetune_epochs"],
              "prune_seeds": parts[0].get("prune_seeds", 1), "rescore": parts[0].get("rescore", "engine default"),
              "seeds": sorted({s for p in parts for s in p["seeds"]}), "tasks": {}}
    for name in dict.fromkeys(n for p in parts for n in p["tasks"]):
        got = [p["tasks"][name] for p in parts if name in p["tasks"]]
        baselines = [b for g in got for b in g["fp32"]["per_seed"]]
        rows = [r for g in got for r in g["runs"]]
        report["tasks"][name] = task_report(name, baselines, rows, args.criteria)
    return emit(report, args)


if __name__ == "__main__":
    sys.exit(main())
