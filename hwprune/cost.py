"""Cost model: cycles, bytes and picojoules of a layer on an array, counted off its schedule.

``compute_cycles`` follows SCALE-Sim 3's output-stationary convention exactly (see
:mod:`hwprune.schedule`).  The layer runs in *passes* (:func:`hwprune.schedule.plan_passes`):
rectangles of its schedule that fit one bank of the on-chip memories, each loaded by the host's
DMA, computed, and its outputs stored.  ``fill_cycles`` = Σ over passes of the RTL's array cycles
(start to done, what the design's cycle counter reports) − ``compute_cycles``: the RTL's fill of
every pass and the pass boundaries.  ``stall_cycles`` = the pass timeline's total − Σ array
cycles: the time the array waits for the DMA, single-buffered (load, compute, store in turn) or
double-buffered (the next pass loads while this one computes), exactly what a simulation with
the DMA model counts.  ``cycles`` is that timeline's total.

DRAM bytes are exactly what the DMA moves for this design: every word it loads into the weight,
stream, activation and descriptor memories (loads a pass can skip because its bank already holds
the words are not counted) and every output word it stores.  This deliberately includes the
im2col expansion of activations (the activation memory holds R-row windows, padded) and the
int32 partial sums (the host requantizes, and adds K chunks when K is split).  ``weights_dram``
and ``index_dram`` split the weight words' bytes by their value and index bits; the schedule
stream and the descriptors count as index (metadata) bytes.  SRAM bytes are array ↔ buffer
transfers.  Weight- and input-stationary arrays keep their own formulas (:mod:`hwprune.dataflow`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .config import ArrayConfig
from .ir import LayerSpec
from .patterns import Dense, SparsityPattern
from .schedule import PassPlan, Schedule, make_schedule, plan_passes

__all__ = ["Traffic", "LayerCost", "ModelCost", "estimate_layer", "estimate_model", "layer_mask",
           "utilization", "dram_traffic"]


def utilization(macs_nonzero: float, pes: int, cycles: float) -> float:
    """Useful (non-zero) MACs per PE-cycle, at most 1: the physical bound over the cycles taken."""
    return macs_nonzero / (pes * cycles) if cycles else 0.0


@dataclass(frozen=True, slots=True)
class Traffic:
    """Bytes moved per memory level.  ``*_sram`` are on-chip buffer ↔ array transfers."""

    weights_sram: int
    index_sram: int
    acts_sram: int
    outputs_sram: int
    weights_dram: int
    index_dram: int
    acts_dram: int
    outputs_dram: int

    @property
    def sram(self) -> int:
        return self.weights_sram + self.index_sram + self.acts_sram + self.outputs_sram

    @property
    def dram(self) -> int:
        return self.weights_dram + self.index_dram + self.acts_dram + self.outputs_dram

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values())))

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "sram": self.sram, "dram": self.dram}


@dataclass(frozen=True, slots=True)
class LayerCost:
    """What one layer costs on one array under one pattern (or mask)."""

    name: str
    kind: str
    M: int
    K: int
    N: int
    groups: int
    pattern: str
    exact: bool              # True when counted from a mask (or a pattern that fixes the count)
    compute_cycles: int
    fill_cycles: int
    stall_cycles: int
    macs_dense: int
    macs_nonzero: int
    macs_executed: int
    bytes: Traffic
    energy_pj: float
    energy_breakdown: Mapping[str, float]
    array_pes: int
    note: str = ""           # e.g. a sparse pattern costed dense on a WS/IS array
    passes: int = 1          # SRAM-sized passes (hwprune.schedule.plan_passes)
    pass_order: str = ""     # "cols-outer" or "rows-outer" (the one moving fewer DRAM bytes)
    k_split: int = 1         # K chunks per tile (> 1: the host adds the int32 partial sums)

    @property
    def cycles(self) -> int:
        return self.compute_cycles + self.fill_cycles + self.stall_cycles

    @property
    def array_cycles(self) -> int:
        """Cycles with every operand on chip: what the cycle-accurate simulation reports."""
        return self.compute_cycles + self.fill_cycles

    @property
    def bound_cycles(self) -> int:
        """Physical bound ⌈non-zero MACs / (R·C)⌉."""
        return math.ceil(self.macs_nonzero / self.array_pes)

    @property
    def utilization(self) -> float:
        """Useful (non-zero) MACs per PE-cycle (:func:`utilization`)."""
        return utilization(self.macs_nonzero, self.array_pes, self.cycles)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "M": self.M, "K": self.K, "N": self.N,
                "groups": self.groups, "pattern": self.pattern, "exact": self.exact,
                "cycles": self.cycles, "compute_cycles": self.compute_cycles,
                "fill_cycles": self.fill_cycles, "stall_cycles": self.stall_cycles,
                "macs_dense": self.macs_dense, "macs_nonzero": self.macs_nonzero,
                "macs_executed": self.macs_executed, "utilization": self.utilization,
                "bound_cycles": self.bound_cycles, "bytes": self.bytes.to_dict(),
                "energy_pj": self.energy_pj, "energy_breakdown_pj": dict(self.energy_breakdown),
                "passes": self.passes, "pass_order": self.pass_order, "k_split": self.k_split,
                "note": self.note}


@dataclass(frozen=True, slots=True)
class ModelCost:
    """Per-layer costs of a model plus its totals."""

    array: ArrayConfig
    layers: tuple[LayerCost, ...]

    def total(self, attr: str) -> float:
        return sum(getattr(layer, attr) for layer in self.layers)

    @property
    def cycles(self) -> int:
        return int(self.total("cycles"))

    @property
    def bytes(self) -> Traffic:
        out = Traffic(0, 0, 0, 0, 0, 0, 0, 0)
        for layer in self.layers:
            out = out + layer.bytes
        return out

    @property
    def utilization(self) -> float:
        """Useful MACs per PE-cycle over the whole model (:func:`utilization`)."""
        return utilization(self.total("macs_nonzero"), self.array.rows * self.array.cols, self.cycles)

    @property
    def latency_us(self) -> float:
        return self.cycles / self.array.clock_mhz

    def to_dict(self) -> dict[str, object]:
        return {"array": self.array.to_dict(), "layers": [layer.to_dict() for layer in self.layers],
                "total": {"cycles": self.cycles, "compute_cycles": int(self.total("compute_cycles")),
                          "macs_dense": int(self.total("macs_dense")),
                          "macs_nonzero": int(self.total("macs_nonzero")),
                          "macs_executed": int(self.total("macs_executed")),
                          "stall_cycles": int(self.total("stall_cycles")), "passes": int(self.total("passes")),
                          "energy_pj": self.total("energy_pj"), "latency_us": self.latency_us,
                          "bytes": self.bytes.to_dict()}}


def layer_mask(spec: LayerSpec) -> np.ndarray | None:
    """The layer's own non-zero mask when its weights are known and actually sparse."""
    if spec.weight is None:
        return None
    mask = spec.weight != 0
    return None if mask.all() else mask


def _input_elems(spec: LayerSpec) -> int:
    if spec.conv is not None:
        g = spec.conv
        return g.batch * g.in_channels * g.in_size[0] * g.in_size[1]
    return spec.M * spec.K * spec.groups


def dram_traffic(moved_bytes, weight_bits, slot_index_bits):
    """(weights, index, acts, outputs) DRAM bytes from the bytes each memory moves
    (:data:`hwprune.schedule.PassWords` order): the weight words split by their value and index
    bits, stream and descriptors as index bytes.  Numbers or numpy arrays."""
    weights, stream, acts, desc, outputs = moved_bytes
    index = weights * slot_index_bits // (weight_bits + slot_index_bits)
    return weights - index, index + stream + desc, acts, outputs


def _count(spec: LayerSpec, array: ArrayConfig, sched: Schedule, pattern: SparsityPattern,
           mask: np.ndarray | None) -> LayerCost:
    R, C = array.rows, array.cols
    kp = sched.tile_k_prime()                                          # (groups, col_tiles)
    cols_in = np.minimum(C, sched.n_out - np.arange(sched.col_tiles) * C)  # real columns per tile
    slot_words = int((kp * cols_in).sum())                            # (value, index) pairs per row sweep
    macs_executed = slot_words * spec.M
    # activation positions a fold reads: whole windows of the issued groups (partial last one shorter)
    window = np.full(sched.k_groups, array.group_size, dtype=np.int64)
    if spec.K % array.group_size:
        window[-1] = spec.K % array.group_size
    positions = sched.issued_sum(window).astype(np.float64)
    if not sched.exact:
        positions = positions * sched.expected_issue
    act_reads = int(round(positions.sum())) * spec.M

    wb, ib, ab, accb = array.weight_bits, array.index_bits, array.act_bits, array.acc_bits
    slot_index_bits = ib if sched.slots < sched.group_size else 0      # dense needs no indices
    w_store = math.ceil(slot_words * wb / 8)
    i_store = math.ceil(slot_words * slot_index_bits / 8)
    rt = sched.row_tiles
    outputs = spec.M * sched.n_out * spec.groups
    plan = plan_passes(sched, array)
    dram = dram_traffic(tuple(plan.moved_bytes.as_dict().values()), wb, slot_index_bits)
    traffic = Traffic(
        weights_sram=w_store * rt, index_sram=i_store * rt, acts_sram=math.ceil(act_reads * ab / 8),
        outputs_sram=math.ceil(outputs * accb / 8), weights_dram=dram[0], index_dram=dram[1],
        acts_dram=dram[2], outputs_dram=dram[3])

    compute = sched.compute_cycles()
    fill = plan.array_cycles - compute
    stall = plan.cycles - plan.array_cycles

    if mask is not None:
        nonzero = int(mask.sum()) * spec.M
    elif spec.has_weights:
        nonzero = round(spec.macs * pattern.density)
    else:
        nonzero = spec.macs
    e = array.energy
    hops = macs_executed * (wb + slot_index_bits + ab) / 8           # operand bytes passed PE to PE
    breakdown = {
        "mac": macs_executed * e.mac,
        "mux": macs_executed * e.mux if sched.slots < sched.group_size else 0.0,
        "pe_registers": hops * e.reg_byte,
        "sram": traffic.sram * e.sram_byte,
        "dram": traffic.dram * e.dram_byte,
    }
    return LayerCost(spec.name, str(spec.kind), spec.M, spec.K, spec.N, spec.groups, str(pattern),
                     sched.exact and (mask is not None or pattern.kind in ("dense", "nm")),
                     compute, fill, stall, spec.macs, nonzero, macs_executed, traffic,
                     float(sum(breakdown.values())), breakdown, R * C, _pass_note(plan), plan.count,
                     plan.order, plan.k_split)


def _pass_note(plan: PassPlan) -> str:
    if plan.k_split == 1:
        return ""
    return "K split (see k_split): a tile's K does not fit one bank; the host adds the int32 partial sums"


def estimate_layer(spec: LayerSpec, array: ArrayConfig, pattern: SparsityPattern | None = None,
                   mask: np.ndarray | None = None) -> LayerCost:
    """Cost of one layer.

    Parameters
    ----------
    spec : LayerSpec
        The layer.
    array : ArrayConfig
        The accelerator.
    pattern : SparsityPattern, optional
        What-if pattern; defaults to the layer's recorded sparsity, else dense.
    mask : ndarray, optional
        N×K boolean mask for exact counting (padding slots, skipped groups).  When neither a
        pattern nor a mask is given and the layer's weights contain zeros, their non-zeros are
        the mask.
    """
    array.check_accumulator(spec.K, spec.name)
    if mask is None and pattern is None:
        mask = layer_mask(spec)
    pat = pattern if pattern is not None else (spec.sparsity or Dense())
    if not spec.has_weights:
        pat, mask = Dense(), None
    if array.dataflow != "os":  # WS/IS: SCALE-Sim's dense counts (hwprune.dataflow)
        from .dataflow import estimate_stationary
        return estimate_stationary(spec, array, pat, mask)
    sched = make_schedule(spec, array, pat, mask)
    return _count(spec, array, sched, pat, mask)


def estimate_model(specs: Sequence[LayerSpec], array: ArrayConfig,
                   pattern: SparsityPattern | None = None,
                   masks: Mapping[str, np.ndarray] | None = None,
                   patterns: Mapping[str, SparsityPattern] | None = None) -> ModelCost:
    """Cost of every layer: ``patterns`` (per layer name) beats ``pattern`` beats each layer's own."""
    masks = masks or {}
    patterns = patterns or {}
    return ModelCost(array, tuple(
        estimate_layer(s, array, patterns.get(s.name, pattern), masks.get(s.name)) for s in specs))
