"""Random (shape, pattern, array, fold overlap, passes, buffering) cases on Verilator: how many are exact.

Every case is a random layer from :func:`hwprune.sim.fuzz.random_case` (padding, conv groups,
under-filled and all-zero groups, zero channels and conv groups, extreme values) simulated on
one of a set of small designs whose memories (:func:`~hwprune.sim.fuzz.pass_sized`) make it run
in one to a dozen passes (K split included), single- or double-buffered at a random DRAM
bandwidth (:func:`~hwprune.sim.fuzz.random_dma`; the design and its build stay the same).  A
case is exact when the outputs equal the numpy reference bit for bit, every pass's design
cycle counter equals the bench's ticks and the planner's array cycles, and the total equals the
predicted total (``simulate(verify=True)``).  Prints JSON: cases, exact, the failing seeds (with
their message), per-design counts, how many cases ran in 1, 2, 3+ passes, single/double
buffered and with K split, wall seconds.

    python benchmarks/rtl_fuzz.py [--cases 5000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from hwprune import NM, Dense, load_array
from hwprune.errors import HwPruneError
from hwprune.sim import simulate
from hwprune.sim.fuzz import pass_sized, random_case, random_dma


def designs():
    base = load_array("os8x8")

    def cfg(r, c, *, m=4, n=(1, 2, 4), overlap=False):
        return pass_sized(base.replace(rows=r, cols=c, group_size=m, slot_options=n, fold_overlap=overlap))

    out = []
    for overlap in (False, True):
        tag = "p" if overlap else ""
        out += [(f"2x2{tag} 1:2 (M=2)", cfg(2, 2, m=2, n=(1, 2), overlap=overlap), [NM(1, 2), Dense()]),
                (f"2x3{tag}", cfg(2, 3, overlap=overlap), [NM(1, 4), NM(2, 4), Dense()]),
                (f"3x2{tag}", cfg(3, 2, overlap=overlap), [NM(1, 4), NM(2, 4)]),
                (f"4x4{tag}", cfg(4, 4, overlap=overlap), [NM(2, 4), Dense()]),
                (f"2x2{tag} 2:8", cfg(2, 2, m=8, n=(2, 8), overlap=overlap), [NM(2, 8)])]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ds = designs()
    per = {name: {"cases": 0, "exact": 0} for name, _, _ in ds}
    shapes = {"passes_1": 0, "passes_2": 0, "passes_3+": 0, "double_buffered": 0, "single_buffered": 0,
              "k_split": 0, "max_passes": 0}
    failures = []
    t0 = time.perf_counter()
    compile_s = 0.0
    for i in range(args.cases):
        seed = args.seed * 1_000_003 + i
        name, array, patterns = ds[i % len(ds)]
        pattern = patterns[(i // len(ds)) % len(patterns)]
        array = random_dma(array, seed)
        layer, w, x = random_case(array, pattern, seed)
        per[name]["cases"] += 1
        try:
            res = simulate(layer, w, x, pattern, array, backend="verilator")
            compile_s += res.compile_seconds
            per[name]["exact"] += 1
            shapes[f"passes_{min(res.passes, 3)}" + ("+" if res.passes >= 3 else "")] += 1
            shapes["double_buffered" if res.double_buffer else "single_buffered"] += 1
            shapes["k_split"] += res.k_split > 1
            shapes["max_passes"] = max(shapes["max_passes"], res.passes)
        except HwPruneError as exc:
            failures.append({"seed": seed, "design": name, "pattern": str(pattern), "error": str(exc)[:300]})
    wall = time.perf_counter() - t0
    print(json.dumps({"cases": args.cases, "exact": args.cases - len(failures), "failures": failures,
                      "designs": per, "runs": shapes, "wall_seconds": round(wall, 1),
                      "compile_seconds": round(compile_s, 1)}, indent=2))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
