"""Simulation speed, simulated sparse speedups and area efficiency of the generated array.

Prints one JSON object:

* ``speed``: the issue-13 speed cases on os8x8 with its own (preset) SRAMs, so the layers run
  in passes with their data movement: the 1024×1024×64 GEMM and a ResNet-18 conv layer
  (3×3, 64→64, 56×56, batch 1), both 2:4.  Per layer: cycles (== predicted), passes, and over
  ``--repeat`` runs the median wall seconds and simulated cycles per second end to end (images
  in, results out; compile excluded, reported apart) and inside the simulator process, plus
  cycles per CPU-second (this process and the simulator together: what a run costs whatever
  the machine's load) and the load average during the runs.  Target: ≥ 2 M cycles/s end to end;
* ``same_layer``: one 2:4 layer on 8×8 (and 16×16) through both back ends;
* ``verilator_large``: a 512×512×512 2:4 GEMM on 8×8 through Verilator, end to end;
* ``compile_seconds``: Verilator build time per design (0 when it came from the cache);
* ``gemm512_16x16``: simulated cycles of the same 512³ GEMM dense, 2:4 and 1:4 on 16×16
  (bit-exact and cycle-exact against the cost model) and the speedups;
* ``gemm512_16x16p``: the same three runs on the fold-pipelined ``os16x16p`` (``fold_overlap``:
  a fold starts K′ + max(R, C − 1) cycles after the previous one instead of K′ + R + C − 2);
* ``build_seconds``: Verilog generation and Verilator compile of os16x16 (2:4) with the preset's
  SRAMs and with 2 MiB SRAMs, in a fresh cache (Verilator's runtime objects, compiled once per
  installation, copied in from the shared cache): the memories are hand-written ``$readmemh``
  RAMs without contents, so neither figure grows with the SRAM size.  Target: ≤ 60 s each;
* ``yosys``: generic ``synth`` cell counts of the dense and 2:4 8×8 designs (array + controller;
  memories excluded) and effective (dense-equivalent) MACs per cycle per 1,000 cells.

The 512³ layers of ``verilator_large`` and ``gemm512_*`` run with larger ``*_sram_kib`` (one
pass, the datapath unchanged) so that their cycles compare the datapaths, not DRAM traffic.

    python benchmarks/sim_speed.py [--quick] [--no-yosys] [--sections speed,build] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from hwprune import NM, Dense, LayerSpec, load_array
from hwprune.io import print_json
from hwprune.ir import ConvGeometry
from hwprune.rtl.emit import synth_stats
from hwprune.sim import simulate
from hwprune.sim import verilator as vl
from hwprune.sim.core import layer_operands


def operands(m: int, k: int, n: int, pattern, seed: int = 0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, size=(n, k))
    if not isinstance(pattern, Dense):
        w = np.where(pattern.mask(np.abs(w) + rng.random(w.shape)), w, 0)
    w[w == 0] = 0
    if isinstance(pattern, Dense):
        w[w == 0] = 1                                    # truly dense: no zero to skip
    return LayerSpec.gemm(f"gemm{m}x{k}x{n}", m, k, n), w, rng.integers(-128, 128, size=(m, k))


def run(layer, w, x, pattern, array, backend):
    res = simulate(layer, w, x, pattern, array, backend=backend)   # verify=True: raises if not exact
    return {"cycles": res.cycles, "predicted_cycles": res.predicted_cycles, "bit_exact": res.bit_exact,
            "cycle_exact": res.cycle_exact, "seconds_end_to_end": round(res.seconds, 4),
            "seconds_in_simulator": round(res.run_seconds, 4),
            "cycles_per_second_end_to_end": round(res.cycles_per_second),
            "cycles_per_second_in_simulator": round(res.cycles / res.run_seconds) if res.run_seconds else None}


def speed_case(layer, w, x, pattern, array, repeat, compile_log, label):
    """One layer on Verilator, ``repeat`` times after a first run that builds (or finds) the
    design: medians of wall and CPU seconds, and the load average meanwhile."""
    first = simulate(layer, w, x, pattern, array, backend="verilator")
    compile_log[f"{label} ({array.name})"] = round(first.compile_seconds, 1)
    walls, sims, cpus, loads = [], [], [], []
    for _ in range(repeat):
        loads.append(os.getloadavg()[0])
        c0 = os.times()
        res = simulate(layer, w, x, pattern, array, backend="verilator")   # raises unless exact
        c1 = os.times()
        walls.append(res.seconds)
        sims.append(res.run_seconds)
        cpus.append(sum(getattr(c1, k) - getattr(c0, k)
                        for k in ("user", "system", "children_user", "children_system")))
    wall, sim, cpu = statistics.median(walls), statistics.median(sims), statistics.median(cpus)
    return {"layer": dict(zip("MKN", (layer.M, layer.K, layer.N))), "cycles": res.cycles,
            "predicted_cycles": res.predicted_cycles, "bit_exact": res.bit_exact, "cycle_exact": res.cycle_exact,
            "passes": res.passes, "pass_order": res.pass_order, "double_buffer": res.double_buffer,
            "runs": repeat, "seconds_end_to_end_median": round(wall, 4),
            "seconds_in_simulator_median": round(sim, 4),
            "cycles_per_second_end_to_end": round(res.cycles / wall),
            "cycles_per_second_end_to_end_best": round(res.cycles / min(walls)),
            "cycles_per_second_in_simulator": round(res.cycles / sim),
            "cycles_per_cpu_second": round(res.cycles / cpu) if cpu > 0 else None,
            "load_average_1min": round(statistics.median(loads), 2),
            "compile_seconds": round(first.compile_seconds, 2)}


def build(array, slots, compile_log, label):
    t0 = time.perf_counter()
    b = vl.build(array, slots)
    compile_log[label] = round(b.compile_seconds, 1) if not b.cached else 0.0
    compile_log[f"{label} (wall incl. Verilog)"] = round(time.perf_counter() - t0, 1)


def build_times(array, slots):
    """Generation and compile seconds of one design in a fresh cache (runtime objects reused)."""
    import shutil
    import tempfile
    from pathlib import Path

    runtime = vl.runtime_dir(vl.toolchain())
    with tempfile.TemporaryDirectory(prefix="hwprune-bench-") as tmp:
        if runtime.is_dir():
            shutil.copytree(runtime, Path(tmp) / "verilator" / runtime.name)
        old = os.environ.get("HWPRUNE_CACHE")
        os.environ["HWPRUNE_CACHE"] = tmp
        try:
            b = vl.build(array, slots)
        finally:
            if old is None:
                del os.environ["HWPRUNE_CACHE"]
            else:
                os.environ["HWPRUNE_CACHE"] = old
    return {"verilog_seconds": round(b.verilog_seconds, 2),
            "verilator_compile_seconds": round(b.compile_seconds - b.verilog_seconds, 2),
            "total_seconds": round(b.compile_seconds, 2), "runtime_reused": runtime.is_dir()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller layers, no 16×16 512³ runs")
    ap.add_argument("--no-yosys", action="store_true", help="skip the synthesis statistics")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per speed case (default 5; medians)")
    ap.add_argument("--sections", default="build,speed,same,large,gemm,yosys",
                    help="comma-separated subset of: build, speed, same, large, gemm, yosys (default: all)")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))

    out: dict[str, object] = {}
    compile_log: dict[str, float] = {}
    a8, a16 = load_array("os8x8"), load_array("os16x16")
    p24, p14, dense = NM(2, 4), NM(1, 4), Dense()

    # -- build time vs SRAM size -----------------------------------------------------------------
    if "build" in sections:
        kib = 2048
        out["build_seconds"] = {
            "os16x16": build_times(a16, 2),
            f"os16x16, {kib} KiB SRAMs": build_times(a16.replace(weight_sram_kib=kib, act_sram_kib=kib,
                                                                  out_sram_kib=kib), 2)}

    # -- the same 2:4 layer through both back ends -------------------------------------------
    same = {}
    for name, array, shape in () if "same" not in sections else (("8x8", a8, (32, 256, 32)), ("16x16", a16, (32, 128, 32))):
        if args.quick and name == "16x16":
            continue
        layer, w, x = operands(*shape, p24)
        build(array, 2, compile_log, f"{name} 2:4")
        v = run(layer, w, x, p24, array, "verilator")
        a = run(layer, w, x, p24, array, "amaranth")
        same[name] = {"layer": dict(zip("MKN", shape)), "pattern": "2:4", "verilator": v, "amaranth": a,
                      "verilator_over_amaranth_end_to_end": round(v["cycles_per_second_end_to_end"]
                                                                  / a["cycles_per_second_end_to_end"]),
                      "verilator_over_amaranth_in_simulator": round(v["cycles_per_second_in_simulator"]
                                                                    / a["cycles_per_second_in_simulator"])}
    if same:
        out["same_layer"] = same

    # -- a large layer through Verilator, end to end -------------------------------------------
    if "large" in sections:
        big8 = a8.replace(weight_sram_kib=256, act_sram_kib=256, out_sram_kib=1024)
        size = 256 if args.quick else 512
        layer, w, x = operands(size, size, size, p24)
        build(big8, 2, compile_log, "8x8 2:4 (large buffers)")
        out["verilator_large"] = {"array": "os8x8, buffers 256/256/1024 KiB", "layer": [size] * 3,
                                  "pattern": "2:4", **run(layer, w, x, p24, big8, "verilator")}

    # -- the speed cases: os8x8 with its own SRAMs (passes) -------------------------------
    if "speed" in sections:
        resnet = LayerSpec.from_conv("resnet18_conv3x3_64x64_56", ConvGeometry.make(
            in_channels=64, out_channels=64, in_size=56, kernel=3, padding=1))
        cases = (("gemm1024x1024x64", operands(1024, 1024, 64, p24)),
                 ("resnet18_conv3x3_64x64_56", (resnet, *layer_operands(resnet, p24, a8))))
        out["speed"] = {"array": "os8x8 (preset SRAMs)", "pattern": "2:4", "target_cycles_per_second": 2_000_000,
                        "build_seconds_fresh_cache": build_times(a8, 2),
                        **{name: speed_case(*ops, p24, a8, args.repeat, compile_log, name)
                           for name, ops in cases}}

    # -- dense vs 2:4 vs 1:4 on 16×16 ------------------------------------------------------------
    # (and on the fold-pipelined os16x16p: same datapath, folds overlap)
    if not args.quick and "gemm" in sections:
        for key, base in (("gemm512_16x16", a16), ("gemm512_16x16p", load_array("os16x16p"))):
            big16 = base.replace(weight_sram_kib=1024, act_sram_kib=1024, out_sram_kib=1024)
            gemm = {"array": f"{base.name}, buffers 1024/1024/1024 KiB", "fold_overlap": base.fold_overlap}
            for label, pat in (("dense", dense), ("2:4", p24), ("1:4", p14)):
                layer, w, x = operands(512, 512, 512, pat)
                slots = 4 if pat is dense else pat.n
                build(big16, slots, compile_log, f"{base.name} {label} (large buffers)")
                gemm[label] = run(layer, w, x, pat, big16, "verilator")
            gemm["speedup_2:4"] = round(gemm["dense"]["cycles"] / gemm["2:4"]["cycles"], 3)
            gemm["speedup_1:4"] = round(gemm["dense"]["cycles"] / gemm["1:4"]["cycles"], 3)
            out[key] = gemm

    # -- area efficiency on 8×8 ------------------------------------------------------------------
    if not args.no_yosys and "yosys" in sections:
        ys = {}
        m, k, n = (64, 256, 64)
        for label, pat, slots in (("dense", dense, 4), ("2:4", p24, 2)):
            t0 = time.perf_counter()
            st = synth_stats(a8, slots)
            layer, w, x = operands(m, k, n, pat)
            res = simulate(layer, w, x, pat, a8, backend="verilator")
            cells = st["total"]["cells"]
            eff = layer.macs / res.cycles
            ys[label] = {"array_cells": st["array"]["cells"], "controller_cells": st["controller"]["cells"],
                         "cells": cells, "flip_flops": st["total"]["flip_flops"],
                         "multipliers": st["total"]["multipliers"], "memory_bits": st["memory_bits"],
                         "layer": [m, k, n], "cycles": res.cycles,
                         "effective_macs_per_cycle": round(eff, 2),
                         "effective_macs_per_cycle_per_kcell": round(1000 * eff / cells, 4),
                         "synth_seconds": round(time.perf_counter() - t0, 1)}
        ys["ratio_2:4_over_dense"] = round(ys["2:4"]["effective_macs_per_cycle_per_kcell"]
                                           / ys["dense"]["effective_macs_per_cycle_per_kcell"], 3)
        out["yosys"] = ys
    out["compile_seconds"] = compile_log
    print_json(out, args.out, force=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
