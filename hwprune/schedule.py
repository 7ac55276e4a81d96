"""The one schedule: in which order a layer's work runs on the output-stationary N:M array.

Three users walk the same :class:`Schedule`: the cost model counts its cycles and accesses, the
memory-image writer lays words out in the order :meth:`Schedule.folds` yields them, and the RTL
controller is generated from it.  A dataflow or sparsity mode is a parameter here, never a class.

Order of work (the SCALE-Sim output-stationary order):

* for each conv group g (independent GEMMs, e.g. depthwise channels),
* for each column fold ``tc`` (C output channels), for each row fold ``tr`` (R output rows):
  one *fold*; its weight tile is the same for every ``tr``;
* inside a fold, for each issued K group (``group_size`` consecutive K positions; groups that are
  zero in every column of the tile are skipped when the array has group skipping): ``slots``
  weight slots, each a (value, index) pair per column; a last, partial group of r < M positions
  issues only min(r, slots) slots.

A fold with K′ issued slots occupies the array for K′ + R + C − 2 cycles (skew in, accumulate,
skew out).  ``compute_cycles`` = Σ_folds (K′ + R + C − 2) − 1 is SCALE-Sim 3's ``Total Cycles``
convention for the output-stationary dataflow (dense and layer-wise N:M).

With ``fold_overlap`` (an opt-in :class:`~hwprune.config.ArrayConfig` key) the next fold starts
``fold_interval`` = K′ + P cycles, P = max(R, C − 1), after the previous one instead of
K′ + R + C − 2: its slots enter while the previous fold's results skew out and drain (see
:meth:`Schedule.fold_interval` for the derivation from the RTL's timing).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from .config import ArrayConfig
from .errors import ConfigError, UnsupportedLayerError
from .ir import LayerSpec
from .patterns import NM, Block, Channel, Dense, SparsityPattern, group_view

__all__ = ["Schedule", "Fold", "make_schedule", "group_slot_counts", "k_prime", "RtlTiming", "RTL_TIMING",
           "PASS_ORDERS", "Pass", "PassCapacity", "PassGrid", "PassPlan", "PassWords", "pass_capacity",
           "pass_timeline", "plan_grid", "plan_passes", "transfer_cycles"]


@dataclass(frozen=True, slots=True)
class RtlTiming:
    """The fixed timing of the generated RTL (``hwprune.rtl``), written once.

    The schedule counts cycles with it, the controller (``hwprune.rtl.controller``) builds its
    pipeline and drain delay from it, and ``hwprune rtl`` prints its formulas.

    ``start_cycles``
        from the cycle ``start`` is high to the cycle the first schedule-stream word is read
        (``start`` is registered once);
    ``stream_read``, ``operand_read``
        synchronous memory reads in series in front of the array: the schedule stream, then
        the weight and activation words (whose address is the stream word);
    ``done_cycles``
        from the cycle the last output row is written to the cycle ``done`` is high.
    """

    start_cycles: int = 1
    stream_read: int = 1
    operand_read: int = 1
    done_cycles: int = 1

    @property
    def read_latency(self) -> int:
        """Cycles from a slot's stream read to its weights and activations entering the array;
        the drain of a fold is delayed by as many cycles."""
        return self.stream_read + self.operand_read

    @property
    def fill_cycles(self) -> int:
        """Cycles the RTL adds to SCALE-Sim's output-stationary count (see
        :meth:`Schedule.fill_cycles`): start, SCALE-Sim's − 1, the read latency, done."""
        return self.start_cycles + 1 + self.read_latency + self.done_cycles

    @staticmethod
    def drain_offset(cols: int) -> int:
        """Cycles from a fold's first slot read to its drain token (K′ + C − 2 of them, plus
        :attr:`read_latency` until the first row is written: :meth:`Schedule.fold_interval`)."""
        return cols - 2

    @staticmethod
    def fold_gap(rows: int, cols: int, overlap: bool) -> int:
        """Cycles between a fold's last slot and the next fold's first slot (stage 0 of the RTL).

        Back to back: R + C − 2 (skew out).  Overlapped: P = max(R, C − 1), derived in
        :meth:`Schedule.fold_interval`; P ≤ R + C − 2 whenever C ≥ 2 (all the RTL accepts), and
        for a one-column array, which has no RTL, the model keeps the back-to-back gap.
        """
        back_to_back = rows + cols - 2
        return min(max(rows, cols - 1), back_to_back) if overlap else back_to_back

    def formulas(self, rows: int, cols: int, overlap: bool) -> dict[str, str]:
        """The timing as text, for the design description beside the Verilog."""
        fill = f"fill_cycles = {self.fill_cycles} (start {self.start_cycles} + 1 + read latency " \
               f"{self.read_latency} + done {self.done_cycles})"
        if not overlap:
            return {"fold_cycles": "K' + R + C - 2",
                    "total": "compute_cycles + fill_cycles, compute_cycles = sum_folds(K' + R + C - 2) - 1",
                    "fill": fill}
        p = self.fold_gap(rows, cols, True)
        return {"fold_cycles": f"K' + {p} between fold starts (K' + max(R, C - 1)); last fold K' + R + C - 2",
                "total": f"compute_cycles + fill_cycles, compute_cycles = sum_folds(K' + {p}) - {p} "
                         "+ R + C - 3",
                "fill": fill}


#: The timing of the RTL this package generates.
RTL_TIMING = RtlTiming()


@dataclass(frozen=True, slots=True)
class Fold:
    """One fold: a C-column weight tile against an R-row activation tile.

    ``k_groups`` are the issued K-group indices in issue order; ``k_slots`` the matching slot
    counts (``slots``, or fewer for a last partial group); ``k_prime`` their sum.
    """

    index: int
    group: int
    col_tile: int
    row_tile: int
    row_start: int
    row_count: int
    col_start: int   # within the conv group's N/groups channels
    col_count: int
    k_groups: np.ndarray
    k_slots: np.ndarray

    @property
    def k_prime(self) -> int:
        return int(self.k_slots.sum())


def k_prime(k: int, group_size: int, slots: int) -> int:
    """Slots one output channel issues over K with every group issued:
    K′ = ⌊K/M⌋·N + min(K mod M, N) (a last, partial group needs no more slots than positions)."""
    full, rem = divmod(k, group_size)
    return full * slots + min(rem, slots)


def group_slot_counts(k: int, group_size: int, slots: int) -> np.ndarray:
    """Slots each K group issues: ``slots`` per full group, min(K mod M, slots) for a partial last one."""
    n_groups = math.ceil(k / group_size)
    counts = np.full(n_groups, slots, dtype=np.int64)
    rem = k % group_size
    if rem:
        counts[-1] = min(rem, slots)
    return counts


@dataclass(frozen=True, slots=True)
class Schedule:
    """The order of work for one layer on one array under one issue width.

    ``issued[g, tc, kg]`` says whether K group ``kg`` is issued for column tile ``tc`` of conv
    group ``g``.  It is exact when the schedule was built from a mask; built from a pattern
    alone, ``expected_issue`` (a fraction per weight tile) carries the statistical estimate and
    ``issued`` marks every group.
    """

    rows: int              # R
    cols: int              # C
    M: int
    K: int
    n_out: int             # output channels per conv group after channel compaction
    groups: int
    group_size: int        # hardware M of N:M
    slots: int             # issue width N of N:M (== group_size: dense)
    issued: np.ndarray     # bool (groups, col_tiles, k_groups)
    expected_issue: float = 1.0
    kept_channels: np.ndarray | None = None  # (groups, n_out) original channel per column, -1 = none
    fold_overlap: bool = False  # folds pipelined (ArrayConfig.fold_overlap)

    @property
    def row_tiles(self) -> int:
        return math.ceil(self.M / self.rows)

    @property
    def col_tiles(self) -> int:
        return math.ceil(self.n_out / self.cols)

    @property
    def k_groups(self) -> int:
        return math.ceil(self.K / self.group_size)

    @property
    def folds_count(self) -> int:
        return self.groups * self.col_tiles * self.row_tiles

    @property
    def exact(self) -> bool:
        return self.expected_issue == 1.0

    def slot_counts(self) -> np.ndarray:
        return group_slot_counts(self.K, self.group_size, self.slots)

    def issued_sum(self, per_group: np.ndarray) -> np.ndarray:
        """Σ of ``per_group`` (one value per K group) over each weight tile's issued groups,
        shape (groups, col_tiles).  When every group is issued (no mask, or no group skipping)
        ``issued`` is a broadcast view and no (groups, col_tiles, k_groups) array is made."""
        if not any(self.issued.strides):
            return np.full(self.issued.shape[:2], per_group.sum(), dtype=per_group.dtype)
        return self.issued.astype(per_group.dtype) @ per_group

    def tile_k_prime(self) -> np.ndarray:
        """K′ (issued slots) of every weight tile, shape (groups, col_tiles)."""
        kp = self.issued_sum(self.slot_counts())
        if not self.exact:
            kp = np.rint(kp * self.expected_issue).astype(np.int64)
        return kp

    def fold_interval(self) -> np.ndarray:
        """Cycles from one fold's start to the next's, per weight tile (each repeated ``row_tiles``
        times): K′ + R + C − 2 back to back, K′ + P with ``fold_overlap``, P = max(R, C − 1).

        Derivation from the RTL (``hwprune.rtl``; fold f's first slot read at cycle T_f).  Slot s
        enters the array at T_f + s + 2 and reaches PE(r, c) at T_f + s + 2 + r + c, so PE(r, c)
        holds fold f's result from T_f + K′_f + 2 + r + c.  The drain writes row r (all C columns
        at once, straight from the accumulators) at D_f(r) = T_f + K′_f + C + 1 + r, the first
        cycle column C − 1 is final.  Two hazards bound the next fold's start T_{f+1}:

        * its first slot clears PE(r, 0) at the end of cycle T_{f+1} + 2 + r, so the drain must
          read row r no later: D_f(r) ≤ T_{f+1} + 2 + r  ⇔  T_{f+1} − T_f ≥ K′_f + C − 1;
        * the drain writes one row per cycle, so fold f+1's drain must start after fold f's:
          D_{f+1}(0) ≥ D_f(R − 1) + 1  ⇔  T_{f+1} + K′_{f+1} ≥ T_f + K′_f + R, which holds for any
          K′_{f+1} ≥ 0 when T_{f+1} − T_f ≥ K′_f + R.

        Slots issue one per cycle (T_{f+1} − T_f ≥ K′_f) and a K′ = 0 fold still takes P ≥ 1
        cycles, so K′_f + max(R, C − 1) is the smallest interval that depends on fold f alone.
        No result (shadow) register is needed: the accumulators are read before they are cleared.
        """
        return self.tile_k_prime() + RTL_TIMING.fold_gap(self.rows, self.cols, self.fold_overlap)

    def compute_cycles(self) -> int:
        """Σ over folds (K′ + R + C − 2) − 1: SCALE-Sim 3's output-stationary ``Total Cycles``.

        With ``fold_overlap``: Σ over folds (K′ + P) − P + (R + C − 2) − 1, P = max(R, C − 1),
        i.e. every fold but the last costs its issue interval K′ + P and the last one the full
        K′ + R + C − 2 (skew in, accumulate, skew out), with SCALE-Sim's − 1.  It equals the
        back-to-back count for one fold and is never larger (P ≤ R + C − 2, :meth:`RtlTiming.fold_gap`),
        and ``fill_cycles`` is the same constant in both modes.
        """
        # back to back the gap is R + C − 2 and this is Σ (K′ + R + C − 2) − 1
        gap = RTL_TIMING.fold_gap(self.rows, self.cols, self.fold_overlap)
        return int(self.fold_interval().sum()) * self.row_tiles - gap + self.rows + self.cols - 2 - 1

    def fill_cycles(self) -> int:
        """Cycles the RTL adds outside the SCALE-Sim count, independent of the layer and array.

        The RTL's folds run for Σ (K′ + R + C − 2) = ``compute_cycles`` + 1 cycles (with
        ``fold_overlap``, the last fold starts Σ_{f<last} (K′_f + P) cycles after the first);
        around them it spends :data:`RTL_TIMING`'s start cycles before the first fold, the read
        latency of the schedule stream and of the weight/activation memories at the end of the
        last fold (its drain finishes those cycles later), and its done cycles for ``done`` to
        rise after the last output row is written.  ``start`` cycle to first ``done`` cycle is
        ``compute_cycles + fill_cycles``.
        """
        return RTL_TIMING.fill_cycles

    def folds(self) -> Iterator[Fold]:
        """Folds in execution order (what the image writer lays out and the controller runs)."""
        if not self.exact:
            raise ConfigError("this schedule is a statistical estimate (no mask): build it from a "
                              "mask to walk its folds")
        counts = self.slot_counts()
        index = 0
        for g in range(self.groups):
            for tc in range(self.col_tiles):
                kgs = np.flatnonzero(self.issued[g, tc])
                c0 = tc * self.cols
                for tr in range(self.row_tiles):
                    r0 = tr * self.rows
                    yield Fold(index, g, tc, tr, r0, min(self.rows, self.M - r0), c0,
                               min(self.cols, self.n_out - c0), kgs, counts[kgs])
                    index += 1


def _issue_width(spec: LayerSpec, array: ArrayConfig, pattern: SparsityPattern,
                 mask: np.ndarray | None) -> int:
    gs = array.group_size
    if isinstance(pattern, NM):
        slots = array.slots_for(pattern.n, pattern.m)
        if mask is not None:
            occ = _max_occupancy(mask, gs)
            if occ > slots:
                raise ConfigError(f"{spec.name}: mask has {occ} non-zeros in a group of {gs}; "
                                  f"pattern {pattern} allows {slots}")
        return slots
    if mask is not None:
        occ = _max_occupancy(mask, gs)
    elif isinstance(pattern, (Dense, Channel)):
        occ = gs
    else:
        occ = _expected_max_occupancy(spec, array, pattern)
    return min((s for s in array.slot_options if s >= occ), default=gs)


def _max_occupancy(mask: np.ndarray, group_size: int) -> int:
    return int(group_view(mask, group_size, False).sum(axis=2).max(initial=0))


def _expected_max_occupancy(spec: LayerSpec, array: ArrayConfig, pattern: SparsityPattern) -> int:
    """Smallest occupancy that bounds every (row, group) of the layer with probability ≥ ½.

    Unstructured weights are kept independently with probability d, so a group's count is
    Binomial(M, d); a layer-wide issue width must cover the maximum over all N·⌈K/M⌉ groups.
    Blocks narrower than a group are treated the same way at block granularity.
    """
    gs, d = array.group_size, pattern.density
    n_groups = spec.N * math.ceil(spec.K / gs)
    pmf = [math.comb(gs, j) * d ** j * (1 - d) ** (gs - j) for j in range(gs + 1)]
    cdf = np.cumsum(pmf)
    for occ in range(gs + 1):
        if cdf[occ] >= 1 - 1e-12 or n_groups * math.log(max(cdf[occ], 1e-300)) >= math.log(0.5):
            return occ
    return gs


def _expected_issue(spec: LayerSpec, array: ArrayConfig, pattern: SparsityPattern, n_out: int) -> float:
    """Expected fraction of K groups issued per weight tile when only the density is known."""
    if not array.group_skipping or isinstance(pattern, (Dense, NM, Channel)):
        return 1.0
    gs, cols, d = array.group_size, min(array.cols, n_out), pattern.density
    if isinstance(pattern, Block):
        # a tile group is skipped when every block that touches it was dropped
        blocks = math.ceil(cols / pattern.bh) * math.ceil(gs / pattern.bw)
    else:
        blocks = cols * gs
    return 1.0 - (1.0 - d) ** blocks


def make_schedule(spec: LayerSpec, array: ArrayConfig, pattern: SparsityPattern | None = None,
                  mask: np.ndarray | None = None) -> Schedule:
    """Schedule ``spec`` on ``array``.

    ``mask`` (N×K booleans, or the weights' non-zeros) makes the schedule exact: real padding
    slots and real skipped groups.  Without it the pattern's density gives a statistical
    estimate.  ``pattern`` defaults to the layer's recorded sparsity, else dense.
    """
    if array.dataflow != "os":
        raise UnsupportedLayerError(f"dataflow {array.dataflow!r} has no schedule yet (supported: 'os')")
    pattern = pattern if pattern is not None else (spec.sparsity or Dense())
    if not spec.has_weights and not isinstance(pattern, Dense):
        raise UnsupportedLayerError(f"{spec.name}: activation×activation matmul cannot take "
                                    f"weight pattern {pattern}")
    gs = array.group_size
    kg = math.ceil(spec.K / gs)
    npg = spec.n_per_group
    _check_size(spec, "K groups", kg)
    _check_size(spec, "weight tiles", spec.groups * math.ceil(npg / array.cols))
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != (spec.N, spec.K):
            raise ConfigError(f"{spec.name}: mask of shape {mask.shape} is not N×K = {(spec.N, spec.K)}")
    # An output channel whose weights are all zero is never computed (its output is the bias
    # alone): the surviving channels are packed into the columns, whatever pattern emptied them.
    kept = None
    n_out = npg
    if mask is not None:
        rows_alive = mask.reshape(spec.groups, npg, spec.K).any(axis=2)
        if not rows_alive.all():
            n_out = max(1, int(rows_alive.sum(axis=1).max()))
            kept = np.full((spec.groups, n_out), -1, dtype=np.int64)
            for g in range(spec.groups):
                idx = np.flatnonzero(rows_alive[g])
                kept[g, : idx.size] = idx
    elif isinstance(pattern, Channel):
        n_out = max(1, round(pattern.keep * npg))
    slots = _issue_width(spec, array, pattern, mask)
    col_tiles = math.ceil(n_out / array.cols)
    expected = 1.0
    if mask is not None and array.group_skipping:
        issued = _issued_from_mask(mask, spec.groups, npg, kept, array.cols, col_tiles, gs, kg)
    else:  # every group issued: a read-only view, whatever the layer's size
        issued = np.broadcast_to(np.True_, (spec.groups, col_tiles, kg))
        if mask is None:
            expected = _expected_issue(spec, array, pattern, n_out)
    return Schedule(array.rows, array.cols, spec.M, spec.K, n_out, spec.groups, gs, slots,
                    issued, expected, kept, array.fold_overlap)


#: Largest per-layer array the schedule makes (K groups; groups × column tiles): work is bounded
#: before allocating.  Costing is arithmetic in M, so M itself is unbounded.
MAX_SCHEDULE_ENTRIES = 1 << 26


def _check_size(spec: LayerSpec, what: str, count: int) -> None:
    if count > MAX_SCHEDULE_ENTRIES:
        raise UnsupportedLayerError(f"{spec.name}: M={spec.M:,} K={spec.K:,} N={spec.N:,} gives "
                                    f"{count:,} {what}; at most {MAX_SCHEDULE_ENTRIES:,} are supported")


def _issued_from_mask(mask: np.ndarray, groups: int, npg: int, kept: np.ndarray | None, cols: int,
                      col_tiles: int, gs: int, kg: int) -> np.ndarray:
    any_in_group = group_view(mask, gs, False).any(axis=2).reshape(groups, npg, kg)
    if kept is not None:
        rows = np.where(kept >= 0, kept, 0)
        any_in_group = np.take_along_axis(any_in_group, rows[:, :, None], axis=1) & (kept >= 0)[:, :, None]
    n_out = any_in_group.shape[1]
    padded = np.zeros((groups, col_tiles * cols, kg), dtype=bool)
    padded[:, :n_out] = any_in_group
    return padded.reshape(groups, col_tiles, cols, kg).any(axis=2)


# -- passes: a layer in SRAM-sized pieces, and the data the host moves for them ----------------
#
# A pass is a rectangle of the layer's schedule (one conv group, whole R-row tiles, whole C-column
# tiles of the compacted channels, whole K groups) small enough for one bank of every memory; it
# runs on the unchanged design as an ordinary layer image.  The planner cuts the layer greedily
# (whole K if one tile's K fits, else the most K groups that fit; then the most column tiles with
# one row tile; then the most row tiles) and orders the pass grid of each conv group columns-outer
# or rows-outer, K chunks innermost, whichever moves fewer DRAM bytes (ties: columns-outer).
#
# Reuse rule: a pass does not load a memory (weights and stream together, acts, desc) whose words
# in its bank are already the ones it needs — the previous pass on that bank (p − 1 single-,
# p − 2 double-buffered) needed the same weight tiles and K range (weights, stream), the same rows
# and K range (acts), or identical descriptors (desc: same tile count, row count, K′ of every tile
# and activation block).  Outputs are always stored.
#
# Timeline (L_p load, A_p array, S_p store cycles of pass p; one DMA channel):
# * single-buffered: L_p, start, A_p, S_p, pass after pass: total = Σ (L_p + A_p + S_p);
# * double-buffered, DMA program L_0, L_1, [wait done_0] S_0, L_2, [wait done_1] S_1, …, S_{P−1}, and
#   pass p starts at max(end of L_p, done of p − 1).  S_{p−1} then starts when pass p does, so
#   start_{p+1} − start_p = max(S_{p−1} + L_{p+1}, A_p), and
#   total = L_0 + Σ_p max(S_{p−1} + L_{p+1}, A_p) + S_{P−1}  (S_{−1} = L_P = 0).
#
# Layers of any M are costed in closed form: along each grid dimension with n ≥ 5 chunks the
# passes of chunks 2 … n − 3 see the same neighbourhood (two passes back, one ahead: all the reuse
# rule and the timeline look at), so they are one entry of weight n − 4 in a sequence of
# chunks 0, 1, [2 … n − 3], n − 2, n − 1 (the last chunk may be partial).

#: Orders of the pass grid of a conv group (K chunks innermost): what stays on chip.
PASS_ORDERS = ("cols-outer", "rows-outer")


@dataclass(frozen=True, slots=True)
class PassWords:
    """Words per memory (of :func:`hwprune.images.memory_map`); ``stream`` = ``weights``."""

    weights: int
    stream: int
    acts: int
    desc: int
    outputs: int

    def as_dict(self) -> dict[str, int]:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(frozen=True, slots=True)
class PassCapacity:
    """One bank of each memory, in words (the whole memory single-buffered, ⌊depth / 2⌋ double),
    and the bytes of one word of each memory (what the DMA moves per word)."""

    weights: int       # weight (and stream) words
    acts: int
    folds: int         # descriptors, each with R output words
    word_bytes: PassWords


@functools.lru_cache(maxsize=1024)
def pass_capacity(array: ArrayConfig, slots: int) -> PassCapacity:
    """The per-bank capacities of the design for ``array`` issuing ``slots`` per group (cached:
    an array config is immutable)."""
    from .images import memory_map  # images builds on this module

    mm = memory_map(array, slots)
    banks = 2 if array.double_buffer else 1
    return PassCapacity(mm["weights"].depth // banks, mm["acts"].depth // banks,
                        min(mm["desc"].depth // banks, mm["outputs"].depth // banks // array.rows),
                        PassWords(*(mm[m].word_bytes for m in PassWords.__slots__)))


@dataclass(frozen=True, slots=True)
class Pass:
    """One pass: a rectangle of the schedule, the bank it uses and the data it moves.

    ``row_tiles``, ``col_tiles`` (of the compacted channels) and ``k_groups`` are ranges of the
    layer schedule's tiles and K groups; its folds are the schedule's folds inside them, in the
    same order, with the same issued groups.  ``words`` are what the pass needs in each memory
    (outputs: what it writes); ``loads`` the memories it loads (the others are reused).
    """

    index: int
    group: int
    row_tiles: range
    col_tiles: range
    k_groups: range
    bank: int
    words: PassWords
    loads: tuple[str, ...]
    load_cycles: int
    array_cycles: int
    store_cycles: int


@dataclass(frozen=True, slots=True)
class PassPlan:
    """A layer's passes: chunk sizes, order, buffering, and what they cost.

    ``row_chunk``/``col_chunk`` tiles and ``k_chunk`` K groups per pass (the last of each may
    be smaller); ``moved`` the words each memory moves to or from DRAM over the layer (reused
    loads excluded); ``array_cycles`` = Σ A_p, ``cycles`` the timeline's total, ``load_cycles``
    and ``store_cycles`` the DMA's Σ L_p and Σ S_p.
    """

    schedule: Schedule
    array: ArrayConfig
    capacity: PassCapacity
    order: str
    row_chunk: int
    col_chunk: int
    k_chunk: int
    moved: PassWords
    array_cycles: int
    cycles: int
    load_cycles: int
    store_cycles: int

    @property
    def double_buffer(self) -> bool:
        return self.array.double_buffer

    @property
    def row_passes(self) -> int:
        return math.ceil(self.schedule.row_tiles / self.row_chunk)

    @property
    def col_passes(self) -> int:
        return math.ceil(self.schedule.col_tiles / self.col_chunk)

    @property
    def k_split(self) -> int:
        """K chunks per tile (1: whole K; more: the host adds the int32 partial sums)."""
        return math.ceil(self.schedule.k_groups / self.k_chunk)

    @property
    def count(self) -> int:
        return self.schedule.groups * self.row_passes * self.col_passes * self.k_split

    @property
    def moved_bytes(self) -> PassWords:
        wb = self.capacity.word_bytes
        return PassWords(*(getattr(self.moved, f) * getattr(wb, f) for f in PassWords.__slots__))

    def passes(self) -> Iterator[Pass]:
        """Every pass in execution order (a small layer's: the sequence is built whole)."""
        _check_size_n(self.schedule, "passes", self.count)
        grid = _grid(self.schedule, self.array, self.capacity)
        ch = _chunks(grid)
        seq = _sequence(grid, ch, self.order == "rows-outer", explicit=True)
        t = _pass_terms(grid, ch, seq)
        words, loads = [x[0] for x in t["need"]], [x[0] for x in t["loaded"]]
        L, A, S = t["L"][0], t["A"][0], t["S"][0]
        g_i, c_i, r_i, k_i = (x[0] for x in (seq.g, seq.c, seq.r, seq.k))
        sched = self.schedule
        for p in range(int(seq.w.shape[1])):
            rows = range(int(r_i[p]) * self.row_chunk, min(sched.row_tiles, (int(r_i[p]) + 1) * self.row_chunk))
            cols = range(int(c_i[p]) * self.col_chunk, min(sched.col_tiles, (int(c_i[p]) + 1) * self.col_chunk))
            ks = range(int(k_i[p]) * self.k_chunk, min(sched.k_groups, (int(k_i[p]) + 1) * self.k_chunk))
            yield Pass(p, int(g_i[p]), rows, cols, ks, p % 2 if self.double_buffer else 0,
                       PassWords(*(int(words[m][p]) for m in range(5))),
                       tuple(name for name, m in zip(PassWords.__slots__, loads) if m[p]),
                       int(L[p]), int(A[p]), int(S[p]))


def transfer_cycles(words, word_bytes, dram_bytes_per_cycle):
    """DMA cycles of one memory load or store: the host port takes one word per cycle and DRAM
    gives ``dram_bytes_per_cycle``: max(words, ⌈words × word_bytes / dram_bytes_per_cycle⌉).
    Numbers or numpy arrays."""
    return np.maximum(words, np.ceil(words * word_bytes / dram_bytes_per_cycle).astype(np.int64))


def pass_timeline(load, array, store, double_buffer, count=None):
    """Total cycles of a sequence of passes (last axis), from their load, array and store cycles.

    ``count`` (same shape) repeats an entry that stands for that many consecutive passes with
    the same neighbours (the closed form over runs, see the comment above :data:`PASS_ORDERS`);
    ``double_buffer`` may be an array over the leading axes.
    """
    load, array, store = (np.asarray(x, dtype=np.int64) for x in (load, array, store))
    count = np.ones_like(array) if count is None else np.asarray(count, dtype=np.int64)
    single = (count * (load + array + store)).sum(axis=-1)
    zero = np.zeros_like(store[..., :1])
    s_prev = np.concatenate([zero, store[..., :-1]], axis=-1)
    l_next = np.concatenate([load[..., 1:], zero], axis=-1)
    double = load[..., 0] + (count * np.maximum(s_prev + l_next, array)).sum(axis=-1) + store[..., -1]
    return np.where(double_buffer, double, single)


def plan_passes(sched: Schedule, array: ArrayConfig, order: str | None = None) -> PassPlan:
    """Cut ``sched`` into passes that fit one bank of ``array``'s memories and cost them.

    Parameters
    ----------
    sched : Schedule
        The layer's schedule on ``array`` (exact or statistical).
    array : ArrayConfig
        Its memories, ``double_buffer`` and ``dram_bytes_per_cycle``.
    order : {"cols-outer", "rows-outer"}, optional
        Force an order; by default the one moving fewer DRAM bytes.

    Raises
    ------
    ConfigError
        When one bank cannot hold one K group of one tile (or one fold).
    """
    if order is not None and order not in PASS_ORDERS:
        raise ConfigError(f"pass order must be one of {PASS_ORDERS}, not {order!r}")
    if any(sched.issued.strides):   # a mask schedule with group skipping: its own issued groups
        return _plan_passes(sched, array, order)
    # every group issued: the plan depends on these numbers alone (a model's repeated layers,
    # a sweep's repeated queries), so it is planned once per distinct tuple
    plan = _plan_uniform(sched.rows, sched.cols, sched.M, sched.K, sched.n_out, sched.groups, sched.group_size,
                         sched.slots, sched.issued.shape, sched.expected_issue, sched.fold_overlap, array, order)
    return replace(plan, schedule=sched)


@functools.lru_cache(maxsize=4096)
def _plan_uniform(rows: int, cols: int, M: int, K: int, n_out: int, groups: int, group_size: int, slots: int,
                  issued_shape: tuple[int, int, int], expected: float, overlap: bool, array: ArrayConfig,
                  order: str | None) -> PassPlan:
    issued = np.broadcast_to(np.True_, issued_shape)
    return _plan_passes(Schedule(rows, cols, M, K, n_out, groups, group_size, slots, issued, expected,
                                 None, overlap), array, order)


def _plan_passes(sched: Schedule, array: ArrayConfig, order: str | None) -> PassPlan:
    cap = pass_capacity(array, sched.slots)
    grid = _grid(sched, array, cap)
    res = plan_grid(grid, None if order is None else np.array([[order == "rows-outer"]]))
    if not res["ok"][0]:
        raise ConfigError(
            f"array {array.name!r}: one {'bank' if array.double_buffer else 'copy'} of its memories "
            f"({cap.weights} weight, {cap.acts} activation words, {cap.folds} folds) cannot hold one K "
            f"group of one {array.rows}×{array.cols} tile; use larger SRAMs"
            + (" or double_buffer = false" if array.double_buffer else ""))
    v = {k: int(x[0]) for k, x in res.items()}
    return PassPlan(sched, array, cap, PASS_ORDERS[v["rows_outer"]], v["rr"], v["cc"], v["kc"],
                    PassWords(*(v[f"moved_{m}"] for m in PassWords.__slots__)), v["array_cycles"],
                    v["cycles"], v["load_cycles"], v["store_cycles"])


def _check_size_n(sched: Schedule, what: str, count: int) -> None:
    if count > MAX_SCHEDULE_ENTRIES:
        raise UnsupportedLayerError(f"M={sched.M:,} K={sched.K:,} gives {count:,} {what}; at most "
                                    f"{MAX_SCHEDULE_ENTRIES:,} are listed (costing has no limit)")


@dataclass(frozen=True, slots=True)
class PassGrid:
    """What the planner needs of a layer on P arrays: numpy columns of shape (P, 1).

    ``per_group`` is set (P = 1) for a mask schedule with group skipping, whose weight tiles
    issue different K groups: (groups, col_tiles, k_groups) issued slot counts.
    """

    rows: np.ndarray
    cols: np.ndarray
    groups: int
    K: int
    group_size: np.ndarray
    slots: np.ndarray
    expected: np.ndarray
    row_tiles: np.ndarray
    col_tiles: np.ndarray
    k_groups: np.ndarray
    gap: np.ndarray
    fill: np.ndarray
    cap_w: np.ndarray
    cap_a: np.ndarray
    cap_f: np.ndarray
    word_bytes: tuple[np.ndarray, ...]   # PassWords order
    dram_bpc: np.ndarray
    double: np.ndarray
    per_group: np.ndarray | None = None

    def take(self, sel: np.ndarray) -> PassGrid:
        """The grid of configs ``sel``."""
        pick = {f: (getattr(self, f)[sel] if isinstance(getattr(self, f), np.ndarray) and f != "per_group"
                    else getattr(self, f)) for f in self.__slots__}
        pick["word_bytes"] = tuple(b[sel] for b in self.word_bytes)
        return PassGrid(**pick)


def _col(x) -> np.ndarray:
    return np.asarray(x).reshape(-1, 1)


def _grid(sched: Schedule, array: ArrayConfig, cap: PassCapacity) -> PassGrid:
    per_group = None
    if any(sched.issued.strides):
        per_group = sched.issued.astype(np.int64) * sched.slot_counts()
    gap = RTL_TIMING.fold_gap(sched.rows, sched.cols, sched.fold_overlap)
    return PassGrid(_col(sched.rows), _col(sched.cols), sched.groups, sched.K, _col(sched.group_size),
                    _col(sched.slots), _col(float(sched.expected_issue)), _col(sched.row_tiles),
                    _col(sched.col_tiles), _col(sched.k_groups), _col(gap), _col(sched.fill_cycles()),
                    _col(cap.weights), _col(cap.acts), _col(cap.folds),
                    tuple(_col(getattr(cap.word_bytes, f)) for f in PassWords.__slots__),
                    _col(float(array.dram_bytes_per_cycle)), _col(array.double_buffer), per_group)


def _k_terms(g: PassGrid, k, kc) -> tuple[np.ndarray, np.ndarray]:
    """Issued slots per weight tile (every group issued, scaled by ``expected``) and activation
    words per row tile of K chunk ``k`` of ``kc`` groups."""
    groups = np.minimum(kc, g.k_groups - k * kc)
    rem = g.K % g.group_size
    partial = ((k + 1) * kc >= g.k_groups) & (rem > 0)
    slot_sum = groups * g.slots - np.where(partial, g.slots - np.minimum(rem, g.slots), 0)
    kp = np.where(g.expected == 1.0, slot_sum, np.rint(slot_sum * g.expected)).astype(np.int64)
    dense = g.slots == g.group_size
    ab = np.where(dense, groups * g.group_size - np.where(partial, g.group_size - rem, 0), groups)
    return kp, ab


@dataclass(frozen=True, slots=True)
class _Chunks:
    ok: np.ndarray
    kc: np.ndarray
    cc: np.ndarray
    rr: np.ndarray
    tile_kp: np.ndarray | None     # (groups, col_tiles, K chunks): a mask schedule's slots per tile and chunk

    def take(self, sel: np.ndarray) -> _Chunks:
        return _Chunks(self.ok[sel], self.kc[sel], self.cc[sel], self.rr[sel], self.tile_kp)


def _chunks(g: PassGrid) -> _Chunks:
    """Greedy chunk sizes: whole K if a tile's K fits, else the most K groups that fit; then the
    most column tiles with one row tile; then the most row tiles."""
    kp_whole, ab_whole = _k_terms(g, 0, g.k_groups)
    if g.per_group is not None:
        kp_whole = _col(g.per_group.sum(axis=2).max(initial=0))
    window = np.where(g.slots == g.group_size, g.group_size, 1)
    fits = (kp_whole <= g.cap_w) & (ab_whole <= g.cap_a)
    kc = np.where(fits, g.k_groups, np.minimum(np.minimum(g.cap_w // g.slots, g.cap_a // window), g.k_groups))
    ok = (kc >= 1) & (g.cap_f >= 1)
    kc = np.maximum(kc, 1)
    kp0, ab0 = _k_terms(g, 0, kc)
    tile_kp = None
    if g.per_group is not None and ok.all():
        tile_kp = np.add.reduceat(g.per_group, np.arange(0, int(g.k_groups[0, 0]), int(kc[0, 0])), axis=2)
        kp0 = _col(tile_kp.max(initial=0))
    cc = np.minimum(np.minimum(g.col_tiles, np.maximum(g.cap_f, 1)),
                    np.where(kp0 > 0, g.cap_w // np.maximum(kp0, 1), g.col_tiles))
    cc = np.maximum(cc, 1)
    rr = np.maximum(np.minimum(np.minimum(g.row_tiles, g.cap_a // np.maximum(ab0, 1)), g.cap_f // cc), 1)
    return _Chunks(ok, kc, cc, rr, tile_kp)


@dataclass(frozen=True, slots=True)
class _Sequence:
    """Passes in execution order, (P, E): each entry's conv group, column, row and K chunk, and
    how many consecutive passes it stands for (``w``)."""

    w: np.ndarray
    g: np.ndarray
    c: np.ndarray
    r: np.ndarray
    k: np.ndarray


#: entries a compressed grid dimension keeps: chunks 0, 1, [2 … n − 3], n − 2, n − 1
_KEPT = 5


def _dim(n: np.ndarray, explicit: bool) -> tuple[np.ndarray, np.ndarray]:
    """Chunk indices and weights of one grid dimension with ``n`` chunks, (P, s); every row of
    ``n`` has the same min(n, 5) (or P = 1 when ``explicit``)."""
    s = int(n.max()) if explicit else min(int(n.max()), _KEPT)
    if explicit or s < _KEPT:
        return np.arange(s).reshape(1, s), np.ones((1, s), dtype=np.int64)
    one = np.ones_like(n)
    return (np.concatenate([0 * one, one, 2 * one, n - 2, n - 1], axis=1),
            np.concatenate([one, one, n - 4, one, one], axis=1))


def _grid_counts(g: PassGrid, ch: _Chunks) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chunks per dimension (conv groups, columns, rows, K), each (P, 1)."""
    return (np.full_like(ch.cc, g.groups), -(-g.col_tiles // ch.cc), -(-g.row_tiles // ch.rr),
            -(-g.k_groups // ch.kc))


def _sequence(g: PassGrid, ch: _Chunks, rows_outer: bool, explicit: bool = False) -> _Sequence:
    """The pass sequence of one order: conv group, outer, inner, K chunk.  Dimensions whose
    passes differ in their words (a mask schedule's groups, columns and K chunks) are listed
    whole, the others compressed (``explicit``: everything listed)."""
    n_g, n_c, n_r, n_k = _grid_counts(g, ch)
    listed = explicit or g.per_group is not None
    dims = [("g", n_g, listed), ("c", n_c, listed), ("r", n_r, explicit), ("k", n_k, listed)]
    if rows_outer:
        dims[1], dims[2] = dims[2], dims[1]
    parts = [_dim(n, e) for _, n, e in dims]
    P = n_c.shape[0]
    shape = (P, *(idx.shape[1] for idx, _ in parts))
    out, w = {}, np.ones(shape, dtype=np.int64)
    for d, ((name, _, _), (idx, wt)) in enumerate(zip(dims, parts)):
        view = [idx.shape[0]] + [1] * len(parts)
        view[d + 1] = idx.shape[1]
        out[name] = np.broadcast_to(idx.reshape(view), shape).reshape(P, -1)
        w = w * wt.reshape(view)
    return _Sequence(w.reshape(P, -1), out["g"], out["c"], out["r"], out["k"])


def _same(keys: list[np.ndarray], back: int) -> np.ndarray:
    """Whether each pass's keys equal those of the pass ``back`` entries earlier (its bank's
    previous pass: 1 single-, 2 double-buffered); False for the first passes."""
    out = np.zeros(keys[0].shape, dtype=bool)
    out[:, back:] = np.logical_and.reduce([k[:, back:] == k[:, :-back] for k in keys])
    return out


def _pass_terms(g: PassGrid, ch: _Chunks, seq: _Sequence) -> dict[str, np.ndarray]:
    """Per entry of the sequence: words each memory needs and moves, L, A and S cycles."""
    ncol = np.minimum(ch.cc, g.col_tiles - seq.c * ch.cc)
    nrow = np.minimum(ch.rr, g.row_tiles - seq.r * ch.rr)
    kp, ab = _k_terms(g, seq.k, ch.kc)
    if ch.tile_kp is None:
        weights, dtile = ncol * kp, np.zeros_like(kp)
    else:
        starts = np.arange(0, int(g.col_tiles[0, 0]), int(ch.cc[0, 0]))
        table = np.add.reduceat(ch.tile_kp, starts, axis=1)
        ids: dict[tuple, int] = {}
        dtable = np.array([[[ids.setdefault(tuple(ch.tile_kp[gi, c0:c0 + int(ch.cc[0, 0]), ki]), len(ids))
                             for ki in range(ch.tile_kp.shape[2])] for c0 in starts]
                           for gi in range(ch.tile_kp.shape[0])], dtype=np.int64)
        weights, dtile = table[seq.g, seq.c, seq.k], dtable[seq.g, seq.c, seq.k]
    folds = ncol * nrow
    need = (weights, weights, nrow * ab, folds, g.rows * folds)
    back = 2 if g.double[0, 0] else 1   # one buffering per call (plan_grid groups configs by it)
    reuse_w = _same([seq.g, seq.c, seq.k], back)
    reuse_a = _same([seq.g, seq.r, seq.k], back)
    reuse_d = _same([ncol, nrow, weights, ab, dtile], back)
    moved = tuple(np.where(reuse, 0, words) for reuse, words in
                  zip((reuse_w, reuse_w, reuse_a, reuse_d), need[:4])) + (need[4],)
    tr = [transfer_cycles(m, b, g.dram_bpc) for m, b in zip(moved, g.word_bytes)]
    return {"need": need, "moved": moved, "loaded": (~reuse_w, ~reuse_w, ~reuse_a, ~reuse_d),
            "L": tr[0] + tr[1] + tr[2] + tr[3], "S": tr[4],
            "A": nrow * (weights + ncol * g.gap) - g.gap + g.rows + g.cols - 3 + g.fill}


def plan_grid(g: PassGrid, rows_outer: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Plan and cost the passes of a layer on every config of ``g`` (numpy over configs).

    Returns (P,) arrays: ``ok`` (one bank holds a K group of a tile), chunk sizes ``kc`` (K
    groups), ``cc``, ``rr`` (tiles), ``rows_outer`` (the order, chosen by fewer DRAM bytes
    unless given), ``passes``, ``moved_<memory>`` words, ``moved_bytes``, ``array_cycles``
    (Σ A_p), ``cycles`` (the timeline), ``load_cycles`` and ``store_cycles``.
    """
    if g.per_group is None and g.rows.shape[0] > 1 and rows_outer is None:
        # configs equal in everything the planner reads (a sweep varies energies, clocks, N-sets
        # that issue the same width...) are planned once
        table = np.concatenate([g.rows, g.cols, g.group_size, g.slots, g.expected.view(np.int64), g.row_tiles,
                                g.col_tiles, g.k_groups, g.gap, g.fill, g.cap_w, g.cap_a, g.cap_f, *g.word_bytes,
                                g.dram_bpc.view(np.int64), g.double.astype(np.int64)], axis=1)
        rows = np.ascontiguousarray(table).view(np.dtype((np.void, table.dtype.itemsize * table.shape[1])))
        uniq, first, inverse = np.unique(rows[:, 0], return_index=True, return_inverse=True)
        if uniq.shape[0] < table.shape[0]:
            return {k: v[inverse.reshape(-1)] for k, v in plan_grid(g.take(first)).items()}
    ch = _chunks(g)
    P = ch.kc.shape[0]
    keys = ["passes", "array_cycles", "cycles", "load_cycles", "store_cycles", "moved_bytes",
            *(f"moved_{m}" for m in PassWords.__slots__)]
    out = {k: np.zeros(P, dtype=np.int64) for k in keys}
    out["rows_outer"] = np.zeros(P, dtype=bool)
    # configs whose sequences have the same shape (chunks per dimension up to _KEPT, buffering)
    shape = g.double[:, 0].astype(np.int64)
    for n in _grid_counts(g, ch):
        shape = shape * (_KEPT + 1) + np.minimum(n[:, 0], _KEPT)
    groups = [np.arange(P)] if P == 1 else [np.flatnonzero(shape == u) for u in np.unique(shape)]
    for sel in groups:
        sub, sch = (g, ch) if sel.size == P else (g.take(sel), ch.take(sel))
        _, n_c, n_r, _ = _grid_counts(sub, sch)
        res = []
        # with one column or one row chunk both orders are the same sequence
        for order in (False, True) if n_c[0, 0] > 1 and n_r[0, 0] > 1 else (False,):
            seq = _sequence(sub, sch, order)
            t = _pass_terms(sub, sch, seq)
            w = seq.w
            r = {"passes": w.sum(axis=1), "array_cycles": (w * t["A"]).sum(axis=1),
                 "cycles": pass_timeline(t["L"], t["A"], t["S"], sub.double[:, 0], w),
                 "load_cycles": (w * t["L"]).sum(axis=1), "store_cycles": (w * t["S"]).sum(axis=1)}
            for m, words, b in zip(PassWords.__slots__, t["moved"], sub.word_bytes):
                r[f"moved_{m}"] = (w * words).sum(axis=1)
            r["moved_bytes"] = sum(r[f"moved_{m}"] * b[:, 0] for m, b in zip(PassWords.__slots__, sub.word_bytes))
            res.append(r)
        if len(res) == 1:
            res.append(res[0])
        pick = (res[1]["moved_bytes"] < res[0]["moved_bytes"]) if rows_outer is None else rows_outer[sel, 0]
        for k in keys:
            out[k][sel] = np.where(pick, res[1][k], res[0][k])
        out["rows_outer"][sel] = pick
    out.update(ok=ch.ok[:, 0], kc=ch.kc[:, 0], cc=ch.cc[:, 0], rr=ch.rr[:, 0])
    return out
