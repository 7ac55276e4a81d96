"""Passes (issue 13): the planner's chunks, order and reuse rule, the words moved, and the
single/double-buffered timeline, against hand-computed cases and an event-driven DMA model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwprune import ArrayConfig, Dense, LayerSpec, load_array, make_schedule, parse_pattern
from hwprune.errors import ConfigError
from hwprune.ir import LayerKind
from hwprune.images import LOADED, MEMORIES, memory_map
from hwprune.schedule import PassWords, pass_capacity, pass_timeline, plan_passes


def tiny(double: bool, **kw) -> ArrayConfig:
    """A 2×2 array whose bank holds 8 dense weight words (one 8-deep tile), 16 activation words
    (two 8-deep row tiles) and 4 folds; a DRAM byte per cycle."""
    scale = 2 if double else 1
    sizes = {"weight_sram_kib": scale * 8 * 16 / 8192, "act_sram_kib": scale * 16 * 16 / 8192,
             "out_sram_kib": scale * 8 * 64 / 8192}
    return load_array("os8x8").replace(rows=2, cols=2, dram_bytes_per_cycle=1.0, double_buffer=double,
                                       **{**sizes, **kw})


def plan(spec: LayerSpec, arr: ArrayConfig, pattern=None, order=None):
    return plan_passes(make_schedule(spec, arr, pattern or Dense()), arr, order)


def dma_model(L, A, S, double: bool) -> int:
    """The DMA program of PASSES.md run event by event (the spec the Verilator bench follows)."""
    if not double:
        return int(sum(L) + sum(A) + sum(S))
    P = len(L)
    dma = L[0]
    start, done = [0] * P, [0] * P
    start[0] = dma
    done[0] = start[0] + A[0]
    for p in range(1, P):
        dma += L[p]                                 # L_p after S_{p−2}
        start[p] = max(dma, done[p - 1])
        done[p] = start[p] + A[p]
        dma = max(dma, done[p - 1]) + S[p - 1]      # [wait done_{p−1}] S_{p−1}
    return int(max(dma, done[P - 1]) + S[P - 1])


def test_memory_names_match_the_images():
    assert PassWords.__slots__ == MEMORIES and LOADED == MEMORIES[:4]


def test_capacity_is_a_bank_of_the_memory_map():
    arr = load_array("os8x8")
    mm = memory_map(arr, 2)
    double, single = pass_capacity(arr, 2), pass_capacity(arr.replace(double_buffer=False), 2)
    assert (single.weights, single.acts) == (mm["weights"].depth, mm["acts"].depth)
    assert (double.weights, double.acts) == (mm["weights"].depth // 2, mm["acts"].depth // 2)
    assert double.folds == min(mm["desc"].depth // 2, mm["outputs"].depth // 2 // arr.rows)
    assert single.word_bytes.as_dict() == {m: mm[m].word_bytes for m in MEMORIES}


def test_hand_computed_six_passes_single_buffered():
    # M = N = 6, K = 8 dense on 2×2: 3 row tiles, 3 column tiles, one 8-slot tile per 8 weight words;
    # chunks: whole K, 1 column tile, 2 row tiles (16 activation words), so 3 × 2 passes
    p = plan(LayerSpec.gemm("g", 6, 8, 6), tiny(False))
    assert (p.k_chunk, p.col_chunk, p.row_chunk, p.count, p.k_split) == (2, 1, 2, 6, 1)
    # cols-outer moves 378 bytes, rows-outer 342 (weights 48 words, acts 24, desc 3: reused per row chunk)
    assert p.order == "rows-outer"
    assert p.moved == PassWords(weights=48, stream=48, acts=24, desc=3, outputs=18)
    assert sum(p.moved_bytes.as_dict().values()) == 342
    assert plan(LayerSpec.gemm("g", 6, 8, 6), tiny(False), order="cols-outer").moved == PassWords(24, 24, 72, 9, 18)
    passes = list(p.passes())
    assert [q.loads for q in passes] == [LOADED, ("weights", "stream"), ("weights", "stream"), LOADED,
                                         ("weights", "stream"), ("weights", "stream")]
    # A: 2·(8 + 2) − 2 + 1 + 5 = 24 for two row tiles, 14 for one; L: 16 + 8 + 32 + 4 bytes = 60 …
    assert [q.array_cycles for q in passes] == [24, 24, 24, 14, 14, 14]
    assert [q.load_cycles for q in passes] == [60, 24, 24, 42, 24, 24]
    assert [q.store_cycles for q in passes] == [32, 32, 32, 16, 16, 16]
    assert p.cycles == 198 + 114 + 144 == 456
    assert p.array_cycles == 114 and p.schedule.compute_cycles() == 89


def test_hand_computed_six_passes_double_buffered():
    p = plan(LayerSpec.gemm("g", 6, 8, 6), tiny(True))
    assert (p.k_chunk, p.col_chunk, p.row_chunk, p.count) == (2, 1, 2, 6)
    # double-buffered the reuse partner is p − 2: cols-outer keeps each row chunk's activations
    # and descriptors in their bank (342 bytes); rows-outer would reload them per bank (396)
    assert p.order == "cols-outer"
    assert p.moved == PassWords(weights=48, stream=48, acts=24, desc=3, outputs=18)
    passes = list(p.passes())
    assert [q.bank for q in passes] == [0, 1, 0, 1, 0, 1]
    assert [q.load_cycles for q in passes] == [60, 42, 24, 24, 24, 24]
    # L0 + max(S_{p−1} + L_{p+1}, A_p) summed: 60 + (42 + 56 + 40 + 56 + 40 + 32) + 16
    assert p.cycles == 342
    assert dma_model([q.load_cycles for q in passes], [q.array_cycles for q in passes],
                     [q.store_cycles for q in passes], True) == 342


def test_k_split_when_one_tile_does_not_fit():
    # K = 24: a 24-slot tile > 8 weight words, so chunks of 2 K groups (8 slots), 3 per tile
    p = plan(LayerSpec.gemm("g", 6, 24, 6), tiny(False))
    assert (p.k_chunk, p.k_split, p.col_chunk) == (2, 3, 1)
    passes = list(p.passes())
    assert [q.k_groups for q in passes[:3]] == [range(0, 2), range(2, 4), range(4, 6)]
    assert all(q.words.weights <= p.capacity.weights and q.words.acts <= p.capacity.acts for q in passes)
    # every (conv group, row tile, column tile, K group) is computed exactly once
    cells = [(q.group, r, c, k) for q in passes for r in q.row_tiles for c in q.col_tiles for k in q.k_groups]
    assert len(cells) == len(set(cells)) == 3 * 3 * 6


def test_whole_layer_that_fits_is_one_pass_costing_its_array_cycles():
    arr = load_array("os8x8")
    spec = LayerSpec.gemm("g", 64, 64, 64)
    sched = make_schedule(spec, arr, parse_pattern("2:4"))
    p = plan_passes(sched, arr)
    assert p.count == 1 and p.array_cycles == sched.compute_cycles() + sched.fill_cycles()
    assert p.cycles == p.load_cycles + p.array_cycles + p.store_cycles


def test_too_small_a_bank_is_a_config_error():
    arr = tiny(True, weight_sram_kib=2 / 8192 * 16)    # one weight word per bank: no 4-slot group fits
    with pytest.raises(ConfigError, match="cannot hold one K group"):
        plan(LayerSpec.gemm("g", 6, 8, 6), arr)


def test_huge_m_is_costed_in_closed_form():
    arr = load_array("os8x8")
    p = plan(LayerSpec.gemm("g", 10**12, 64, 64), arr, parse_pattern("2:4"))
    assert p.count > 10**9 and p.cycles > p.array_cycles > 10**12


@settings(max_examples=40, deadline=None)
@given(L=st.lists(st.integers(0, 50), min_size=1, max_size=12), data=st.data(), double=st.booleans())
def test_timeline_equals_the_dma_program(L, data, double):
    A = data.draw(st.lists(st.integers(1, 50), min_size=len(L), max_size=len(L)))
    S = data.draw(st.lists(st.integers(0, 50), min_size=len(L), max_size=len(L)))
    assert int(pass_timeline(L, A, S, double)) == dma_model(L, A, S, double)


@settings(max_examples=30, deadline=None)
@given(M=st.integers(1, 40), K=st.integers(1, 60), N=st.integers(1, 24), groups=st.sampled_from([1, 2, 7]),
       double=st.booleans(), pattern=st.sampled_from(["dense", "2:4", "1:4", "unstructured:0.4"]),
       masked=st.booleans(), seed=st.integers(0, 99))
def test_compressed_plan_equals_every_pass_listed(M, K, N, groups, double, pattern, masked, seed):
    """The closed form over runs equals the passes listed one by one, and the passes tile the layer."""
    arr = tiny(double, group_skipping=True)
    spec = LayerSpec("g", LayerKind.CONV, M, K, N * groups, groups=groups)
    pat = parse_pattern(pattern)
    mask = None
    if masked:
        rng = np.random.default_rng(seed)
        mask = (pat.mask(rng.random((spec.N, K))) if pattern != "dense" else rng.random((spec.N, K)) < 0.5)
    try:
        sched = make_schedule(spec, arr, pat, mask)
        p = plan_passes(sched, arr)
    except ConfigError:
        return
    passes = list(p.passes())
    assert len(passes) == p.count
    L, A, S = ([getattr(q, f) for q in passes] for f in ("load_cycles", "array_cycles", "store_cycles"))
    assert int(pass_timeline(L, A, S, double)) == p.cycles == dma_model(L, A, S, double)
    assert sum(A) == p.array_cycles >= sched.compute_cycles()
    for m in MEMORIES:
        assert sum(getattr(q.words, m) for q in passes if m == "outputs" or m in q.loads) == getattr(p.moved, m)
    cells = [(q.group, r, c, k) for q in passes for r in q.row_tiles for c in q.col_tiles for k in q.k_groups]
    assert len(cells) == len(set(cells)) == groups * sched.row_tiles * sched.col_tiles * sched.k_groups
    for q in passes:
        assert q.words.weights <= p.capacity.weights and q.words.acts <= p.capacity.acts
        assert q.words.desc <= p.capacity.folds
