"""The DMA program a simulation runs: a layer's passes, the words each one loads, the outputs it stores.

A layer that does not fit the on-chip memories runs in passes (:mod:`hwprune.schedule`): each
pass is an ordinary run of the design on a rectangle of the layer's schedule, laid out in one
bank of every memory (:func:`hwprune.images.build_pass_images`).  The testbench is the DMA
engine of ``PASSES.md``: one in-order channel that writes a pass's words through the host write
port (``L_p``), and reads its outputs through the host read port (``S_p``) after the array has
finished it, while the array computes pass p from the cycle L_p has ended and pass p − 1 is done:

* single-buffered: ``L_0, S_0, L_1, S_1, …``;
* double-buffered: ``L_0, L_1, S_0, L_2, S_1, L_3, …, S_{P−1}`` (banks alternate, so L_{p+1}
  fills one bank while the array computes from the other).

:func:`program_bytes` writes the program for the Verilator bench (``sim/tb.cpp``, which runs it
in C++); :func:`run_amaranth` runs the very same engine as a Python testbench on Amaranth's
simulator.  Both count their ticks and return what the design's cycle counter said per pass.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwprune.config import ArrayConfig
from hwprune.errors import ExportError, VerificationError
from hwprune.images import (LOADED, MemoryMap, PassImages, build_pass_images, checked_operands,
                            memory_map, padded_outputs, scatter_outputs, unpad_outputs)
from hwprune.io import atomic_path
from hwprune.ir import LayerSpec
from hwprune.patterns import SparsityPattern
from hwprune.schedule import PassPlan, Schedule, make_schedule, plan_passes, transfer_cycles

__all__ = ["Transfer", "DmaPass", "DmaProgram", "DmaRun", "PassRun", "LayerProgram", "PROGRAM_VERSION",
           "build_program", "dma_order", "program_bytes", "run_amaranth"]

#: version of the binary program format (``sim/tb.cpp`` reads exactly this one)
PROGRAM_VERSION = 2
_MAGIC = b"HWPI"
_DOUBLE_BUFFERED = 1


@dataclass(frozen=True, slots=True)
class Transfer:
    """One DMA transfer: ``words`` words of ``memory`` from address ``base`` in ``cycles`` ticks
    (``cycles`` ≥ ``words``: the host port moves one word per cycle, DRAM may be slower).
    ``memory`` is a :data:`~hwprune.images.LOADED` memory (a load) or ``"outputs"`` (a store);
    a load of 0 words is a memory the pass reuses from its bank."""

    memory: str
    base: int
    words: int
    cycles: int

    @property
    def store(self) -> bool:
        return self.memory == "outputs"


@dataclass(frozen=True, slots=True)
class DmaPass:
    """One pass of the program: its images, its loads (one per :data:`LOADED` memory, in that
    order) and its store."""

    images: PassImages
    loads: tuple[Transfer, ...]
    store: Transfer

    @property
    def load_cycles(self) -> int:
        """L_p: the loads one after the other on the one DMA channel."""
        return sum(t.cycles for t in self.loads)

    @property
    def array_cycles(self) -> int:
        """A_p: start to done of the pass on the design (its own compute + fill)."""
        sched = self.images.schedule
        return sched.compute_cycles() + sched.fill_cycles()

    def load_words(self, name: str) -> list[int]:
        """The words the load of memory ``name`` writes (none when the pass reuses it)."""
        (t,) = (t for t in self.loads if t.memory == name)
        return self.images.words[name] if t.words else []


@dataclass(frozen=True, slots=True)
class DmaProgram:
    """The passes of one layer on one design, single- or double-buffered."""

    map: MemoryMap
    double_buffer: bool
    passes: tuple[DmaPass, ...]


@dataclass(frozen=True, slots=True)
class PassRun:
    """What the bench saw of one pass: the tick it pulsed ``start`` (ticks from the first DMA
    tick), the design's cycle counter at ``done`` and the ticks the bench counted from start to
    done; ``words`` are the pass's output words as stored."""

    start: int
    cycles: int
    ticks: int
    words: list[int]


@dataclass(frozen=True, slots=True)
class DmaRun:
    """A whole program run: ``ticks`` from the first DMA tick to the end of the last store."""

    passes: tuple[PassRun, ...]
    ticks: int
    seconds: float


def dma_order(program: DmaProgram) -> list[tuple[int, Transfer]]:
    """(pass, transfer) in the order the one DMA channel performs them."""
    passes = program.passes
    order: list[tuple[int, Transfer]] = []
    if not program.double_buffer:
        for p, dp in enumerate(passes):
            order += [(p, t) for t in dp.loads] + [(p, dp.store)]
        return order
    order += [(0, t) for t in passes[0].loads]
    for p, dp in enumerate(passes):
        if p + 1 < len(passes):
            order += [(p + 1, t) for t in passes[p + 1].loads]
        order.append((p, dp.store))
    return order


def program_bytes(program: DmaProgram) -> bytes:
    """The program as ``sim/tb.cpp`` reads it (format in its header comment, version
    :data:`PROGRAM_VERSION`)."""
    mm = program.map
    parts = [_MAGIC, struct.pack("<III", PROGRAM_VERSION, _DOUBLE_BUFFERED if program.double_buffer else 0,
                                 len(LOADED)),
             struct.pack(f"<{len(LOADED)}I", *(mm[n].word_bytes for n in LOADED)),
             struct.pack("<II", mm["outputs"].word_bytes, len(program.passes))]
    # passes share word lists (build_program lays them out once): each is converted once (the
    # dict holds the list too, so its id cannot be reused meanwhile)
    raw: dict[int, tuple[list[int], bytes]] = {}
    for dp in program.passes:
        parts.append(struct.pack("<II", dp.images.base["desc"], dp.images.base["outputs"]))
        for t in dp.loads:
            words = dp.load_words(t.memory)
            if id(words) not in raw:
                raw[id(words)] = (words, mm[t.memory].to_bytes(words))
            parts += [struct.pack("<IIQ", t.words, t.base, t.cycles), raw[id(words)][1]]
        parts.append(struct.pack("<IIQ", dp.store.words, dp.store.base, dp.store.cycles))
    return b"".join(parts)


def run_amaranth(program: DmaProgram, array: ArrayConfig, *, max_cycles: int, vcd: str | Path | None = None,
                 force: bool = False) -> DmaRun:
    """Run ``program`` on Amaranth's simulator with the DMA engine of ``sim/tb.cpp`` written as a
    Python testbench (same order, same start rule, same tick count); memories start empty."""
    from amaranth.sim import Simulator

    from hwprune.rtl import SparseArrayTop

    top = SparseArrayTop(array=array, slots=program.map.slots, init={})
    sim = Simulator(top)
    sim.add_clock(1e-8)
    passes = program.passes
    order = dma_order(program)
    state: dict[str, object] = {}

    async def bench(ctx):
        starts, cycles, ticks = [0] * len(passes), [0] * len(passes), [0] * len(passes)
        out: list[list[int]] = [[] for _ in passes]
        loads_left = [len(dp.loads) for dp in passes]
        nxt = computed = dma = k = t = 0
        running = False

        def settle():
            nonlocal dma
            while dma < len(order) and order[dma][1].cycles == 0:
                loads_left[order[dma][0]] -= not order[dma][1].store
                dma += 1

        settle()
        while dma < len(order):
            if t >= max_cycles:
                state["timeout"] = t
                return
            p, x = order[dma]
            if not running and nxt < len(passes) and loads_left[nxt] == 0:
                ctx.set(top.desc_base, passes[nxt].images.base["desc"])
                ctx.set(top.out_base, passes[nxt].images.base["outputs"])
                ctx.set(top.start, 1)
                running, starts[nxt] = True, t
            waiting = x.store and computed <= p
            if not waiting and k < x.words:
                if x.store:
                    ctx.set(top.host_addr, x.base + k)
                else:
                    ctx.set(top.host_we, 1)
                    ctx.set(top.host_mem, LOADED.index(x.memory))
                    ctx.set(top.host_waddr, x.base + k)
                    ctx.set(top.host_wdata, passes[p].images.words[x.memory][k])
            await ctx.tick()
            t += 1
            ctx.set(top.start, 0)
            ctx.set(top.host_we, 0)
            if running:
                ticks[nxt] += 1
            if not waiting:
                if x.store and k < x.words:
                    out[p].append(ctx.get(top.host_data))
                k += 1
                if k == x.cycles:
                    loads_left[p] -= not x.store
                    dma, k = dma + 1, 0
                    settle()
            if running and ctx.get(top.done):
                cycles[nxt] = ctx.get(top.cycles)
                running, nxt, computed = False, nxt + 1, computed + 1
        state["run"] = (tuple(PassRun(*r) for r in zip(starts, cycles, ticks, out)), t)

    sim.add_testbench(bench)
    t0 = time.perf_counter()
    if vcd is not None:
        with atomic_path(vcd, force=force) as tmp, sim.write_vcd(str(tmp)):
            sim.run()
    else:
        sim.run()
    secs = time.perf_counter() - t0
    if "timeout" in state:
        raise VerificationError(f"the DMA program did not end within {state['timeout']} cycles (amaranth)")
    runs, ticks = state["run"]
    return DmaRun(runs, ticks, secs)


def parse_report(stdout: str, program: DmaProgram, out: bytes) -> DmaRun:
    """The Verilator bench's stdout and output file as a :class:`DmaRun`."""
    lines = stdout.split("\n")
    head = dict(zip(lines[0].split()[::2], lines[0].split()[1::2]))
    rows = [line.split() for line in lines[1:] if line.startswith("pass ")]
    if not {"ticks", "seconds"} <= head.keys() or len(rows) != len(program.passes):
        raise ExportError(f"the bench's report is not ticks/seconds and {len(program.passes)} pass lines")
    mm = program.map
    words = mm["outputs"].from_bytes(out)
    runs, at = [], 0
    for dp, row in zip(program.passes, rows):
        n = dp.store.words
        runs.append(PassRun(int(row[1]), int(row[2]), int(row[3]), words[at: at + n]))
        at += n
    return DmaRun(tuple(runs), int(head["ticks"]), float(head["seconds"]))


@dataclass(frozen=True, slots=True)
class LayerProgram:
    """A layer as a DMA program: its schedule, checked operands (weights N×K, activations
    (groups, M, K), int64), the pass plan and the program."""

    schedule: Schedule
    weights: np.ndarray
    acts: np.ndarray
    plan: PassPlan
    dma: DmaProgram

    @property
    def order(self) -> str:
        return self.plan.order

    def decode(self, run: DmaRun) -> np.ndarray:
        """The layer's outputs (groups, M, N/groups) from a run's stored words: every pass
        scattered back, K chunks summed with the accumulator's wrap-around."""
        mm = self.dma.map
        ypad = padded_outputs(self.schedule, mm)
        for dp, r in zip(self.dma.passes, run.passes):
            pi = dp.images
            scatter_outputs(ypad, r.words, pi.schedule, mm, group=pi.group, row=pi.row, col=pi.col)
        return unpad_outputs(ypad, self.schedule, mm, self.weights.shape[0] // self.schedule.groups)


def build_program(layer: LayerSpec, weights: np.ndarray, acts: np.ndarray, array: ArrayConfig,
                  pattern: SparsityPattern | None = None) -> LayerProgram:
    """The DMA program of ``layer``: :func:`hwprune.schedule.plan_passes`' passes, each laid out in
    its bank (:func:`hwprune.images.build_pass_images`), loading the memories the plan loads.

    The plan is held to the images: every pass's words per memory must be the plan's, and a
    memory the plan reuses must hold exactly the pass's words in that bank already.

    Raises
    ------
    VerificationError
        The planner and the image writer disagree (words, or a reuse of different words).
    """
    w, x = checked_operands(layer, weights, acts, array)
    sched = make_schedule(layer, array, pattern, w != 0 if layer.has_weights else None)
    mm = memory_map(array, sched.slots)
    plan = plan_passes(sched, array)
    in_bank: dict[tuple[str, int], list[int]] = {}
    memo: dict = {}                         # words that passes share, laid out once
    passes = []
    bpc = array.dram_bytes_per_cycle
    for ps in plan.passes():
        pi = build_pass_images(layer, w, x, array, sched, group=ps.group, row_tiles=ps.row_tiles,
                               col_tiles=ps.col_tiles, k_groups=ps.k_groups, bank=ps.bank,
                               double_buffer=plan.double_buffer, memo=memo)
        need = {n: len(pi.words[n]) for n in LOADED} | {"outputs": pi.output_words}
        if need != ps.words.as_dict():
            raise VerificationError(f"{layer.name}: pass {ps.index}: the planner counts {ps.words.as_dict()} "
                                    f"words, the images hold {need}")
        loads = []
        for name in LOADED:
            if name in ps.loads:
                in_bank[(name, ps.bank)] = pi.words[name]
            elif in_bank.get((name, ps.bank)) != pi.words[name]:
                raise VerificationError(f"{layer.name}: pass {ps.index} reuses {name} from bank {ps.bank}, "
                                        "which holds other words")
            n = need[name] if name in ps.loads else 0
            loads.append(Transfer(name, pi.base[name], n, int(transfer_cycles(n, mm[name].word_bytes, bpc))))
        store = Transfer("outputs", pi.base["outputs"], pi.output_words,
                         int(transfer_cycles(pi.output_words, mm["outputs"].word_bytes, bpc)))
        dp = DmaPass(pi, tuple(loads), store)
        if (dp.load_cycles, dp.array_cycles, store.cycles) != (ps.load_cycles, ps.array_cycles, ps.store_cycles):
            raise VerificationError(
                f"{layer.name}: pass {ps.index}: the planner's load/array/store cycles "
                f"{(ps.load_cycles, ps.array_cycles, ps.store_cycles)} are not the program's "
                f"{(dp.load_cycles, dp.array_cycles, store.cycles)}")
        passes.append(dp)
    return LayerProgram(sched, w, x, plan, DmaProgram(mm, plan.double_buffer, tuple(passes)))
