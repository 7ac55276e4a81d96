"""The on-chip memories: word layouts from :mod:`hwprune.images`, and one RAM component.

The fields of every memory word are listed once, in :func:`hwprune.images.memory_map` (a core
module that does not need Amaranth); :func:`word_layout` turns such a list into the
``lib.data`` layout the RTL reads (``word[c].value``, ``desc.k_prime``) and the image writer's
:meth:`~hwprune.images.MemoryLayout.pack` fills, bit for bit.

:class:`Ram` is one memory with a read port and a write port.  For Amaranth's simulator it is a
``lib.memory.Memory`` whose shape is the word layout (``init`` loads a layer); for Verilog it is
an instance of the hand-written ``hwprune_ram`` module (:data:`RAM_VERILOG`), which loads a
``$readmemh`` image named by a plusarg and carries no per-word contents, so generating and
compiling a design takes the same time whatever its SRAM sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from amaranth.hdl import ClockSignal, Instance, Module, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hwprune.images import MemoryLayout

__all__ = ["element_layout", "word_layout", "Ram", "RAM_MODULE", "RAM_VERILOG"]

#: name of the hand-written Verilog memory module
RAM_MODULE = "hwprune_ram"
#: its source (``rtl/hwprune_ram.v``), appended to the emitted Verilog
RAM_VERILOG = resources.files("hwprune.rtl").joinpath(f"{RAM_MODULE}.v").read_text()


def element_layout(mem: MemoryLayout) -> data.StructLayout:
    """One element of a word: the memory's fields, LSB first, signed where the field is."""
    return data.StructLayout({f.name: (signed if f.signed else unsigned)(f.bits) for f in mem.fields})


def word_layout(mem: MemoryLayout) -> data.Layout:
    """A whole word: the element, or ``repeat`` elements in an array (element 0 at the LSB)."""
    el = element_layout(mem)
    return el if mem.repeat == 1 else data.ArrayLayout(el, mem.repeat)


class Ram(wiring.Component):
    """One memory of :func:`hwprune.images.memory_map`: ``raddr`` → ``rdata`` (a view of
    :func:`word_layout`), registered unless ``sync_read`` is false, and ``we``/``waddr``/``wdata``.

    ``init`` (words as integers) selects the Amaranth implementation and loads it; ``None``
    instantiates ``hwprune_ram`` for Verilog, loading ``+mem_<name>=FILE`` when ``readmemh``.
    """

    def __init__(self, *, layout: MemoryLayout, sync_read: bool = True,
                 init: Sequence[int] | None = None, readmemh: bool = False):
        self._mem, self._sync, self._init, self._readmemh = layout, sync_read, init, readmemh
        wl = word_layout(layout)
        super().__init__({"raddr": In(layout.addr_bits), "rdata": Out(wl),
                          "we": In(1), "waddr": In(layout.addr_bits), "wdata": In(wl)})

    def elaborate(self, platform) -> Module:
        m = Module()
        lay = self._mem
        if self._init is None:
            m.submodules.ram = Instance(
                RAM_MODULE,
                p_WIDTH=lay.width, p_DEPTH=lay.depth, p_ABITS=lay.addr_bits,
                p_SYNC_READ=int(self._sync), p_READMEMH=int(self._readmemh), p_NAME=f"mem_{lay.name}",
                i_clk=ClockSignal(), i_raddr=self.raddr, o_rdata=self.rdata.as_value(),
                i_we=self.we, i_waddr=self.waddr, i_wdata=self.wdata.as_value())
            return m
        wl = word_layout(lay)
        mem = m.submodules.mem = Memory(shape=wl, depth=lay.depth,
                                        init=[wl.from_bits(w) for w in self._init])
        rd = mem.read_port(domain="sync" if self._sync else "comb")
        wr = mem.write_port()
        m.d.comb += [rd.addr.eq(self.raddr), self.rdata.eq(rd.data),
                     wr.addr.eq(self.waddr), wr.en.eq(self.we), wr.data.eq(self.wdata)]
        return m
