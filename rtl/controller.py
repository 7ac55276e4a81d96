"""The controller: runs the fold descriptors and the schedule stream the image writer laid out.

The order of work is not written here: it is :meth:`hwprune.schedule.Schedule.folds`, walked once
by :func:`hwprune.images.build_images` into the ``desc`` and ``stream`` memories.  The timing is
not written here either: it is :data:`hwprune.schedule.RTL_TIMING`, which the cost model counts
with.  This block only counts through the descriptors with that timing:

* fold f issues its K′ slots on consecutive cycles, then waits ``RTL_TIMING.fold_gap`` cycles
  (R + C − 2 back to back; P = max(R, C − 1) with ``array.fold_overlap``, the next fold's slots
  entering while this fold's results skew out);
* stage 0 reads the stream word of a slot, stage 1 the weight and activation words (the latter
  at ``a_base + act_offset``), stage 2 feeds the array (``RTL_TIMING.read_latency`` stages);
* ``RTL_TIMING.drain_offset`` = C − 2 cycles after a fold's last slot a drain token starts;
  ``read_latency`` cycles later the drain writes the R accumulator rows to the output memory,
  one per cycle (zeros for a fold with K′ = 0);
* ``done`` rises the cycle after the last row of the last fold is written;
* the descriptors are read from ``desc_base`` on and the outputs written from ``out_base`` on
  (both latched at start); weight, stream and activation addresses are absolute in the
  descriptors, so one pass's words may sit in either bank of a double-buffered memory.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hwprune.config import ArrayConfig
from hwprune.images import MemoryMap, memory_map
from hwprune.rtl.memory import word_layout
from hwprune.rtl.pe import check_design
from hwprune.schedule import RTL_TIMING

__all__ = ["Controller", "CYCLE_COUNTER_BITS"]

CYCLE_COUNTER_BITS = 48

#: a drain token: start draining a fold, which issued no slot (write zeros), which was the last
_DRAIN_TOKEN = data.StructLayout({"go": unsigned(1), "zero": unsigned(1), "last": unsigned(1)})


class Controller(wiring.Component):
    """Sequencer of one design; all widths come from :func:`hwprune.images.memory_map`."""

    def __init__(self, *, array: ArrayConfig, slots: int):
        self._array, self._slots = check_design(array, slots)
        mm: MemoryMap = memory_map(array, slots)
        self._map = mm
        R = array.rows
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "cycles": Out(CYCLE_COUNTER_BITS),
            "desc_base": In(mm["desc"].addr_bits), "out_base": In(mm["outputs"].addr_bits),
            "desc_addr": Out(mm["desc"].addr_bits), "desc_data": In(word_layout(mm["desc"])),
            "stream_addr": Out(mm["stream"].addr_bits), "stream_data": In(word_layout(mm["stream"])),
            "weight_addr": Out(mm["weights"].addr_bits),
            "act_addr": Out(mm["acts"].addr_bits),
            "valid": Out(1), "first": Out(1),
            "out_addr": Out(mm["outputs"].addr_bits), "out_en": Out(1), "out_zero": Out(1),
            "drain_row": Out(unsigned(max(1, (R - 1).bit_length()))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        desc = self.desc_data
        run = Signal()                          # issuing folds
        fold = Signal.like(self.desc_addr)
        t = Signal(len(desc.k_prime) + max(self._array.rows + self._array.cols, 2).bit_length())
        self._issue_slots(m, run, fold, t)
        self._read_operands(m, run, t)
        oaddr = self._drain(m, run, t)
        self._handshake(m, run, fold, t, oaddr)
        return m

    def _issue_slots(self, m: Module, run: Signal, fold: Signal, t: Signal) -> None:
        """Stage 0: slot t of the current fold; after K′ + gap cycles the next fold."""
        desc = self.desc_data
        gap = RTL_TIMING.fold_gap(self._array.rows, self._array.cols, self._array.fold_overlap)
        m.d.comb += [self.desc_addr.eq(fold), self.stream_addr.eq(desc.w_base + t)]
        with m.If(run):
            with m.If(t == desc.k_prime + (gap - 1)):
                m.d.sync += t.eq(0)
                with m.If(desc.last):
                    m.d.sync += run.eq(0)
                with m.Else():
                    m.d.sync += fold.eq(fold + 1)
            with m.Else():
                m.d.sync += t.eq(t + 1)

    def _read_operands(self, m: Module, run: Signal, t: Signal) -> None:
        """Stage 1 reads weights and activations (the stream word has arrived); stage 2 feeds
        the array: valid/first follow the slot through the ``read_latency`` stages."""
        desc = self.desc_data
        issue = run & (t < desc.k_prime)
        w1 = Signal.like(self.weight_addr)
        a1 = Signal(len(desc.a_base))
        m.d.sync += [w1.eq(desc.w_base + t), a1.eq(desc.a_base)]
        m.d.comb += [self.weight_addr.eq(w1), self.act_addr.eq(a1 + self.stream_data.act_offset)]
        valid, first = issue, t == 0
        for stage in range(RTL_TIMING.read_latency):
            v, f = Signal(name=f"valid_{stage + 1}"), Signal(name=f"first_{stage + 1}")
            m.d.sync += [v.eq(valid), f.eq(first)]
            valid, first = v, f
        m.d.comb += [self.valid.eq(valid), self.first.eq(first)]

    def _drain(self, m: Module, run: Signal, t: Signal) -> Signal:
        """Drain tokens, delayed like the operands, then R output rows, one per cycle."""
        desc = self.desc_data
        R = self._array.rows
        token = Signal(_DRAIN_TOKEN)
        m.d.comb += [token.go.eq(run & (t == desc.k_prime + RTL_TIMING.drain_offset(self._array.cols))),
                     token.zero.eq(desc.k_prime == 0), token.last.eq(desc.last)]
        for stage in range(RTL_TIMING.read_latency):
            delayed = Signal(_DRAIN_TOKEN, name=f"drain_tok{stage}")
            m.d.sync += delayed.eq(token)
            token = delayed
        active, zero, final = Signal(), Signal(), Signal()
        row = Signal.like(self.drain_row)
        oaddr = Signal.like(self.out_addr)
        m.d.comb += [self.drain_row.eq(row), self.out_en.eq(active), self.out_zero.eq(zero),
                     self.out_addr.eq(oaddr)]
        with m.If(active):
            m.d.sync += [oaddr.eq(oaddr + 1), row.eq(row + 1)]
            with m.If(row == R - 1):
                m.d.sync += active.eq(0)
                with m.If(final):
                    m.d.sync += [self.done.eq(1), self.busy.eq(0)]
        # a fold as short as R cycles starts its drain as the previous one writes its last row
        with m.If(token.go):
            m.d.sync += [active.eq(1), row.eq(0), zero.eq(token.zero), final.eq(token.last)]
        return oaddr

    def _handshake(self, m: Module, run: Signal, fold: Signal, t: Signal, oaddr: Signal) -> None:
        """start/done handshake and the cycle counter (start cycle = 0, counts up to done).

        ``desc_base`` (the first descriptor) and ``out_base`` (the first output word) are
        latched at start, so a host may change them, and write the other bank of every memory,
        while the array computes (double buffering)."""
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), self.done.eq(0), self.cycles.eq(1), run.eq(1),
                         fold.eq(self.desc_base), t.eq(0), oaddr.eq(self.out_base)]
