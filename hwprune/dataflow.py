"""Weight- and input-stationary dataflows: SCALE-Sim 3's dense cycle counts, traffic and energy.

The generated RTL is output-stationary (:mod:`hwprune.schedule`).  Weight-stationary (``ws``) and
input-stationary (``is``) arrays exist in the cost model only, so a design-space sweep can ask
whether a dense WS or IS array of the same size beats a sparse OS one.  They skip nothing: a
sparse pattern on them is costed dense and the :class:`~hwprune.cost.LayerCost` says so in
``note``.

How SCALE-Sim 3 maps Y[M×N] = X[M×K]·Wᵀ onto an R×C array (``scalesim/compute/
systolic_compute_{os,ws,is}.py``): each dataflow pins two GEMM dimensions to the array's rows
and columns and streams the third, T, through it.

======  ============  ============  =========  ================================
flow    rows ← (Sr)   cols ← (Sc)   T          stationary in the PEs
======  ============  ============  =========  ================================
os      M             N             K          partial sums (outputs)
ws      K             N             M          a K×N weight tile
is      K             M             N          a K×M input tile
======  ============  ============  =========  ================================

A fold is one (⌈Sr/R⌉ × ⌈Sc/C⌉) tile.  SCALE-Sim's demand matrices give every WS or IS fold
R lines to load the stationary tile, T lines of streamed operands, C − 1 lines for the last
partial sum to drain and R − 1 lines of skew: **2R + C + T − 2** lines (OS: T + R + C − 2).  With
no memory stalls its ``Total Cycles`` is the last line's index, Σ lines − 1, hence

* ``ws``: compute_cycles = G·⌈K/R⌉·⌈N/C⌉·(2R + C + M − 2) − 1
* ``is``: compute_cycles = G·⌈K/R⌉·⌈M/C⌉·(2R + C + N − 2) − 1

for G conv groups run back to back (as the OS schedule runs them: SCALE-Sim's −1 once per layer).

SRAM traffic follows SCALE-Sim's read/write counters: the stationary operand is read once, the
streamed operand once per fold along the other pinned dimension, and partial sums are written
once per K fold:

* ``ws``: weights K·N, activations M·K·⌈N/C⌉, outputs M·N·⌈K/R⌉ (accumulator width)
* ``is``: activations M·K, weights K·N·⌈M/C⌉, outputs M·N·⌈K/R⌉

DRAM: the stationary operand is fetched once; the streamed one once, or once per fold of the
other pinned dimension when it does not fit its SRAM; final outputs are written once, plus a
spill of partial sums (written and read back at accumulator width per extra K fold) when one
column fold's outputs do not fit the output SRAM.  Energy uses the array's table like the OS
path: a MAC per dense MAC (no zero skipping, no multiplexer), and per MAC the bytes of the two
moving operands passed between PEs (WS: activation and partial sum; IS: weight and partial sum).
Every function here takes plain integers or numpy arrays alike, so the vectorised sweep costs
configurations with the same formulas.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import ArrayConfig
from .ir import LayerSpec
from .patterns import Dense, SparsityPattern

__all__ = ["STATIONARY", "fold_dims", "stationary_compute_cycles", "stationary_sram_elems",
           "stationary_dram_refetch", "stationary_psum_spill", "stationary_hop_bits",
           "estimate_stationary"]

#: the dataflows this module costs (``os`` is :mod:`hwprune.schedule`)
STATIONARY = ("ws", "is")


def _ceil_div(a: Any, b: Any) -> Any:
    return -(-a // b)


def fold_dims(dataflow: str, rows: Any, cols: Any, M: Any, K: Any, N: Any) -> tuple[Any, Any, Any]:
    """(row folds, column folds, streamed length T) of a WS or IS mapping (table above)."""
    if dataflow == "ws":
        return _ceil_div(K, rows), _ceil_div(N, cols), M
    if dataflow == "is":
        return _ceil_div(K, rows), _ceil_div(M, cols), N
    raise ValueError(f"not a stationary dataflow: {dataflow!r}")


def stationary_compute_cycles(dataflow: str, rows: Any, cols: Any, M: Any, K: Any, N: Any,
                              groups: Any = 1) -> Any:
    """SCALE-Sim 3's ``Total Cycles``: G·folds·(2R + C + T − 2) − 1 (module docstring)."""
    rf, cf, t = fold_dims(dataflow, rows, cols, M, K, N)
    return groups * rf * cf * (2 * rows + cols + t - 2) - 1


def stationary_sram_elems(dataflow: str, rows: Any, cols: Any, M: Any, K: Any, N: Any,
                          groups: Any = 1) -> tuple[Any, Any, Any]:
    """Elements (weights, activations, partial-sum writes) moved between SRAM and the array."""
    rf, cf, _ = fold_dims(dataflow, rows, cols, M, K, N)
    w, a, o = K * N, M * K, M * N
    if dataflow == "ws":
        return groups * w, groups * a * cf, groups * o * rf
    return groups * w * cf, groups * a, groups * o * rf


def stationary_dram_refetch(dataflow: str, rows: Any, cols: Any, M: Any, K: Any, N: Any,
                            weight_bytes: Any, in_bytes: Any, w_sram: Any, a_sram: Any) -> tuple[Any, Any]:
    """(weight fetches, input fetches) from DRAM: the streamed operand once per column fold
    unless it fits its SRAM, the stationary one once."""
    _, cf, _ = fold_dims(dataflow, rows, cols, M, K, N)
    if dataflow == "ws":
        return 1, np.where(in_bytes <= a_sram, 1, cf)
    return np.where(weight_bytes <= w_sram, 1, cf), 1


def stationary_psum_spill(dataflow: str, rows: Any, cols: Any, M: Any, K: Any, N: Any, acc_bits: Any,
                          out_sram: Any, groups: Any = 1) -> Any:
    """DRAM bytes of partial sums spilled (written and read back) when one column fold's
    outputs (WS: M×C, IS: C×N, at accumulator width) do not fit the output SRAM."""
    rf, _, _ = fold_dims(dataflow, rows, cols, M, K, N)
    tile = (M * np.minimum(cols, N) if dataflow == "ws" else np.minimum(cols, M) * N) * acc_bits / 8
    spill = 2 * (rf - 1) * _ceil_div(M * N * acc_bits, 8) * groups
    return np.where(tile > out_sram, spill, 0)


def stationary_hop_bits(dataflow: str, weight_bits: Any, act_bits: Any, acc_bits: Any) -> Any:
    """Bits passed PE to PE per MAC: the two moving operands (WS: activation and partial sum,
    IS: weight and partial sum)."""
    return (act_bits if dataflow == "ws" else weight_bits) + acc_bits


def estimate_stationary(spec: LayerSpec, array: ArrayConfig, pattern: SparsityPattern | None,
                        mask: np.ndarray | None):
    """Cost of one layer on a WS or IS array (dense: any pattern is noted, not exploited).

    Parameters
    ----------
    spec : LayerSpec
        The layer.
    array : ArrayConfig
        An array with ``dataflow`` "ws" or "is".
    pattern, mask : optional
        Only count the useful (non-zero) MACs; cycles, traffic and energy are dense.

    Returns
    -------
    LayerCost
        ``fill_cycles`` is 0 (there is no RTL to add start-up cycles) and ``note`` says when a
        sparse pattern was costed dense.
    """
    from .cost import LayerCost, Traffic, _input_elems

    df, R, C = array.dataflow, array.rows, array.cols
    G, M, K, npg = spec.groups, spec.M, spec.K, spec.n_per_group
    pat = pattern if pattern is not None else Dense()
    if mask is not None:
        nonzero = int(np.asarray(mask).astype(bool).sum()) * M
    elif spec.has_weights:
        nonzero = round(spec.macs * pat.density)
    else:
        nonzero = spec.macs
    sparse = spec.has_weights and (mask is not None or not isinstance(pat, Dense))
    note = (f"{df} dataflow has no zero skipping: {pat if mask is None else 'the mask'} costed dense"
            if sparse else "")

    compute = int(stationary_compute_cycles(df, R, C, M, K, npg, G))
    w_el, a_el, o_el = stationary_sram_elems(df, R, C, M, K, npg, G)
    wb, ab, accb = array.weight_bits, array.act_bits, array.acc_bits
    w_bytes, in_bytes = math.ceil(spec.N * K * wb / 8), math.ceil(_input_elems(spec) * ab / 8)
    w_ref, a_ref = stationary_dram_refetch(df, R, C, M, K, npg, w_bytes, in_bytes,
                                           array.weight_sram_kib * 1024, array.act_sram_kib * 1024)
    spill = int(stationary_psum_spill(df, R, C, M, K, npg, accb, array.out_sram_kib * 1024, G))
    traffic = Traffic(
        weights_sram=math.ceil(w_el * wb / 8), index_sram=0, acts_sram=math.ceil(a_el * ab / 8),
        outputs_sram=math.ceil(o_el * accb / 8),
        weights_dram=w_bytes * int(w_ref), index_dram=0, acts_dram=in_bytes * int(a_ref),
        outputs_dram=math.ceil(M * spec.N * ab / 8) + spill)
    sram_need = max(traffic.weights_sram, traffic.acts_sram, traffic.outputs_sram)
    transfer = max(traffic.dram / array.dram_bytes_per_cycle, sram_need / array.sram_bytes_per_cycle)
    stall = max(0, math.ceil(transfer) - compute)
    e = array.energy
    breakdown = {
        "mac": spec.macs * e.mac,
        "mux": 0.0,
        "pe_registers": spec.macs * stationary_hop_bits(df, wb, ab, accb) / 8 * e.reg_byte,
        "sram": traffic.sram * e.sram_byte,
        "dram": traffic.dram * e.dram_byte,
    }
    return LayerCost(spec.name, str(spec.kind), M, K, spec.N, G, str(pat), True, compute, 0, stall,
                     spec.macs, nonzero, spec.macs, traffic, float(sum(breakdown.values())), breakdown,
                     R * C, note)
