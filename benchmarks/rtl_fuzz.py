"""Random (shape, pattern, array, fold overlap) cases on Verilator: how many are exact.

Every case is a random layer from :func:`hwprune.sim.fuzz.random_case` (padding, conv groups,
under-filled and all-zero groups, zero channels and conv groups, extreme values) simulated on
one of a set of small designs; it is exact when the outputs equal the numpy reference bit for
bit and the simulated cycles equal the cost model's (``simulate(verify=True)``).  Prints JSON:
cases, exact, the failing seeds (with their message), per-design counts, wall seconds.

Passes and single/double buffering are not in the design yet, so they are not fuzzed.

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
from hwprune.sim.fuzz import random_case


def designs():
    base = load_array("os8x8")

    def cfg(r, c, *, m=4, n=(1, 2, 4), overlap=False, kib=1.0):
        return base.replace(rows=r, cols=c, group_size=m, slot_options=n, weight_sram_kib=kib,
                            act_sram_kib=kib, out_sram_kib=2 * kib, fold_overlap=overlap)

    out = []
    for overlap in (False, True):
        tag = "p" if overlap else ""
        out += [(f"2x2{tag} 1:2 (M=2)", cfg(2, 2, m=2, n=(1, 2), overlap=overlap), [NM(1, 2), Dense()]),
                (f"2x3{tag}", cfg(2, 3, overlap=overlap), [NM(1, 4), NM(2, 4), Dense()]),
                (f"3x2{tag}", cfg(3, 2, overlap=overlap), [NM(1, 4), NM(2, 4)]),
                (f"4x4{tag}", cfg(4, 4, overlap=overlap), [NM(2, 4), Dense()]),
                (f"2x2{tag} 2:8", cfg(2, 2, m=8, n=(2, 8), overlap=overlap, kib=2.0), [NM(2, 8)])]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ds = designs()
    per = {name: {"cases": 0, "exact": 0} for name, _, _ in ds}
    failures = []
    t0 = time.perf_counter()
    compile_s = 0.0
    for i in range(args.cases):
        seed = args.seed * 1_000_003 + i
        name, array, patterns = ds[i % len(ds)]
        pattern = patterns[(i // len(ds)) % len(patterns)]
        layer, w, x = random_case(array, pattern, seed)
        per[name]["cases"] += 1
        try:
            res = simulate(layer, w, x, pattern, array, backend="verilator")
            compile_s += res.compile_seconds
            per[name]["exact"] += 1
        except HwPruneError as exc:
            failures.append({"seed": seed, "design": name, "pattern": str(pattern), "error": str(exc)[:300]})
    wall = time.perf_counter() - t0
    print(json.dumps({"cases": args.cases, "exact": args.cases - len(failures), "failures": failures,
                      "designs": per, "wall_seconds": round(wall, 1),
                      "compile_seconds": round(compile_s, 1)}, indent=2))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
