"""How fast the search is: ``hwprune search digits_cnn`` end to end, and the MILP at ResNet-50 size.

1. ``hwprune search digits_cnn --budget 0.5`` as a user runs it (a subprocess, training and
   sensitivity included), cold (empty sensitivity cache) and warm (every sensitivity reused);
   the issue's target is under a minute on 2 cores, cold.
2. The exact selection on ResNet-50 (zoo ``resnet50``: 53 conv/linear layers × the default 11
   candidates of os16x16), with real costs: each candidate's mask from the weights' magnitudes,
   costed by the cost model.  There is no ResNet-50 data set here, so the sensitivities are the
   fraction of weight energy each candidate removes (Σ removed w² / Σ w²) — a stand-in with the
   same shape; the solver's work does not depend on where the numbers come from.  The target is
   under a second per solve (wall time; CPU time is given too, as the machine is shared).

Prints JSON (stdout); ``--out FILE`` also writes it.

    python benchmarks/search_speed.py
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from hwprune.config import load_array
from hwprune.io import print_json
from hwprune.patterns import Channel
from hwprune.search import (Budget, Cost, SearchTable, candidate_cost, default_candidates, pareto, solve_exact,
                            solve_greedy)
from hwprune.search.costs import specs_by_layer


def cli_wall_time(cache: str, out: str) -> float:
    env = {**os.environ, "HWPRUNE_CACHE": cache}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "hwprune", "search", "digits_cnn", "--budget", "0.5", "--out", out,
                    "--force", "--json"], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def resnet50_table(array_name: str) -> tuple[SearchTable, float]:
    from hwprune import zoo

    array = load_array(array_name)
    specs = zoo.layers("resnet50")
    names = list(dict.fromkeys(s.name.split("#")[0] for s in specs if s.has_weights))
    grouped, rest = specs_by_layer(specs, names)
    cands = default_candidates(array)
    t0 = time.perf_counter()
    L, C = len(names), len(cands)
    loss, costs, allowed = np.zeros((L, C)), np.zeros((L, C, 3)), np.ones((L, C), dtype=bool)
    for i, name in enumerate(names):
        w = grouped[name][0].weight.astype(np.float64)
        energy = float(np.square(w).sum())
        for j, pat in enumerate(cands):
            if isinstance(pat, Channel) and i == L - 1:
                allowed[i, j] = False
                continue
            mask = pat.mask(np.abs(w))
            loss[i, j] = float(np.square(w[~mask]).sum()) / energy
            costs[i, j] = candidate_cost(grouped[name], array, pat, mask).as_tuple()
    fixed = sum((candidate_cost([s], array, None, None) for s in rest), Cost(0, 0.0, 0))
    table = SearchTable.from_arrays(array, names, cands, loss, costs, allowed=allowed, fixed=fixed)
    return table, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--array", default="os16x16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-cli", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    report: dict = {"benchmark": "search_speed", "array": args.array, "cpus": os.cpu_count()}
    if not args.skip_cli:
        with tempfile.TemporaryDirectory() as tmp:
            cache, out = os.path.join(tmp, "cache"), os.path.join(tmp, "plan.json")
            cold = cli_wall_time(cache, out)
            warm = cli_wall_time(cache, out)
        report["cli_digits_cnn"] = {"command": "hwprune search digits_cnn --budget 0.5", "cold_seconds": round(cold, 2),
                                    "warm_seconds": round(warm, 2), "target_seconds": 60}
    table, build = resnet50_table(args.array)
    solves = {}
    for label, budget in (("cycles 0.5", Budget(fraction=0.5)), ("cycles 0.35", Budget(fraction=0.35)),
                          ("cycles 0.6 + energy 0.6 + bytes 0.5",
                           Budget(fraction=0.6, energy_pj=0.6 * table.reference.energy_pj,
                                  weight_bytes=int(0.5 * table.reference.weight_bytes)))):
        times, cpu, greedy_times = [], [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            sel = solve_exact(table, budget)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            g = solve_greedy(table, budget)
            greedy_times.append(time.perf_counter() - t0)
        solves[label] = {"exact_seconds_median": round(statistics.median(times), 4),
                         "exact_seconds_max": round(max(times), 4),
                         "exact_cpu_seconds_median": round(statistics.median(cpu), 4),
                         "greedy_seconds_median": round(statistics.median(greedy_times), 4),
                         "cycles": sel.cost.cycles, "objective_exact": sel.value, "objective_greedy": g.value}
    t0 = time.perf_counter()
    front = pareto(table, points=16)
    report["milp_resnet50"] = {
        "layers": len(table.layers), "candidates": len(table.candidates), "binaries": int(table.allowed.sum()),
        "dense_cycles": table.reference.cycles, "table_build_seconds": round(build, 1), "solves": solves,
        "pareto_16_budgets_seconds": round(time.perf_counter() - t0, 3), "pareto_points": len(front.exact),
        "target_seconds": 1.0}
    print_json(report, args.out, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
