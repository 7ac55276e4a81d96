"""``simulate``: run one layer on the generated array and check it against numpy and the cost model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwprune.config import ArrayConfig, load_array
from hwprune.cost import estimate_layer
from hwprune.errors import ConfigError, UnsupportedLayerError, VerificationError
from hwprune.images import reference_outputs
from hwprune.io import check_writable
from hwprune.ir import LayerSpec, im2col
from hwprune.patterns import SparsityPattern, parse_pattern
from hwprune.sim.dma import DmaRun, LayerProgram, build_program, run_amaranth

__all__ = ["SimResult", "simulate", "BACKENDS", "quantize_int8", "layer_operands", "check_simulable",
           "MAX_SIM_ELEMENTS"]

BACKENDS = ("verilator", "amaranth")


@dataclass(frozen=True, slots=True)
class SimResult:
    """What a simulation produced and how it compares with the references.

    ``outputs_int32`` has the activations' leading shape: (M, N) for (M, K) activations, else
    (groups, M, N/groups).  ``cycles`` are the testbench's ticks from the first DMA word to the
    last output stored (every pass's loads, array run and store, on the timeline of
    :mod:`hwprune.sim.dma`); ``predicted_cycles`` the cost model's total (compute + fill +
    stall).  ``load_cycles``/``array_cycles``/``store_cycles`` are the sums over passes of
    L_p, A_p and S_p (they overlap when double-buffered); ``k_split`` > 1 when a tile's K ran in
    that many chunks, whose int32 partial sums the host added.  ``seconds`` is end to end (images
    in, results out) without compilation; ``compile_seconds`` is 0 for a cached Verilator build.
    """

    layer: str
    backend: str
    pattern: str
    slots: int
    folds: int
    outputs_int32: np.ndarray
    reference: np.ndarray
    cycles: int
    predicted_cycles: int
    seconds: float
    run_seconds: float
    compile_seconds: float
    #: outputs whose true sum does not fit the accumulator (two's-complement wrapped; possible
    #: only on arrays with ``allow_accumulator_wrap``)
    wrapped: int = 0
    skipped_groups: int = 0
    passes: int = 1
    pass_order: str = ""
    double_buffer: bool = False
    load_cycles: int = 0
    array_cycles: int = 0
    store_cycles: int = 0
    k_split: int = 1

    @property
    def bit_exact(self) -> bool:
        return bool(np.array_equal(self.outputs_int32, self.reference))

    @property
    def cycle_exact(self) -> bool:
        return self.cycles == self.predicted_cycles

    @property
    def cycles_per_second(self) -> float:
        """Simulated cycles per second of wall time, end to end (compile excluded)."""
        return self.cycles / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, object]:
        return {"layer": self.layer, "backend": self.backend, "pattern": self.pattern,
                "slots": self.slots, "folds": self.folds, "cycles": self.cycles,
                "predicted_cycles": self.predicted_cycles, "cycle_exact": self.cycle_exact,
                "bit_exact": self.bit_exact, "seconds": self.seconds, "run_seconds": self.run_seconds,
                "compile_seconds": self.compile_seconds, "cycles_per_second": self.cycles_per_second,
                "wrapped": self.wrapped, "skipped_groups": self.skipped_groups, "passes": self.passes,
                "pass_order": self.pass_order, "double_buffer": self.double_buffer,
                "load_cycles": self.load_cycles, "array_cycles": self.array_cycles,
                "store_cycles": self.store_cycles, "k_split": self.k_split}


def quantize_int8(weights: np.ndarray, bits: int = 8) -> tuple[np.ndarray, float]:
    """Symmetric per-tensor quantization: (integers in [−(2^(b−1)−1), 2^(b−1)−1], scale)."""
    w = np.asarray(weights, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ConfigError("weights contain NaN or infinity")
    qmax = (1 << (bits - 1)) - 1
    peak = float(np.abs(w).max(initial=0.0))
    scale = peak / qmax if peak > 0 else 1.0
    return np.clip(np.rint(w / scale), -qmax, qmax).astype(np.int64), scale


def layer_operands(layer: LayerSpec, pattern: SparsityPattern | str | None, array: ArrayConfig | str,
                   *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Integer operands to simulate ``layer``: its weights quantized to int8 (random when the
    layer carries none, with about a quarter of the K groups zero in every channel, so group
    skipping is exercised) pruned with ``pattern.mask(|w|)``, and activations of shape (groups, M, K) drawn from
    ``seed`` (for a convolution: a random input feature map lowered by :func:`~hwprune.ir.im2col`)."""
    array = load_array(array)
    pat = parse_pattern(pattern) if pattern is not None else layer.sparsity
    check_simulable(layer)
    rng = np.random.default_rng(seed)
    wb, ab = array.weight_bits, array.act_bits
    if layer.weight is not None:
        w, _ = quantize_int8(layer.weight, wb)
    else:
        lim = 1 << (wb - 1)
        w = rng.integers(-lim, lim, size=(layer.N, layer.K))
        # about a quarter of the K groups all-zero in every channel: skipped by an array with
        # group skipping, so a random GEMM exercises that path too
        gs = array.group_size
        for k0 in range(0, layer.K, gs):
            if rng.random() < 0.25:
                w[:, k0:k0 + gs] = 0
    if pat is not None:
        w = np.where(pat.mask(np.abs(w).astype(np.float64) + rng.random(w.shape) * 1e-3), w, 0)
    lim = 1 << (ab - 1)
    if layer.conv is not None:
        # a random input feature map, lowered by the same im2col the cost model counts
        g = layer.conv
        acts = im2col(rng.integers(-lim, lim, size=(g.batch, g.in_channels, *g.in_size)), g)
    else:
        acts = rng.integers(-lim, lim, size=(layer.groups, layer.M, layer.K))
    return w.astype(np.int64), acts


#: Most operand and output elements a simulation holds (weights N×K, activations groups×M×K,
#: outputs groups×M×N/groups, int64 on the host): any layer runs in passes, but the host keeps it whole.
MAX_SIM_ELEMENTS = 1 << 28


def check_simulable(layer: LayerSpec) -> None:
    """:class:`UnsupportedLayerError` for a layer whose operands the host cannot hold
    (more than :data:`MAX_SIM_ELEMENTS`), before anything is allocated."""
    elements = layer.N * layer.K + layer.groups * layer.M * layer.K + layer.M * layer.N
    if elements > MAX_SIM_ELEMENTS:
        raise UnsupportedLayerError(
            f"{layer.name}: M={layer.M:,} K={layer.K:,} N={layer.N:,} has {elements:,} operand and output "
            f"elements; a simulation holds at most {MAX_SIM_ELEMENTS:,} (the cost model has no limit)")


def simulate(layer: LayerSpec, weights_int8: np.ndarray, acts_int8: np.ndarray,
             pattern: SparsityPattern | str | None, array: ArrayConfig | str, *,
             backend: str = "verilator", vcd: str | Path | None = None, force: bool = False,
             verify: bool = True) -> SimResult:
    """Simulate one layer cycle-accurately on the generated N:M array, in passes, with its data
    movement: the testbench is the DMA engine (:mod:`hwprune.sim.dma`).

    Parameters
    ----------
    layer : LayerSpec
        GEMM shape (M, K, N, groups), of any size: a layer larger than the memories runs in the
        schedule's passes.
    weights_int8 : ndarray
        N×K integer weights (already pruned: their non-zeros are the mask).
    acts_int8 : ndarray
        im2col'd integer activations, (M, K) or (groups, M, K).
    pattern : SparsityPattern or str or None
        The N:M pattern (``"2:4"``) choosing the design's issue width; ``None``/``"dense"``
        runs the dense design (unless the weights' non-zeros allow fewer slots).
    array : ArrayConfig or str
        Array config or preset name: memories (the design), DRAM bandwidth and buffering.
    backend : {"verilator", "amaranth"}
        Verilator (compiled once per design and cached) or the Amaranth Python simulator.
    vcd : path, optional
        Write a VCD trace (Amaranth back end only), atomically: nothing is left at ``vcd`` when
        the run fails or is killed.
    force : bool
        Overwrite an existing ``vcd`` (else :class:`~hwprune.errors.ExportError`).
    verify : bool
        Raise :class:`VerificationError` unless outputs equal the numpy reference bit for bit
        and the simulated total equals ``estimate_layer(...).cycles``.  Whatever ``verify``,
        every pass's design cycle counter must equal the bench's ticks and the pass's
        predicted array cycles.

    Raises
    ------
    UnsupportedLayerError
        Not even one tile of the layer fits a bank of the memories.
    VerificationError
        Outputs or cycles differ, naming the first differing element or both cycle counts.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if vcd is not None and backend != "amaranth":
        raise ConfigError("VCD traces come from the Amaranth back end: pass backend='amaranth'")
    if vcd is not None:
        check_writable(vcd, force=force)
    array = load_array(array)
    array.check_accumulator(layer.K, layer.name)
    check_simulable(layer)
    pat = parse_pattern(pattern) if pattern is not None else None
    t0 = time.perf_counter()
    compile_s = 0.0
    program = build_program(layer, weights_int8, acts_int8, array, pat)
    # the cost model's total (compute + fill + stall), counted off the same plan's closed form
    predicted = estimate_layer(layer, array, pat, program.weights != 0 if layer.has_weights else None).cycles
    max_cycles = 2 * predicted + 1000
    if backend == "verilator":
        from hwprune.sim import verilator
        run, compile_s = verilator.run_program(array, program.dma, max_cycles=max_cycles)
    else:
        run = run_amaranth(program.dma, array, vcd=vcd, force=force, max_cycles=max_cycles)
    _check_counters(layer.name, backend, program, run)
    out = program.decode(run)
    seconds = time.perf_counter() - t0 - compile_s
    ref = reference_outputs(program.weights, program.acts, layer.groups, array.acc_bits)
    wrapped = 0
    if array.accumulator_bits_needed(layer.K) > array.acc_bits:  # allowed to wrap: count it
        wrapped = int((reference_outputs(program.weights, program.acts, layer.groups, 64) != ref).sum())
    if np.ndim(acts_int8) == 2:
        out, ref = out[0], ref[0]
    dtype = np.int32 if array.acc_bits <= 32 else np.int64
    dma = program.dma
    result = SimResult(layer.name, backend, str(pat) if pat is not None else "dense", dma.map.slots,
                       program.schedule.folds_count, out.astype(dtype), ref.astype(dtype), run.ticks,
                       predicted, seconds, run.seconds, compile_s, wrapped,
                       int((~program.schedule.issued).sum()), passes=len(dma.passes), pass_order=program.plan.order,
                       double_buffer=dma.double_buffer, load_cycles=sum(p.load_cycles for p in dma.passes),
                       array_cycles=sum(r.cycles for r in run.passes),
                       store_cycles=sum(p.store.cycles for p in dma.passes), k_split=program.plan.k_split)
    if verify:
        if not result.bit_exact:
            where = tuple(int(i) for i in np.argwhere(result.outputs_int32 != result.reference)[0])
            names = ("row", "col") if len(where) == 2 else ("group", "row", "col")
            at = ", ".join(f"{n}={i}" for n, i in zip(names, where))
            raise VerificationError(f"{layer.name}: output ({at}) is {result.outputs_int32[where]}, "
                                    f"the numpy reference says {result.reference[where]} ({backend})")
        if not result.cycle_exact:
            raise VerificationError(f"{layer.name}: simulated {result.cycles} cycles in {result.passes} "
                                    f"passes, the cost model predicts {predicted} ({backend})")
    return result


def _check_counters(name: str, backend: str, program: LayerProgram, run: DmaRun) -> None:
    """Per pass, the design's cycle counter must equal the ticks the testbench counted from
    start to done and the pass's predicted array cycles A_p."""
    for p, (dp, r) in enumerate(zip(program.dma.passes, run.passes)):
        if r.cycles != r.ticks:
            raise VerificationError(f"{name}: pass {p}: the design's cycle counter says {r.cycles}, the "
                                    f"testbench counted {r.ticks} ticks ({backend})")
        if r.cycles != dp.array_cycles:
            raise VerificationError(f"{name}: pass {p}: the design took {r.cycles} cycles from start to "
                                    f"done, the schedule predicts {dp.array_cycles} ({backend})")
