"""Simulation speed, simulated sparse speedups and area efficiency of the generated array.

Prints one JSON object:

* ``same_layer``: one 2:4 layer on 8×8 (and 16×16) through both back ends: simulated cycles per
  second end to end (images in, results out; compile excluded) and inside the simulator;
* ``verilator_large``: a 512×512×512 2:4 GEMM on 8×8 through Verilator, end to end;
* ``gemm1024x1024x64_8x8``: the 1024×1024×64 GEMM (2:4) on os8x8 with 1 MiB SRAMs (the preset's
  do not hold it: layers are not split into passes yet), end to end and inside the simulator, and
  where the end-to-end time goes (images, simulator process, decoding and checking);
* ``compile_seconds``: Verilator build time per design (0 when it came from the cache);
* ``gemm512_16x16``: simulated cycles of the same 512³ GEMM dense, 2:4 and 1:4 on 16×16
  (bit-exact and cycle-exact against the cost model) and the speedups;
* ``gemm512_16x16p``: the same three runs on the fold-pipelined ``os16x16p`` (``fold_overlap``:
  a fold starts K′ + max(R, C − 1) cycles after the previous one instead of K′ + R + C − 2);
* ``build_seconds``: Verilog generation and Verilator compile of os16x16 (2:4) with the preset's
  SRAMs and with 2 MiB SRAMs, in a fresh cache (Verilator's runtime objects, compiled once per
  installation, copied in from the shared cache): the memories are hand-written ``$readmemh``
  RAMs without contents, so neither figure grows with the SRAM size;
* ``yosys``: generic ``synth`` cell counts of the dense and 2:4 8×8 designs (array + controller;
  memories excluded) and effective (dense-equivalent) MACs per cycle per 1,000 cells.

The 512³ layers need more buffer than the presets have, so those runs use the preset with
larger ``*_sram_kib`` (the datapath is unchanged; only memory depths grow).

    python benchmarks/sim_speed.py [--quick] [--no-yosys] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from hwprune import NM, Dense, LayerSpec, load_array
from hwprune.rtl.emit import synth_stats
from hwprune.sim import simulate
from hwprune.sim import verilator as vl


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


def build(array, slots, compile_log, label):
    t0 = time.perf_counter()
    b = vl.build(array, slots)
    compile_log[label] = round(b.compile_seconds, 1) if not b.cached else 0.0
    compile_log[f"{label} (wall incl. Verilog)"] = round(time.perf_counter() - t0, 1)


def build_times(array, slots):
    """Generation and compile seconds of one design in a fresh cache (runtime objects reused)."""
    import os
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

    # -- the speed case: 1024×1024×64 on 8×8 ---------------------------------------------
    if "speed" in sections:
        mib = a8.replace(weight_sram_kib=1024, act_sram_kib=1024, out_sram_kib=1024)
        layer, w, x = operands(1024, 1024, 64, p24)
        build(mib, 2, compile_log, "8x8 2:4 (1 MiB buffers)")
        runs = [run(layer, w, x, p24, mib, "verilator") for _ in range(3)]
        best = max(runs, key=lambda r: r["cycles_per_second_end_to_end"])
        from hwprune.images import build_images
        t0 = time.perf_counter()
        build_images(layer, w, x, mib, p24)
        images_s = time.perf_counter() - t0
        out["gemm1024x1024x64_8x8"] = {
            "array": "os8x8, buffers 1024/1024/1024 KiB", "pattern": "2:4", "runs": 3, **best,
            "seconds_building_images": round(images_s, 3),
            "seconds_rest_end_to_end": round(best["seconds_end_to_end"] - best["seconds_in_simulator"] - images_s, 3)}

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
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
