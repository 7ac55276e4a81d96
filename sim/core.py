"""``simulate``: run one layer on the generated array and check it against numpy and the cost model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwprune.config import ArrayConfig, load_array
from hwprune.cost import estimate_layer
from hwprune.errors import ConfigError, UnsupportedLayerError, VerificationError
from hwprune.images import LayerImages, build_images, decode_outputs, reference_outputs
from hwprune.io import atomic_path, check_writable
from hwprune.ir import LayerSpec, im2col
from hwprune.patterns import SparsityPattern, parse_pattern

__all__ = ["SimResult", "simulate", "BACKENDS", "quantize_int8", "layer_operands"]

BACKENDS = ("verilator", "amaranth")


@dataclass(frozen=True, slots=True)
class SimResult:
    """What a simulation produced and how it compares with the references.

    ``outputs_int32`` has the activations' leading shape: (M, N) for (M, K) activations, else
    (groups, M, N/groups).  ``seconds`` is end to end (images in, results out) without
    compilation; ``compile_seconds`` is 0 for a cached Verilator build.
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
                "wrapped": self.wrapped, "skipped_groups": self.skipped_groups}


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
    _check_operands_fit(layer, pat, array)
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


def _check_operands_fit(layer: LayerSpec, pattern: SparsityPattern | None, array: ArrayConfig) -> None:
    """UnsupportedLayerError before allocating operands that cannot fit the array's memories.

    Lower bounds, whatever the mask: every activation is stored; random weights (a layer
    without its own) keep ``density`` of N×K non-zeros and every output channel.  The exact
    check, word by word, is :func:`~hwprune.images.build_images`'s.
    """
    density = pattern.density if pattern is not None else 1.0
    needs = [("act_sram_kib", layer.groups * layer.M * layer.K * array.act_bits, "activations")]
    if layer.weight is None:
        needs += [("weight_sram_kib", density * layer.N * layer.K * array.weight_bits, "weights"),
                  ("out_sram_kib", layer.M * layer.N * array.acc_bits, "outputs")]
    for key, bits, what in needs:
        have = getattr(array, key)
        if bits > have * 8192:
            raise UnsupportedLayerError(
                f"{layer.name}: its {what} need at least {bits / 8192:,.0f} KiB but array "
                f"{array.name!r} has {key} = {have:g}; use a larger array config or split the layer")


def _amaranth_run(images: LayerImages, array: ArrayConfig, *, vcd: str | Path | None, force: bool,
                  max_cycles: int) -> tuple[list[int], int, int, float]:
    from amaranth.sim import Simulator

    from hwprune.rtl import SparseArrayTop

    init = {k: v for k, v in images.words.items() if k != "outputs"}
    top = SparseArrayTop(array=array, slots=images.map.slots, init=init)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    n_out = len(images.words["outputs"])
    result: dict[str, object] = {}

    async def bench(ctx):
        ctx.set(top.start, 1)                 # cycle 0
        await ctx.tick()
        ctx.set(top.start, 0)
        n = 1
        while not ctx.get(top.done):
            if n >= max_cycles:
                result["timeout"] = n
                return
            await ctx.tick()
            n += 1
        result["cycles"] = ctx.get(top.cycles)
        result["ticks"] = n
        words = []
        for a in range(n_out):
            ctx.set(top.host_addr, a)
            await ctx.tick()
            words.append(ctx.get(top.host_data))
        result["words"] = words

    sim.add_testbench(bench)
    t0 = time.perf_counter()
    if vcd is not None:
        with atomic_path(vcd, force=force) as tmp, sim.write_vcd(str(tmp)):
            sim.run()
    else:
        sim.run()
    secs = time.perf_counter() - t0
    if "timeout" in result:
        raise VerificationError(f"{images.layer}: done never rose within {result['timeout']} cycles")
    return result["words"], int(result["cycles"]), int(result["ticks"]), secs


def simulate(layer: LayerSpec, weights_int8: np.ndarray, acts_int8: np.ndarray,
             pattern: SparsityPattern | str | None, array: ArrayConfig | str, *,
             backend: str = "verilator", vcd: str | Path | None = None, force: bool = False,
             verify: bool = True) -> SimResult:
    """Simulate one layer cycle-accurately on the generated N:M array.

    Parameters
    ----------
    layer : LayerSpec
        GEMM shape (M, K, N, groups).
    weights_int8 : ndarray
        N×K integer weights (already pruned: their non-zeros are the mask).
    acts_int8 : ndarray
        im2col'd integer activations, (M, K) or (groups, M, K).
    pattern : SparsityPattern or str or None
        The N:M pattern (``"2:4"``) choosing the design's issue width; ``None``/``"dense"``
        runs the dense design (unless the weights' non-zeros allow fewer slots).
    array : ArrayConfig or str
        Array config or preset name.  The memories are sized by it, not by the layer.
    backend : {"verilator", "amaranth"}
        Verilator (compiled once per design and cached) or the Amaranth Python simulator.
    vcd : path, optional
        Write a VCD trace (Amaranth back end only), atomically: nothing is left at ``vcd`` when
        the run fails or is killed.
    force : bool
        Overwrite an existing ``vcd`` (else :class:`~hwprune.errors.ExportError`).
    verify : bool
        Raise :class:`VerificationError` unless outputs equal the numpy reference bit for bit
        and cycles equal ``estimate_layer(...).array_cycles``.

    Raises
    ------
    UnsupportedLayerError
        The layer does not fit the array's memories.
    VerificationError
        Outputs or cycles differ (with ``verify``), naming the first differing element.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if vcd is not None and backend != "amaranth":
        raise ConfigError("VCD traces come from the Amaranth back end: pass backend='amaranth'")
    if vcd is not None:
        check_writable(vcd, force=force)
    array = load_array(array)
    array.check_accumulator(layer.K, layer.name)
    pat = parse_pattern(pattern) if pattern is not None else None
    acts = np.asarray(acts_int8)
    t0 = time.perf_counter()
    compile_s = 0.0
    images = build_images(layer, weights_int8, acts, array, pat)
    mask = np.asarray(weights_int8) != 0
    predicted = estimate_layer(layer, array, pat, mask).array_cycles
    max_cycles = 2 * predicted + 1000
    if backend == "verilator":
        from hwprune.sim import verilator
        words, cycles, ticks, run_s, compile_s = verilator.run_layer(array, images, max_cycles=max_cycles)
    else:
        words, cycles, ticks, run_s = _amaranth_run(images, array, vcd=vcd, force=force,
                                                    max_cycles=max_cycles)
    if cycles != ticks:
        raise VerificationError(f"{layer.name}: the design's cycle counter says {cycles}, the "
                                f"testbench counted {ticks} ticks ({backend})")
    out = decode_outputs(words, images)
    seconds = time.perf_counter() - t0 - compile_s
    ref = images.expected
    if acts.ndim == 2:
        out, ref = out[0], ref[0]
    dtype = np.int32 if array.acc_bits <= 32 else np.int64
    wrapped = 0
    if array.accumulator_bits_needed(layer.K) > array.acc_bits:  # allowed to wrap: count it
        x3 = acts if acts.ndim == 3 else acts[None]
        wrapped = int((reference_outputs(weights_int8, x3, layer.groups, 64) != images.expected).sum())
    result = SimResult(layer.name, backend, str(pat) if pat is not None else "dense", images.map.slots,
                       images.folds, out.astype(dtype), ref.astype(dtype), cycles, predicted, seconds,
                       run_s, compile_s, wrapped, int((~images.schedule.issued).sum()))
    if verify:
        if not result.bit_exact:
            where = tuple(int(i) for i in np.argwhere(result.outputs_int32 != result.reference)[0])
            names = ("row", "col") if len(where) == 2 else ("group", "row", "col")
            at = ", ".join(f"{n}={i}" for n, i in zip(names, where))
            raise VerificationError(f"{layer.name}: output ({at}) is {result.outputs_int32[where]}, "
                                    f"the numpy reference says {result.reference[where]} ({backend})")
        if not result.cycle_exact:
            raise VerificationError(f"{layer.name}: simulated {cycles} cycles, the cost model "
                                    f"predicts {predicted} ({backend})")
    return result
