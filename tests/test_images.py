"""Memory map and images: widths and depths from the config, lossless weight compression in
``Schedule.folds()`` order, $readmemh round trips, atomic no-clobber writes, layers that do not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwprune import NM, Dense, LayerSpec, load_array
from hwprune.errors import ConfigError, ExportError, UnsupportedLayerError
from hwprune.images import (MEMORIES, Field, MemoryLayout, build_images, decode_outputs, memory_map,
                            read_images, reference_outputs, wrap, write_images)
from hwprune.schedule import make_schedule

BASE = load_array("os8x8")
SMALL = BASE.replace(rows=2, cols=3, weight_sram_kib=1, act_sram_kib=1, out_sram_kib=2)


def test_memory_map_of_the_8x8_preset():
    sparse, dense = memory_map(BASE, 2), memory_map(BASE, 4)
    assert sparse["weights"].width == 8 * (8 + 2) and dense["weights"].width == 8 * 8
    assert sparse["acts"].width == 8 * 4 * 8 and dense["acts"].width == 8 * 8
    assert sparse["outputs"].width == 8 * 32
    assert sparse["weights"].depth == 64 * 8192 // 80              # weight_sram_kib = 64
    assert sparse["acts"].depth == 64 * 8192 // 256
    assert sparse["outputs"].depth == sparse["desc"].depth * 8
    assert sparse["stream"].depth == sparse["weights"].depth


def test_memory_map_validation():
    with pytest.raises(ConfigError, match="not 3"):
        memory_map(BASE, 3)
    with pytest.raises(ConfigError, match="holds no"):
        memory_map(BASE.replace(weight_sram_kib=0.001), 2)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_pack_unpack_round_trip(data):
    fields = tuple(Field(f"f{i}", data.draw(st.integers(1, 40)), data.draw(st.booleans()))
                   for i in range(data.draw(st.integers(1, 3))))
    lay = MemoryLayout("m", 16, fields, data.draw(st.integers(1, 5)))
    n = data.draw(st.integers(0, 6))
    vals = np.zeros((n, lay.repeat, len(fields)), dtype=np.int64)
    for idx in np.ndindex(vals.shape):
        f = fields[idx[2]]
        lo, hi = (-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1) if f.signed else (0, (1 << f.bits) - 1)
        vals[idx] = data.draw(st.integers(lo, hi))
    words = lay.pack(vals)
    assert all(0 <= w < (1 << lay.width) for w in words)
    assert lay.unpack(words).astype(np.int64).tolist() == vals.tolist()


def test_pack_rejects_out_of_range():
    lay = MemoryLayout("m", 4, (Field("v", 4, True),))
    with pytest.raises(ExportError, match="m.v"):
        lay.pack(np.array([[8]]))


def random_layer(seed: int, pattern):
    rng = np.random.default_rng(seed)
    m, k, n = (int(v) for v in rng.integers(1, 12, 3))
    layer = LayerSpec.gemm("l", m, k, n)
    w = rng.integers(-128, 128, (n, k))
    w[rng.random(w.shape) < 0.3] = 0
    if not isinstance(pattern, Dense):
        w = np.where(pattern.mask(np.abs(w) + rng.random(w.shape) * 1e-3), w, 0)
    return layer, w, rng.integers(-128, 128, (m, k))


@pytest.mark.parametrize("pattern", [NM(1, 4), NM(2, 4), Dense()])
@pytest.mark.parametrize("seed", range(6))
def test_weight_image_is_the_weights_in_fold_order(pattern, seed):
    """Decoding the weight and stream images tile by tile gives back W exactly."""
    layer, w, x = random_layer(seed, pattern)
    im = build_images(layer, w, x, SMALL, pattern)
    mm = im.map
    vals = mm["weights"].unpack(im.words["weights"]).astype(np.int64)   # (slots, C, 2)
    offs = mm["stream"].unpack(im.words["stream"]).astype(np.int64)[:, 0, 0]
    rebuilt = np.zeros_like(w)
    seen = set()
    sched = make_schedule(layer, SMALL, pattern, w != 0)
    base = 0
    for fold in sched.folds():
        if (fold.group, fold.col_tile) in seen:
            continue
        seen.add((fold.group, fold.col_tile))
        for s in range(fold.k_prime):
            for c in range(mm.cols):
                ch = fold.col_start + c
                v, i = vals[base + s, c]
                k = offs[base + s] if mm.dense else offs[base + s] * mm.group_size + i
                if v:
                    assert ch < layer.N and rebuilt[ch, k] == 0
                    rebuilt[ch, k] = v
        base += fold.k_prime
    assert base == len(im.words["weights"])
    np.testing.assert_array_equal(rebuilt, w)
    desc = mm["desc"].unpack(im.words["desc"]).astype(np.int64)[:, 0, :]
    assert desc[:, 3].tolist() == [0] * (len(desc) - 1) + [1]           # last flag on the last fold
    assert desc[:, 1].tolist() == [f.k_prime for f in sched.folds()]


@pytest.mark.parametrize("pattern", [NM(2, 4), Dense()])
def test_write_read_round_trip(tmp_path, pattern):
    layer, w, x = random_layer(7, pattern)
    im = build_images(layer, w, x, SMALL, pattern)
    paths = write_images(im, tmp_path)
    assert set(paths) == {*MEMORIES, "manifest"}
    lines = paths["weights"].read_text().splitlines()
    assert all(len(line) == -(-im.map["weights"].width // 4) for line in lines)
    back = read_images(tmp_path, im.map)
    assert back == {k: list(v) for k, v in im.words.items()}
    np.testing.assert_array_equal(decode_outputs(back["outputs"], im), im.expected)
    manifest = json.loads(paths["manifest"].read_text())
    assert manifest["words"]["desc"] == im.folds and manifest["map"]["slots"] == im.map.slots
    with pytest.raises(ExportError, match="--force"):
        write_images(im, tmp_path)
    write_images(im, tmp_path, force=True)
    paths["acts"].write_text("zz\n")
    with pytest.raises(ExportError, match="not a hex word"):
        read_images(tmp_path, im.map)
    paths["acts"].unlink()
    with pytest.raises(ExportError, match="missing"):
        read_images(tmp_path, im.map)


def test_reference_and_wrap():
    assert wrap(np.array([32768, -32769, 5]), 16).tolist() == [-32768, 32767, 5]
    w = np.full((2, 3), -128)
    x = np.full((1, 4, 3), -128)
    assert (reference_outputs(w, x, 1, 16) == wrap(np.array(3 * 16384), 16)).all()


def test_layer_too_big_names_the_memory():
    layer = LayerSpec.gemm("big", 200, 4, 3)
    with pytest.raises(UnsupportedLayerError, match="big: needs 100 desc words .*out_sram_kib"):
        build_images(layer, np.ones((3, 4), dtype=int), np.ones((200, 4), dtype=int), SMALL, Dense())
    layer = LayerSpec.gemm("wide", 2, 400, 3)
    with pytest.raises(UnsupportedLayerError, match="wide: needs 400 weights words .*weight_sram_kib"):
        build_images(layer, np.ones((3, 400), dtype=int), np.ones((2, 400), dtype=int), SMALL, Dense())


def test_bad_operands():
    layer = LayerSpec.gemm("g", 2, 4, 3)
    ok_w, ok_x = np.ones((3, 4), dtype=int), np.ones((2, 4), dtype=int)
    with pytest.raises(ConfigError, match=r"N×K = \(3, 4\)"):
        build_images(layer, ok_w.T, ok_x, SMALL)
    with pytest.raises(ConfigError, match="groups, M, K"):
        build_images(layer, ok_w, ok_x.T, SMALL)
    with pytest.raises(ConfigError, match=r"\[-128, 127\].*-129"):
        build_images(layer, ok_w * -129, ok_x, SMALL)
    with pytest.raises(UnsupportedLayerError, match="activation×activation"):
        build_images(LayerSpec.matmul("qk", 2, 4, 3), ok_w, ok_x, SMALL, NM(2, 4))


@pytest.mark.parametrize("pattern", [NM(2, 4), Dense()])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_a_pass_of_the_whole_layer_is_the_layer_and_passes_tile_it(pattern, seed):
    """A pass covering a one-group layer lays out exactly ``build_images``' words; any split into
    passes (row tiles × column tiles × K groups) scatters its own reference outputs back to the
    layer's, K chunks summed with the accumulator's wrap-around."""
    from hwprune.images import (bank_base, build_pass_images, padded_outputs, pass_schedule,
                                scatter_outputs, unpad_outputs)
    from hwprune.sim.fuzz import random_case

    layer, w, x = random_case(SMALL, pattern, seed)
    im = build_images(layer, w, x, SMALL, pattern)
    s, mm = im.schedule, im.map
    if s.groups == 1:
        whole = build_pass_images(layer, w, x, SMALL, s, group=0, row_tiles=range(s.row_tiles),
                                  col_tiles=range(s.col_tiles), k_groups=range(s.k_groups))
        assert {n: whole.words[n] for n in ("weights", "stream", "acts", "desc")} == \
               {n: im.words[n] for n in ("weights", "stream", "acts", "desc")}
    rng = np.random.default_rng(seed)
    cut = [int(rng.integers(1, n + 1)) for n in (s.row_tiles, s.col_tiles, s.k_groups)]
    ypad = padded_outputs(s, mm)
    xs = x if x.ndim == 3 else x[None]
    npg = layer.n_per_group
    for g in range(s.groups):
        for r0 in range(0, s.row_tiles, cut[0]):
            for c0 in range(0, s.col_tiles, cut[1]):
                for k0 in range(0, s.k_groups, cut[2]):
                    rect = dict(row_tiles=range(r0, min(r0 + cut[0], s.row_tiles)),
                                col_tiles=range(c0, min(c0 + cut[1], s.col_tiles)),
                                k_groups=range(k0, min(k0 + cut[2], s.k_groups)))
                    pi = build_pass_images(layer, w, x, SMALL, s, group=g, bank=1, double_buffer=True, **rect)
                    sub = pass_schedule(s, group=g, **rect)
                    assert (pi.schedule.M, pi.schedule.K, pi.schedule.n_out) == (sub.M, sub.K, sub.n_out)
                    assert np.array_equal(pi.schedule.issued, s.issued[g:g + 1, c0:rect["col_tiles"].stop,
                                                                       k0:rect["k_groups"].stop])
                    assert pi.base == bank_base(mm, 1, True)
                    assert sub.folds_count == len(rect["row_tiles"]) * len(rect["col_tiles"])
                    # what the array computes for this pass: its K range of its channels and rows
                    ks = slice(k0 * 4, min(rect["k_groups"].stop * 4, layer.K))
                    chans = sub.kept_channels[0]
                    part = np.zeros((sub.row_tiles * 2, sub.col_tiles * 3), dtype=np.int64)
                    live = chans >= 0
                    rows = slice(pi.row, pi.row + sub.M)
                    part[: sub.M, : chans.size][:, live] = (xs[g, rows, ks] @ w[g * npg + chans[live], ks].T)
                    words = mm["outputs"].pack(np.concatenate(
                        [part[f.row_start: f.row_start + 2, f.col_start: f.col_start + 3] for f in sub.folds()]))
                    scatter_outputs(ypad, words, sub, mm, group=g, row=pi.row, col=pi.col)
    np.testing.assert_array_equal(unpad_outputs(ypad, s, mm, npg), im.expected)


def test_pass_rectangles_and_banks_are_validated():
    from hwprune.images import bank_base, bank_words, pass_schedule

    s = make_schedule(LayerSpec.gemm("g", 5, 9, 4), SMALL, NM(2, 4))
    with pytest.raises(ConfigError, match="row_tiles"):
        pass_schedule(s, group=0, row_tiles=range(2, 4), col_tiles=range(1), k_groups=range(1))
    with pytest.raises(ConfigError, match="group"):
        pass_schedule(s, group=1, row_tiles=range(1), col_tiles=range(1), k_groups=range(1))
    mm = memory_map(SMALL, 2)
    assert bank_base(mm, 0, False) == dict.fromkeys(MEMORIES, 0)
    assert bank_base(mm, 1, True)["acts"] == bank_words(mm, "acts", True) == mm["acts"].depth // 2
    with pytest.raises(ConfigError, match="bank"):
        bank_base(mm, 1, False)
