"""Co-design sweep at benchmark scale.  Prints JSON.

A space of 864 design points (2×2…4×4 arrays: 16 distinct RTL configs for yosys — rows × cols ×
N-set × fold overlap — plus WS/IS arrays, three SRAM sizes per buffer, two output buffers, two DRAM
bandwidths) × digits_cnn, lenet300100, resnet18 and bert_layer × uniform dense, 2:4 and 1:4.

Runs: (1) local, first: yosys (generic synth + synth_ice40) of every RTL config not yet in the
disk cache (``~/.cache/hwprune/area``; a previous run or ``hwprune sweep`` may have filled it, so
the JSON says how many it computed), fine-tunes for the built-in tasks; (2) Ray (local ``ray.init(num_cpus=2)``) and
(3) local again, both with the area cache warm, fine-tunes included; (4) cost model only on Ray
and locally.  Reports wall times, points per second, front sizes, the recommendations, and the
8×8 dense vs 2:4 fmax (nextpnr-ice40, cached by ``hwprune.sweep.area``).

Run by hand: ``python benchmarks/sweep.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hwprune import load_array
from hwprune.sweep.area import RtlConfig, area_of
from hwprune.sweep.pareto import write_answers
from hwprune.sweep.run import read_points, run_sweep
from hwprune.sweep.space import space_from_dict

MODELS = ["digits_cnn", "lenet300100", "resnet18", "bert_layer"]
SPACE = {
    "base": "os8x8",
    "patterns": ["dense", "2:4", "1:4"],
    "array": {"rows": [2, 4], "cols": [2, 4], "n": [[4], [1, 2, 4]], "fold_overlap": [False, True],
              "dataflow": ["os", "ws", "is"], "weight_sram_kib": [16, 64, 256], "act_sram_kib": [16, 64, 256],
              "out_sram_kib": [16, 128], "dram_bytes_per_cycle": [8, 32]},
    "accuracy": {"finetune_epochs": 1},
}


def timed_run(out: Path, **kw) -> tuple[float, object]:
    t0 = time.perf_counter()
    res = run_sweep(MODELS, space_from_dict(SPACE, source="benchmark"), out, force=True, **kw)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(args.out or tempfile.mkdtemp(prefix="hwprune-sweep-bench-"))
    space = space_from_dict(SPACE, source="benchmark")
    rtl = sorted({RtlConfig.of(d) for d in space.designs}, key=lambda r: r.key)
    n_points = len(space.designs) * len(MODELS) * len(SPACE["patterns"])
    report: dict[str, object] = {"designs": len(space.designs), "models": MODELS,
                                 "patterns": SPACE["patterns"], "points": n_points, "rtl_configs": len(rtl)}
    runs = {}
    for name, kw in (("local_first", {"engine": "local"}), ("ray", {"engine": "ray"}),
                     ("local", {"engine": "local"}),
                     ("ray_cost_only", {"engine": "ray", "area": False, "accuracy": False}),
                     ("local_cost_only", {"engine": "local", "area": False, "accuracy": False})):
        s, res = timed_run(root / name, **kw)
        runs[name] = {"seconds": round(s, 2), "points_per_second": round(n_points / s, 1),
                      "computed": res.computed}
    report["runs"] = runs
    a, b = (root / "ray" / "points.parquet"), (root / "local" / "points.parquet")
    import pyarrow.parquet as pq
    report["ray_table_equals_local"] = pq.read_table(a).equals(pq.read_table(b))
    summary = write_answers(root / "local", read_points(root / "local").to_pylist())
    report["fronts"] = {m: v["front_size"] for m, v in summary["models"].items()}
    report["recommendations"] = {m: [r["line"] for r in v["recommendations"]] for m, v in summary["models"].items()}
    report["area"] = {f"{r.rows}x{r.cols} N{{{','.join(map(str, r.slot_options))}}}{' overlap' if r.fold_overlap else ''}":
                      {k: area_of(r, ice40=True, fmax=False)[k] for k in ("cells", "ice40_lut4", "ice40_dff", "ice40_mac16")}
                      for r in rtl}
    base = load_array("os8x8")
    report["fmax_8x8_mhz"] = {}
    for label, ns in (("dense", (4,)), ("2:4", (2, 4))):
        a8 = area_of(RtlConfig.of(base.replace(slot_options=ns)), ice40=True, fmax=True)
        report["fmax_8x8_mhz"][label] = {k: a8[k] for k in ("fmax_mhz", "fmax_array_mhz", "fmax_controller_mhz",
                                                             "cells", "ice40_lut4", "ice40_dff")}
    report["out"] = str(root)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
