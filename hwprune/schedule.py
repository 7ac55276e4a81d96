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

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .config import ArrayConfig
from .errors import ConfigError, UnsupportedLayerError
from .ir import LayerSpec
from .patterns import NM, Block, Channel, Dense, SparsityPattern, group_view

__all__ = ["Schedule", "Fold", "make_schedule", "group_slot_counts", "k_prime", "RtlTiming", "RTL_TIMING"]


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
