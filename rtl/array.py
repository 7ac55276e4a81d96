"""The R×C systolic array: skew registers on the edges, PEs in between, a row-select drain."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hwprune.config import ArrayConfig
from hwprune.rtl.pe import PE, check_design, weight_layout, window_layout

__all__ = ["SystolicArray"]


class SystolicArray(wiring.Component):
    """R×C output-stationary array.

    ``weights`` carries one slot for every column and ``acts`` one window for every row, both
    unskewed; column c is delayed c cycles and row r r cycles, so PE(r, c) sees slot s
    r + c cycles after it enters.  ``drain_data`` is row ``drain_row`` of the accumulators.
    """

    def __init__(self, *, array: ArrayConfig, slots: int):
        self._array, self._slots = check_design(array, slots)
        R, C = array.rows, array.cols
        wl = weight_layout(array, slots)
        super().__init__({
            "weights": In(data.ArrayLayout(wl, C)),
            "acts": In(data.ArrayLayout(window_layout(array, slots), R)),
            "drain_row": In(unsigned(max(1, (R - 1).bit_length()))),
            "drain_data": Out(data.ArrayLayout(signed(array.acc_bits), C)),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        R, C = self._array.rows, self._array.cols
        wl, al = weight_layout(self._array, self._slots), window_layout(self._array, self._slots)
        pes = [[PE(array=self._array, slots=self._slots) for _ in range(C)] for _ in range(R)]
        for r in range(R):
            for c in range(C):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]
        for c in range(C):
            top = self.weights[c]
            for d in range(c):  # skew: column c enters c cycles late
                reg = Signal(wl, name=f"wskew_{c}_{d}")
                m.d.sync += reg.eq(top)
                top = reg
            m.d.comb += pes[0][c].weight_in.eq(top)
            for r in range(1, R):
                m.d.comb += pes[r][c].weight_in.eq(pes[r - 1][c].weight_out)
        for r in range(R):
            left = self.acts[r]
            for d in range(r):
                reg = Signal(al, name=f"askew_{r}_{d}")
                m.d.sync += reg.eq(left)
                left = reg
            m.d.comb += pes[r][0].act_in.eq(left)
            for c in range(1, C):
                m.d.comb += pes[r][c].act_in.eq(pes[r][c - 1].act_out)
        with m.Switch(self.drain_row):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += [self.drain_data[c].eq(pes[r][c].psum) for c in range(C)]
        return m
