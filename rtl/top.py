"""The top level: controller, array and the five on-chip memories of :func:`hwprune.images.memory_map`."""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hwprune.config import ArrayConfig
from hwprune.errors import ConfigError
from hwprune.images import LOADED, MEMORIES, MemoryMap, memory_map
from hwprune.rtl.array import SystolicArray
from hwprune.rtl.controller import CYCLE_COUNTER_BITS, Controller
from hwprune.rtl.memory import Ram
from hwprune.rtl.pe import check_design

__all__ = ["SparseArrayTop"]

#: memories read combinationally (the descriptor of the current fold); the others are registered
_COMB_READ = ("desc",)


class SparseArrayTop(wiring.Component):
    """The N:M sparse MAC array with its memories.

    Ports: ``start``/``busy``/``done`` handshake; ``cycles`` counts from the start cycle (0) to
    the first cycle ``done`` is high; ``desc_base``/``out_base``, latched at start, are the
    addresses of the run's first descriptor and first output word (a bank of a
    double-buffered memory: the host loads one bank while the array computes from the other); ``host_addr``/``host_data`` read the output memory (one
    cycle latency); ``host_we``/``host_mem``/``host_waddr``/``host_wdata`` write one word per
    cycle into memory ``LOADED[host_mem]`` (a DMA engine or a testbench loading a layer; the
    word's low bits, LSB first as :meth:`~hwprune.images.MemoryLayout.pack` lays it out).

    ``init`` (memory name → words) builds the memories as Amaranth ``Memory`` objects loaded
    with those words (for Amaranth's simulator); without it they are instances of the
    hand-written ``hwprune_ram`` Verilog module, loaded by ``$readmemh`` plusargs when
    ``readmemh`` (for Verilator, or a host).
    """

    def __init__(self, *, array: ArrayConfig, slots: int, init: Mapping[str, list[int]] | None = None,
                 readmemh: bool = False):
        self._array, self._slots = check_design(array, slots)
        self.map: MemoryMap = memory_map(array, slots)
        if init is not None:
            init = dict(init)
            unknown = set(init) - set(MEMORIES)
            if unknown:
                raise ConfigError(f"init names unknown memories {sorted(unknown)} (known: {MEMORIES})")
            for name, words in init.items():
                if len(words) > self.map[name].depth:
                    raise ConfigError(f"init of {name}: {len(words)} words exceed depth {self.map[name].depth}")
        self._init = init
        self._readmemh = readmemh
        out = self.map["outputs"]
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "cycles": Out(CYCLE_COUNTER_BITS),
            "desc_base": In(self.map["desc"].addr_bits), "out_base": In(out.addr_bits),
            "host_addr": In(out.addr_bits), "host_data": Out(out.width),
            "host_we": In(1), "host_mem": In(range(len(LOADED))),
            "host_waddr": In(max(self.map[n].addr_bits for n in LOADED)),
            "host_wdata": In(max(self.map[n].width for n in LOADED)),
        })

    def memory(self, name: str) -> Ram:
        """A fresh :class:`~hwprune.rtl.memory.Ram` for memory ``name`` of this design."""
        init = None if self._init is None else self._init.get(name, [])
        return Ram(layout=self.map[name], sync_read=name not in _COMB_READ, init=init,
                   readmemh=self._readmemh)

    def elaborate(self, platform) -> Module:
        m = Module()
        # The reset input is registered before it reaches the design: a reset synchronizer, and
        # it keeps every next-state function independent of the ports (Verilator then evaluates
        # the datapath once per clock edge instead of on every input change).
        rst_sync = Signal(reset_less=True)
        m.d.sync += rst_sync.eq(ResetSignal("sync"))
        m.domains.core = core = ClockDomain("core", local=True)
        m.d.comb += [core.clk.eq(ClockSignal("sync")), core.rst.eq(rst_sync)]
        m.submodules.core = DomainRenamer("core")(_Core(self))
        return m


class _Core(Elaboratable):
    """Everything of :class:`SparseArrayTop` behind the reset synchronizer."""

    def __init__(self, top: SparseArrayTop):
        self.top = top

    def elaborate(self, platform) -> Module:
        top = self.top
        m = Module()
        mem = {name: top.memory(name) for name in MEMORIES}
        for name, ram in mem.items():
            m.submodules[f"mem_{name}"] = ram
        ctrl = m.submodules.controller = Controller(array=top._array, slots=top._slots)
        arr = m.submodules.array = SystolicArray(array=top._array, slots=top._slots)
        m.d.comb += [ctrl.start.eq(top.start), top.busy.eq(ctrl.busy), top.done.eq(ctrl.done),
                     top.cycles.eq(ctrl.cycles),
                     ctrl.desc_base.eq(top.desc_base), ctrl.out_base.eq(top.out_base),
                     mem["desc"].raddr.eq(ctrl.desc_addr), ctrl.desc_data.eq(mem["desc"].rdata),
                     mem["stream"].raddr.eq(ctrl.stream_addr), ctrl.stream_data.eq(mem["stream"].rdata),
                     mem["weights"].raddr.eq(ctrl.weight_addr), mem["acts"].raddr.eq(ctrl.act_addr)]

        for i, name in enumerate(LOADED):
            ram, lay = mem[name], top.map[name]
            m.d.comb += [ram.we.eq(top.host_we & (top.host_mem == i)),
                         ram.waddr.eq(top.host_waddr[: lay.addr_bits]),
                         ram.wdata.as_value().eq(top.host_wdata[: lay.width])]

        # weight words are C × (value, index); the array adds valid/first per column
        word = mem["weights"].rdata
        for c in range(top._array.cols):
            col = arr.weights[c]
            m.d.comb += [col.value.eq(word[c].value), col.index.eq(word[c].index),
                         col.valid.eq(ctrl.valid), col.first.eq(ctrl.first)]
        # an activation word is R rows × window elements of one field, as the array takes them
        m.d.comb += [arr.acts.as_value().eq(mem["acts"].rdata.as_value()), arr.drain_row.eq(ctrl.drain_row)]

        out = mem["outputs"]
        m.d.comb += [out.waddr.eq(ctrl.out_addr), out.we.eq(ctrl.out_en),
                     out.raddr.eq(top.host_addr), top.host_data.eq(out.rdata.as_value())]
        m.d.comb += [out.wdata[c].psum.eq(Mux(ctrl.out_zero, 0, arr.drain_data[c]))
                     for c in range(top._array.cols)]
        return m
