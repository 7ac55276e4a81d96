"""The controller: runs the fold descriptors and the schedule stream the image writer laid out.

The order of work is not written here: it is :meth:`hwprune.schedule.Schedule.folds`, walked once
by :func:`hwprune.images.build_images` into the ``desc`` and ``stream`` memories.  This block only
counts through them with the fixed timing of the array:

* fold f issues its K′ slots on consecutive cycles, then waits R + C − 2 cycles (skew out), so a
  fold occupies K′ + R + C − 2 cycles and the next fold follows at once; with
  ``array.fold_overlap`` it waits only P = max(R, C − 1) cycles: the next fold's slots enter while
  this fold's results skew out (:meth:`hwprune.schedule.Schedule.fold_interval` derives P);
* stage 0 reads the stream word of a slot, stage 1 the weight and activation words (the latter
  at ``a_base + stream``), stage 2 feeds the array (``RTL_READ_LATENCY`` = 2);
* K′ + C − 2 cycles into a fold a drain token starts; two cycles later the drain writes the R
  accumulator rows to the output memory, one per cycle (zeros for a fold with K′ = 0);
* ``done`` rises the cycle after the last row of the last fold is written.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..config import ArrayConfig
from ..images import MemoryMap, memory_map
from ..schedule import fold_gap
from .pe import check_design

__all__ = ["Controller", "CYCLE_COUNTER_BITS"]

CYCLE_COUNTER_BITS = 48


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
            "desc_addr": Out(mm["desc"].addr_bits), "desc_data": In(mm["desc"].width),
            "stream_addr": Out(mm["stream"].addr_bits), "stream_data": In(mm["stream"].width),
            "weight_addr": Out(mm["weights"].addr_bits),
            "act_addr": Out(mm["acts"].addr_bits),
            "valid": Out(1), "first": Out(1),
            "out_addr": Out(mm["outputs"].addr_bits), "out_en": Out(1), "out_zero": Out(1),
            "drain_row": Out(unsigned(max(1, (R - 1).bit_length()))),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        R, C = self._array.rows, self._array.cols
        d = self._map["desc"]
        # fields of the descriptor word, LSB first as in the memory map
        off, f = 0, {}
        for fld in d.fields:
            f[fld.name] = self.desc_data[off: off + fld.bits]
            off += fld.bits
        kp = f["k_prime"]
        # cycles after the last slot before the next fold's first (the wrap is at t = kp + gap − 1)
        gap = fold_gap(R, C, self._array.fold_overlap)

        run = Signal()                          # issuing folds
        fold = Signal.like(self.desc_addr)
        t = Signal(len(kp) + max(R + C, 2).bit_length())
        m.d.comb += self.desc_addr.eq(fold)

        # stage 0: slot t of the fold
        issue = run & (t < kp)
        m.d.comb += self.stream_addr.eq(f["w_base"] + t)
        with m.If(run):
            with m.If(t == kp + (gap - 1)):
                m.d.sync += t.eq(0)
                with m.If(f["last"]):
                    m.d.sync += run.eq(0)
                with m.Else():
                    m.d.sync += fold.eq(fold + 1)
            with m.Else():
                m.d.sync += t.eq(t + 1)

        # stage 1: the stream word has arrived; read weights and activations
        v1, f1 = Signal(), Signal()
        w1 = Signal.like(self.weight_addr)
        a1 = Signal(len(f["a_base"]))
        m.d.sync += [v1.eq(issue), f1.eq(t == 0), w1.eq(f["w_base"] + t), a1.eq(f["a_base"])]
        m.d.comb += [self.weight_addr.eq(w1), self.act_addr.eq(a1 + self.stream_data)]

        # stage 2: weights and activations enter the array
        v2, f2 = Signal(), Signal()
        m.d.sync += [v2.eq(v1), f2.eq(f1)]
        m.d.comb += [self.valid.eq(v2), self.first.eq(f2)]

        # drain tokens: (go, zero fold, last fold), two cycles of delay
        tok = [Signal(3, name=f"drain_tok{i}") for i in range(2)]
        m.d.sync += [tok[0].eq(Cat(run & (t == kp + (C - 2)), kp == 0, f["last"])), tok[1].eq(tok[0])]
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
        with m.If(tok[1][0]):
            m.d.sync += [active.eq(1), row.eq(0), zero.eq(tok[1][1]), final.eq(tok[1][2])]

        # start/done handshake and the cycle counter (start cycle = 0, counts up to done)
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.start & ~self.busy):
            m.d.sync += [self.busy.eq(1), self.done.eq(0), self.cycles.eq(1), run.eq(1),
                         fold.eq(0), t.eq(0), oaddr.eq(0)]
        return m
