"""Weight- and input-stationary dataflows: SCALE-Sim 3's dense counts, traffic, and the RTL refusal."""

from __future__ import annotations

import numpy as np
import pytest

from hwprune import ConvGeometry, Dense, LayerSpec, estimate_layer, load_array, parse_pattern
from hwprune.cli import main
from hwprune.dataflow import stationary_compute_cycles
from hwprune.errors import ConfigError


def array(rows: int, cols: int, dataflow: str, **kw):
    return load_array("os16x16").replace(rows=rows, cols=cols, dataflow=dataflow, **kw)


# --- hand-checked from SCALE-Sim 3's demand matrices (hwprune.dataflow docstring) -------------
# WS per fold: R (weight load) + T=M + (C−1) drain + (R−1) skew = 2R + C + M − 2 lines;
# IS per fold: 2R + C + N − 2 lines; Total Cycles = Σ lines − 1.
HAND = [
    # (flow, rows, cols, M, K, N, cycles)
    # 4×4, M=20 K=30 N=12 — ws: ⌈30/4⌉·⌈12/4⌉ = 24 folds × (8 + 4 + 20 − 2 = 30) − 1 = 719
    ("ws", 4, 4, 20, 30, 12, 719),
    # is: ⌈30/4⌉·⌈20/4⌉ = 40 folds × (8 + 4 + 12 − 2 = 22) − 1 = 879
    ("is", 4, 4, 20, 30, 12, 879),
    # 2×3, M=5 K=3 N=4 — ws: ⌈3/2⌉·⌈4/3⌉ = 4 folds × (4 + 3 + 5 − 2 = 10) − 1 = 39
    ("ws", 2, 3, 5, 3, 4, 39),
    # is: ⌈3/2⌉·⌈5/3⌉ = 4 folds × (4 + 3 + 4 − 2 = 9) − 1 = 35
    ("is", 2, 3, 5, 3, 4, 35),
    # one fold each, 8×4 array, M=1 K=1 N=1: ws 16 + 4 + 1 − 2 − 1 = 18; is the same
    ("ws", 8, 4, 1, 1, 1, 18),
    ("is", 8, 4, 1, 1, 1, 18),
]


# --- SCALE-Sim 3.0.0 runs ------------------------------------------------------------------
# Source: SCALE-Sim 3.0.0 (PyPI) in a side venv with numpy 2.3.5, "Total Cycles" column of
# COMPUTE_REPORT.csv, configs tests/data/scalesim_golden/{ws,is,ws84,is84}.cfg (d4.cfg with
# Dataflow and ArrayHeight changed; layout.csv is the -l file it insists on, unused), topologies
# gemm_dense.csv and conv.csv (DP3 expanded by SCALE-Sim into one-channel layers of 77 / 131).
SCALESIM = [
    # (flow, rows, cols, M, K, N, Total Cycles)
    ("ws", 4, 4, 20, 30, 12, 719), ("ws", 4, 4, 33, 13, 17, 859), ("ws", 4, 4, 16, 64, 16, 1663),
    ("is", 4, 4, 20, 30, 12, 879), ("is", 4, 4, 33, 13, 17, 971), ("is", 4, 4, 16, 64, 16, 1663),
    ("ws", 8, 4, 20, 30, 12, 455), ("ws", 8, 4, 33, 13, 17, 509), ("ws", 8, 4, 16, 64, 16, 1087),
    ("is", 8, 4, 20, 30, 12, 599), ("is", 8, 4, 33, 13, 17, 629), ("is", 8, 4, 16, 64, 16, 1087),
    ("ws", 4, 4, 16, 9, 1, 77), ("is", 4, 4, 16, 9, 1, 131),  # one DP3 channel
]


@pytest.mark.parametrize("flow,rows,cols,M,K,N,golden", SCALESIM)
def test_stationary_cycles_equal_scalesim_gemm(flow, rows, cols, M, K, N, golden):
    cost = estimate_layer(LayerSpec.gemm("g", M, K, N), array(rows, cols, flow), Dense())
    assert cost.compute_cycles == golden


@pytest.mark.parametrize("flow,golden", [("ws", (1035, 1403)), ("is", (2015, 1583))])
def test_stationary_cycles_equal_scalesim_conv(flow, golden):
    got = []
    for h, c, n, stride in ((10, 3, 8, 1), (9, 8, 12, 2)):
        geom = ConvGeometry.make(in_channels=c, out_channels=n, in_size=h, kernel=3, stride=stride)
        got.append(estimate_layer(LayerSpec.from_conv("c", geom), array(4, 4, flow), Dense()).compute_cycles)
    assert tuple(got) == golden


@pytest.mark.parametrize("flow,rows,cols,M,K,N,golden", HAND)
def test_hand_checked_stationary_cycles(flow, rows, cols, M, K, N, golden):
    cost = estimate_layer(LayerSpec.gemm("g", M, K, N), array(rows, cols, flow), Dense())
    assert cost.compute_cycles == golden
    assert cost.fill_cycles == 0 and cost.macs_executed == M * K * N


def test_formula_takes_arrays():
    rows = np.array([2, 4, 8])
    got = stationary_compute_cycles("ws", rows, 4, 20, 30, 12)
    want = [estimate_layer(LayerSpec.gemm("g", 20, 30, 12), array(int(r), 4, "ws"), Dense()).compute_cycles
            for r in rows]
    assert got.tolist() == want


def test_groups_run_back_to_back_with_one_minus_one():
    # depthwise 4 channels, 6×6, 3×3 → per group M=16, K=9, N=1 on 4×4 ws:
    # ⌈9/4⌉·⌈1/4⌉ = 3 folds × (8 + 4 + 16 − 2 = 26) = 78 per group, 4·78 − 1
    geom = ConvGeometry.make(in_channels=4, out_channels=4, in_size=6, kernel=3, groups=4)
    cost = estimate_layer(LayerSpec.from_conv("dw", geom), array(4, 4, "ws"), Dense())
    assert cost.compute_cycles == 4 * 78 - 1


@pytest.mark.parametrize("flow", ["ws", "is"])
def test_sparse_pattern_is_costed_dense_and_said_so(flow):
    spec = LayerSpec.gemm("g", 32, 64, 16)
    dense = estimate_layer(spec, array(4, 4, flow), Dense())
    sparse = estimate_layer(spec, array(4, 4, flow), parse_pattern("2:4"))
    assert sparse.cycles == dense.cycles and sparse.energy_pj == dense.energy_pj
    assert sparse.macs_nonzero == spec.macs // 2 and sparse.macs_executed == spec.macs
    assert "costed dense" in sparse.note and "2:4" in sparse.note and dense.note == ""
    # the OS array does skip: its 2:4 is faster than its dense
    os_ = array(4, 4, "os")
    assert estimate_layer(spec, os_, parse_pattern("2:4")).cycles < estimate_layer(spec, os_, Dense()).cycles


def test_stationary_traffic_follows_scalesim_counters():
    # ws 4×4, M=20 K=30 N=12: weights read once (360 B), activations once per column fold
    # (⌈12/4⌉ = 3 × 600 B), partial sums written once per K fold (⌈30/4⌉ = 8 × 240 × 4 B)
    ws = estimate_layer(LayerSpec.gemm("g", 20, 30, 12), array(4, 4, "ws"), Dense()).bytes
    assert (ws.weights_sram, ws.acts_sram, ws.outputs_sram) == (360, 3 * 600, 8 * 240 * 4)
    # is: activations once, weights once per column fold (⌈20/4⌉ = 5)
    is_ = estimate_layer(LayerSpec.gemm("g", 20, 30, 12), array(4, 4, "is"), Dense()).bytes
    assert (is_.weights_sram, is_.acts_sram, is_.outputs_sram) == (5 * 360, 600, 8 * 240 * 4)
    assert ws.index_sram == is_.index_sram == 0


def test_psums_spill_to_dram_when_outputs_do_not_fit():
    spec = LayerSpec.gemm("g", 4096, 64, 64)  # one ws column fold: 4096 × 4 × 4 B = 64 KiB
    big = estimate_layer(spec, array(4, 4, "ws", out_sram_kib=128), Dense()).bytes
    small = estimate_layer(spec, array(4, 4, "ws", out_sram_kib=16), Dense()).bytes
    # 15 extra K folds, each writes and reads back M·N int32 partial sums
    assert small.outputs_dram - big.outputs_dram == 2 * 15 * 4096 * 64 * 4


def test_rtl_refuses_non_os_with_one_line(tmp_path, capsys):
    p = tmp_path / "ws.toml"
    p.write_text('name = "ws4"\nrows = 4\ncols = 4\ndataflow = "ws"\n')
    assert main(["rtl", "--array", str(p), "--pattern", "dense", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "output-stationary only" in err and "'ws'" in err
    assert not (tmp_path / "o").exists()
    with pytest.raises(ConfigError):
        from hwprune.rtl.emit import verilog
        verilog(array(2, 2, "is"), 4)


def test_estimate_cli_says_sparse_was_costed_dense(tmp_path, capsys):
    p = tmp_path / "ws.toml"
    p.write_text('name = "ws8"\nrows = 8\ncols = 8\ndataflow = "ws"\n')
    assert main(["estimate", "lenet300100", "--array", str(p), "--pattern", "2:4"]) == 0
    out = capsys.readouterr().out
    assert "note: ws dataflow has no zero skipping: 2:4 costed dense" in out
    assert "speedup over dense 1.00×" in out
