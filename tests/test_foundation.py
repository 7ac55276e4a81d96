"""IR, array configs and sparsity patterns: validation, lowering and mask structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hwprune import (NM, Block, Channel, ConvGeometry, Dense, LayerSpec, Unstructured, im2col,
                     load_array, parse_pattern, preset_names)
from hwprune.config import ArrayConfig
from hwprune.errors import ConfigError, HwPruneError


# --- IR ----------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 4), groups=st.sampled_from([1, 2]), n=st.integers(1, 3), h=st.integers(3, 9),
       w=st.integers(3, 9), k=st.integers(1, 3), stride=st.integers(1, 3), pad=st.integers(0, 2),
       dil=st.integers(1, 2), batch=st.integers(1, 2))
def test_im2col_matches_torch_conv(c, groups, n, h, w, k, stride, pad, dil, batch):
    cin, cout = c * groups, n * groups
    if dil * (k - 1) + 1 > min(h, w) + 2 * pad:
        return
    geom = ConvGeometry.make(in_channels=cin, out_channels=cout, in_size=(h, w), kernel=k, stride=stride,
                             padding=pad, dilation=dil, groups=groups, batch=batch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, h, w)).astype(np.float32)
    wt = rng.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(wt), stride=stride, padding=pad,
                                     dilation=dil, groups=groups).numpy()
    spec = LayerSpec.from_conv("c", geom, weight=wt)
    cols = im2col(x, geom)
    assert cols.shape == (groups, spec.M, spec.K)
    wg = spec.weight.reshape(groups, cout // groups, spec.K)
    y = np.concatenate([cols[g] @ wg[g].T for g in range(groups)], axis=1)
    oh, ow = geom.out_size
    assert ref.shape == (batch, cout, oh, ow)
    np.testing.assert_allclose(y.reshape(batch, oh, ow, cout).transpose(0, 3, 1, 2), ref, atol=1e-4)


def test_conv1d_lowering():
    geom = ConvGeometry.make(in_channels=3, out_channels=5, in_size=(1, 20), kernel=(1, 4), stride=(1, 2))
    x = np.random.default_rng(1).standard_normal((1, 3, 20)).astype(np.float32)
    wt = np.random.default_rng(2).standard_normal((5, 3, 4)).astype(np.float32)
    ref = torch.nn.functional.conv1d(torch.tensor(x), torch.tensor(wt), stride=2).numpy()
    y = im2col(x, geom)[0] @ wt.reshape(5, -1).T
    np.testing.assert_allclose(y.T[None], ref, atol=1e-5)


def test_layer_spec_kinds_and_validation():
    dw = LayerSpec.from_conv("dw", ConvGeometry.make(in_channels=32, out_channels=32, in_size=14,
                                                     kernel=3, padding=1, groups=32))
    assert (dw.kind, dw.M, dw.K, dw.N, dw.groups) == ("depthwise", 196, 9, 32, 32)
    assert LayerSpec.matmul("qk", 128, 64, 128, groups=12).has_weights is False
    with pytest.raises(ConfigError, match="M must be a positive integer, not 0"):
        LayerSpec.gemm("bad", 0, 4, 4)
    with pytest.raises(ConfigError, match=r"weight of shape \(3, 3\)"):
        LayerSpec.gemm("bad", 2, 4, 4, weight=np.zeros((3, 3)))
    with pytest.raises(ConfigError, match="groups=3 must divide"):
        ConvGeometry.make(in_channels=4, out_channels=6, in_size=8, kernel=3, groups=3)
    with pytest.raises(ConfigError, match="does not fit"):
        ConvGeometry.make(in_channels=1, out_channels=1, in_size=2, kernel=5)
    spec = LayerSpec.gemm("w", 2, 4, 3, weight=np.ones((3, 4)))
    with pytest.raises(ValueError):
        spec.weight[0, 0] = 5  # weights in the frozen IR are read-only


# --- array configs -----------------------------------------------------------------------------
def test_presets_load_and_round_trip():
    assert {"os8x8", "os16x16", "os32x32"} <= set(preset_names())
    for name in ("os8x8", "os16x16", "os32x32"):
        a = load_array(name)
        assert a.rows == a.cols == int(name[2:].split("x")[0])
        assert a.nm_ratios == ("1:4", "2:4", "4:4")
        assert ArrayConfig.from_dict(a.to_dict(), source=name) == a


def test_fold_overlap_presets_and_key():
    for base in ("os8x8", "os16x16"):
        a, p = load_array(base), load_array(f"{base}p")
        assert not a.fold_overlap and p.fold_overlap
        assert p == a.replace(name=f"{base}p", fold_overlap=True)
        assert ArrayConfig.from_dict(p.to_dict(), source=p.name) == p
        assert p.to_dict()["fold_overlap"] is True
    assert not load_array("os32x32").fold_overlap
    assert load_array("os8x8").replace(fold_overlap=True).replace(fold_overlap=False) == load_array("os8x8")


def test_user_toml(tmp_path):
    p = tmp_path / "mine.toml"
    p.write_text('name = "mine"\nrows = 4\ncols = 2\n[sparsity]\nm = 8\nn = [2, 4]\n')
    a = load_array(p)
    assert (a.rows, a.cols, a.group_size, a.slot_options, a.index_bits) == (4, 2, 8, (2, 4, 8), 3)


@pytest.mark.parametrize("text,message", [
    ("rows = 0\ncols = 4", "rows must be a positive integer, not 0"),
    ("rows = 4", "cols is missing"),
    ('rows = 4\ncols = 4\ndataflow = "rs"', "supported dataflows are ('os', 'ws', 'is'), not 'rs'"),
    ("rows = 4\ncols = 4\n[sparsity]\nm = 4\nn = [5]", "N must be ≤ M = 4, not 5"),
    ("rows = 4\ncols = 4\n[bits]\naccumulator = 12", "12 bits cannot hold one 8×8-bit product"),
    ("rows = 4\ncols = 4\n[memory]\ndram_bytes_per_cycle = -1", "dram_bytes_per_cycle must be positive, not -1"),
    ("rows = 4\ncols = 4\nrow = 3", "unknown key 'row'"),
    ("rows = 4\ncols = 4\nfold_overlap = 1", "fold_overlap must be true or false, not 1"),
    ("rows = 4\ncols = [", "not valid TOML"),
])
def test_bad_toml_names_key_and_value(tmp_path, text, message):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_array(p)
    assert message in str(exc.value)


def test_unknown_array_lists_presets():
    with pytest.raises(HwPruneError, match="os16x16"):
        load_array("os17x17")


# --- patterns ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text,pattern", [
    ("dense", Dense()), ("2:4", NM(2, 4)), ("1:4", NM(1, 4)), ("unstructured:0.25", Unstructured(0.25)),
    ("block:4x8:0.5", Block(4, 8, 0.5)), ("channel:0.5", Channel(0.5))])
def test_pattern_text_round_trip(text, pattern):
    assert parse_pattern(text) == pattern
    assert parse_pattern(str(pattern)) == pattern


@pytest.mark.parametrize("text", ["3:2", "2:x", "unstructured:1.5", "unstructured:0", "block:4:0.5",
                                  "channel", "sparse", "0:4"])
def test_bad_patterns(text):
    with pytest.raises(ConfigError):
        parse_pattern(text)


shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))


@settings(max_examples=80, deadline=None)
@given(shape=shapes, n=st.integers(1, 8), m=st.integers(1, 8), seed=st.integers(0, 999))
def test_nm_mask_structure(shape, n, m, seed):
    if n > m:
        n, m = m, n
    scores = np.random.default_rng(seed).random(shape)
    mask = NM(n, m).mask(scores)
    rows, k = shape
    for start in range(0, k, m):
        counts = mask[:, start:start + m].sum(axis=1)
        assert np.all(counts == min(n, min(m, k - start)))
        # the kept ones are the largest of each group
        kept_min = np.where(mask[:, start:start + m], scores[:, start:start + m], np.inf).min(axis=1)
        drop_max = np.where(~mask[:, start:start + m], scores[:, start:start + m], -np.inf).max(axis=1)
        assert np.all(kept_min >= drop_max)


@settings(max_examples=80, deadline=None)
@given(shape=shapes, density=st.floats(0.01, 1.0), seed=st.integers(0, 999))
def test_density_masks(shape, density, seed):
    scores = np.random.default_rng(seed).random(shape)
    size = shape[0] * shape[1]
    assert Unstructured(density).mask(scores).sum() == max(1, round(density * size))
    ch = Channel(density).mask(scores)
    assert np.all(ch.all(axis=1) | ~ch.any(axis=1))
    assert ch.any(axis=1).sum() == max(1, round(density * shape[0]))
    blk = Block(2, 3, density).mask(scores)
    blocks = -(-shape[0] // 2) * -(-shape[1] // 3)
    padded = np.zeros((-(-shape[0] // 2) * 2, -(-shape[1] // 3) * 3), dtype=bool)
    padded[: shape[0], : shape[1]] = blk
    per_block = padded.reshape(-1, 2, padded.shape[1] // 3, 3).any(axis=(1, 3))
    assert per_block.sum() == max(1, round(density * blocks))


def test_scores_must_be_finite_matrix():
    with pytest.raises(ConfigError, match="NaN"):
        NM(2, 4).mask(np.array([[np.nan, 1.0, 2.0, 3.0]]))
    with pytest.raises(ConfigError, match="N×K"):
        NM(2, 4).mask(np.ones(4))
