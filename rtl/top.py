"""The top level: controller, array and the five on-chip memories of :func:`hwprune.images.memory_map`."""

from __future__ import annotations

from collections.abc import Mapping

from amaranth.hdl import (ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Module, Mux,
                          ResetSignal, Signal, unsigned)
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..config import ArrayConfig
from ..errors import ConfigError
from ..images import MEMORIES, MemoryMap, memory_map
from .array import SystolicArray
from .controller import CYCLE_COUNTER_BITS, Controller
from .pe import check_design

__all__ = ["SparseArrayTop"]


class SparseArrayTop(wiring.Component):
    """The N:M sparse MAC array with its memories.

    Ports: ``start``/``busy``/``done`` handshake; ``cycles`` counts from the start cycle (0) to
    the first cycle ``done`` is high; ``host_addr``/``host_data`` read the output memory (one
    cycle latency).  Memories start from ``init`` (memory name → words) — empty by default, for
    a bitstream loaded with ``$readmemh`` images or by a host.
    """

    def __init__(self, *, array: ArrayConfig, slots: int, init: Mapping[str, list[int]] | None = None):
        self._array, self._slots = check_design(array, slots)
        self.map: MemoryMap = memory_map(array, slots)
        init = dict(init or {})
        unknown = set(init) - set(MEMORIES)
        if unknown:
            raise ConfigError(f"init names unknown memories {sorted(unknown)} (known: {MEMORIES})")
        for name, words in init.items():
            if len(words) > self.map[name].depth:
                raise ConfigError(f"init of {name}: {len(words)} words exceed depth {self.map[name].depth}")
        self._init = init
        out = self.map["outputs"]
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1),
            "cycles": Out(CYCLE_COUNTER_BITS),
            "host_addr": In(out.addr_bits), "host_data": Out(out.width),
        })

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
        mems = {}
        for name in MEMORIES:
            lay = top.map[name]
            mems[name] = m.submodules[f"mem_{name}"] = Memory(shape=unsigned(lay.width), depth=lay.depth,
                                                     init=top._init.get(name, []))
        ctrl = m.submodules.controller = Controller(array=top._array, slots=top._slots)
        arr = m.submodules.array = SystolicArray(array=top._array, slots=top._slots)
        m.d.comb += [ctrl.start.eq(top.start), top.busy.eq(ctrl.busy), top.done.eq(ctrl.done),
                     top.cycles.eq(ctrl.cycles)]

        desc = mems["desc"].read_port(domain="comb")
        stream = mems["stream"].read_port()
        weights = mems["weights"].read_port()
        acts = mems["acts"].read_port()
        m.d.comb += [desc.addr.eq(ctrl.desc_addr), ctrl.desc_data.eq(desc.data),
                     stream.addr.eq(ctrl.stream_addr), ctrl.stream_data.eq(stream.data),
                     weights.addr.eq(ctrl.weight_addr), acts.addr.eq(ctrl.act_addr)]

        # weight words are C × (value, index); the array adds valid/first per column
        wl = top.map["weights"]
        step = wl.element_bits
        vb = wl.fields[0].bits
        for c in range(top._array.cols):
            col = arr.weights[c]
            m.d.comb += [col.value.eq(weights.data[c * step: c * step + vb]),
                         col.valid.eq(ctrl.valid), col.first.eq(ctrl.first)]
            if step > vb:
                m.d.comb += col.index.eq(weights.data[c * step + vb: (c + 1) * step])
        m.d.comb += [arr.acts.as_value().eq(acts.data), arr.drain_row.eq(ctrl.drain_row)]

        out_w = mems["outputs"].write_port()
        m.d.comb += [out_w.addr.eq(ctrl.out_addr), out_w.en.eq(ctrl.out_en),
                     out_w.data.eq(Mux(ctrl.out_zero, 0, arr.drain_data.as_value()))]
        host = mems["outputs"].read_port()
        m.d.comb += [host.addr.eq(top.host_addr), top.host_data.eq(host.data)]
        return m
