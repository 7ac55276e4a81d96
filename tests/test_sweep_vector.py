"""The vectorised cost model equals the scalar estimate_model on every (layer, config) point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hwprune import ConvGeometry, LayerSpec, estimate_layer, estimate_model, load_array, parse_pattern
from hwprune.errors import ConfigError
from hwprune.sweep import cost_batch
from hwprune.sweep.vector import TRAFFIC_FIELDS

BASE = load_array("os16x16")


@st.composite
def configs(draw):
    m = draw(st.sampled_from([2, 4, 8]))
    ns = draw(st.sets(st.integers(1, m), min_size=1, max_size=3))
    flow = draw(st.sampled_from(["os", "os", "ws", "is"]))
    return BASE.replace(
        rows=draw(st.integers(1, 24)), cols=draw(st.integers(1, 24)), dataflow=flow,
        group_size=m, slot_options=tuple(sorted(ns)), group_skipping=draw(st.booleans()),
        fold_overlap=draw(st.booleans()),
        # small SRAMs make multi-pass layers (K split included), both bufferings
        weight_sram_kib=draw(st.sampled_from([0.125, 0.25, 1, 2, 64])),
        act_sram_kib=draw(st.sampled_from([0.125, 0.25, 1, 2, 64])),
        out_sram_kib=draw(st.sampled_from([0.25, 0.5, 2, 8, 128])), double_buffer=draw(st.booleans()),
        dram_bytes_per_cycle=draw(st.sampled_from([0.5, 4, 64])),
        weight_bits=draw(st.sampled_from([4, 8])))


@st.composite
def layer(draw, i):
    if draw(st.booleans()):
        return LayerSpec.gemm(f"g{i}", draw(st.integers(1, 70)), draw(st.integers(1, 90)), draw(st.integers(1, 40)))
    groups = draw(st.sampled_from([1, 2, 4]))
    geom = ConvGeometry.make(in_channels=groups * draw(st.integers(1, 4)), out_channels=groups * draw(st.integers(1, 6)),
                             in_size=draw(st.integers(3, 9)), kernel=draw(st.sampled_from([1, 3])),
                             stride=draw(st.sampled_from([1, 2])), groups=groups)
    return LayerSpec.from_conv(f"c{i}", geom)


PATTERNS = ["dense", "1:2", "2:4", "1:4", "2:8", "unstructured:0.3", "block:2x4:0.5", "channel:0.5"]


@settings(max_examples=25, deadline=None)
@given(cfgs=st.lists(configs(), min_size=1, max_size=6),
       specs=st.integers(1, 3).flatmap(lambda n: st.tuples(*[layer(i) for i in range(n)])),
       pattern=st.sampled_from(PATTERNS))
def test_vectorised_equals_scalar_on_every_point(cfgs, specs, pattern):
    pat = parse_pattern(pattern)
    batch = cost_batch(specs, cfgs, pat)
    for p, cfg in enumerate(cfgs):
        for i, spec in enumerate(specs):
            try:
                want = estimate_layer(spec, cfg, pat)
            except ConfigError:
                assert not batch["ok"][i, p]
                continue
            assert batch["ok"][i, p]
            for key in ("compute_cycles", "fill_cycles", "stall_cycles", "cycles", "macs_executed",
                        "macs_nonzero", "energy_pj"):
                assert batch[key][i, p] == getattr(want, key), (key, cfg, spec)
            for key in TRAFFIC_FIELDS:
                assert batch[key][i, p] == getattr(want.bytes, key), (key, cfg, spec)
        if batch.ok[p]:
            model = estimate_model(specs, cfg, pat)
            assert batch.total("cycles")[p] == model.cycles
            assert batch.total("energy_pj")[p] == model.total("energy_pj")


def test_unsupported_ratio_is_marked_not_raised():
    cfgs = [BASE.replace(rows=4, cols=4, slot_options=(2, 4)), BASE.replace(rows=4, cols=4)]
    batch = cost_batch([LayerSpec.gemm("g", 8, 16, 8)], cfgs, parse_pattern("1:4"))
    assert batch.ok.tolist() == [False, True]
    with pytest.raises(ConfigError):
        estimate_layer(LayerSpec.gemm("g", 8, 16, 8), cfgs[0], parse_pattern("1:4"))


def test_layer_with_own_zeros_uses_its_mask():
    w = np.zeros((8, 16), dtype=np.float32)
    w[:, ::4] = 1.0                          # one non-zero per group of 4: runs as 1:4
    spec = LayerSpec.gemm("g", 8, 16, 8, weight=w)
    cfgs = [BASE.replace(rows=4, cols=4), BASE.replace(rows=2, cols=8, dataflow="ws")]
    batch = cost_batch([spec], cfgs)
    assert batch["cycles"][0].tolist() == [estimate_layer(spec, c).cycles for c in cfgs]


def test_multi_pass_layers_equal_scalar_in_both_bufferings():
    """Layers of many passes (K split, ≥ 5 chunks along rows and columns: the closed form's runs)."""
    specs = [LayerSpec.gemm("wide", 300, 200, 96), LayerSpec.gemm("tall", 5000, 40, 24)]
    cfgs = [BASE.replace(rows=4, cols=4, weight_sram_kib=w, act_sram_kib=a, out_sram_kib=o, double_buffer=d,
                         dram_bytes_per_cycle=bpc)
            for w, a, o in ((0.25, 0.25, 0.5), (1, 2, 2), (64, 64, 128)) for d in (False, True) for bpc in (1.0, 16)]
    cfgs += [c.replace(clock_mhz=100.0) for c in cfgs[:4]]   # planned once with their twins
    for pattern in ("dense", "2:4", "unstructured:0.3"):
        batch = cost_batch(specs, cfgs, parse_pattern(pattern))
        for p, cfg in enumerate(cfgs):
            for i, spec in enumerate(specs):
                want = estimate_layer(spec, cfg, parse_pattern(pattern))
                got = {k: batch[k][i, p] for k in ("cycles", "stall_cycles", "fill_cycles", "dram")}
                assert got == {"cycles": want.cycles, "stall_cycles": want.stall_cycles,
                               "fill_cycles": want.fill_cycles, "dram": want.bytes.dram}, (pattern, cfg, spec)
    small = estimate_layer(specs[0], cfgs[0], parse_pattern("dense"))
    assert small.passes >= 25 and small.k_split > 1
