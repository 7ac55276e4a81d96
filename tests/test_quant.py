"""hwprune.quant: fixed-point requantization, calibration, the integer reference of a whole model."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from quant_models import digits
from torch import nn
from torch.nn import functional as F

from hwprune.errors import ConfigError, UnsupportedLayerError
from hwprune.patterns import NM, Dense
from hwprune.quant import (
    Calibration,
    QuantLayer,
    evaluate_int,
    float_steps,
    quantize,
    quantize_multiplier,
    quantize_weights,
    requantize,
)
from hwprune.quant.fixedpoint import multiply_by_quantized_multiplier
from hwprune.train import evaluate

# -- fixed point -------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e4, allow_nan=False))
def test_quantize_multiplier_is_q31_and_accurate(real):
    q, e = quantize_multiplier(real)
    assert (1 << 30) <= q < (1 << 31)
    assert abs(q * 2.0 ** (e - 31) - real) <= real * 2.0 ** -30


def _half_away(fr: Fraction) -> int:
    n = abs(fr)
    r = int(n) + (1 if n - int(n) >= Fraction(1, 2) else 0)
    return r if fr >= 0 else -r


@settings(max_examples=80, deadline=None)
@given(st.integers(-(1 << 31) + 1, (1 << 31) - 1), st.floats(min_value=1e-5, max_value=0.99))
def test_multiply_by_quantized_multiplier_rounds_like_exact_arithmetic(x, real):
    q, e = quantize_multiplier(real)
    got = int(multiply_by_quantized_multiplier(np.array([x]), q, e)[0])
    exact = Fraction(x) * q / (1 << (31 - e))
    # two roundings (high mul, then shift) stay within one unit of the exact product
    assert abs(got - _half_away(exact)) <= 1


def test_doubling_high_mul_rounds_ties_toward_plus_infinity():
    """gemmlowp's nudge: x · 2^30 · 2 / 2^32 = x / 2, ties rounded up (−2499.5 → −2499)."""
    xs = np.arange(-5000, 5000, dtype=np.int64)
    q, e = quantize_multiplier(0.5)
    assert (q, e) == (1 << 30, 0)
    got = multiply_by_quantized_multiplier(xs, q, e)
    assert got.tolist() == [(int(x) + 1) // 2 for x in xs]


@pytest.mark.parametrize("k", [3, 7, 12])
def test_power_of_two_multiplier_shifts_with_rounding(k):
    xs = np.arange(-5000, 5000, dtype=np.int64)
    q, e = quantize_multiplier(2.0 ** -k)
    got = multiply_by_quantized_multiplier(xs, q, e)
    # x/2 rounded half up, then a right shift by k − 1 rounded half away from zero
    want = [_half_away(Fraction((int(x) + 1) // 2, 1 << (k - 1))) for x in xs]
    assert got.tolist() == want


def test_requantize_clamps_and_fuses_relu():
    q, e = quantize_multiplier(0.5)
    acc = np.array([-1000, -3, 3, 1000])
    assert requantize(acc, q, e).tolist() == [-128, -1, 2, 127]   # −1.5 → −1: ties toward +∞
    assert requantize(acc, q, e, lo=0).tolist() == [0, 0, 2, 127]


def test_bad_multiplier_is_a_config_error():
    with pytest.raises(ConfigError, match="multiplier"):
        quantize_multiplier(-1.0)
    with pytest.raises(ConfigError, match="range"):
        quantize_multiplier(2.0 ** 40)


# -- weights and calibration -------------------------------------------------------------------

def test_per_channel_weights_keep_zeros_and_scale_each_channel():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 16)) * np.array([1e-3, 1, 10, 100, 1, 1])[:, None]
    w[:, ::2] = 0.0
    w[5] = 0.0
    q, s = quantize_weights(w)
    assert np.array_equal(q[:, ::2], np.zeros_like(q[:, ::2]))
    assert np.abs(q[:5]).max(axis=1).tolist() == [127] * 5      # every live channel uses the range
    assert s[5] == 0 and not q[5].any()
    np.testing.assert_allclose(q[:5] * s[:5, None], w[:5], atol=float(s.max()) / 2 + 1e-12)


def test_calibration_validates():
    with pytest.raises(ConfigError, match="calibration method"):
        Calibration("kl")
    with pytest.raises(ConfigError, match="percentile"):
        Calibration("percentile", 20.0)


# -- whole models ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    return digits()


@pytest.mark.parametrize("which", ["dense", "2:4"])
def test_integer_reference_accuracy_tracks_fp32(models, which):
    task, m, pats = models
    q = quantize(m[which], task, patterns=pats[which])
    fp, i8 = evaluate(m[which], task), evaluate_int(q, task)
    assert abs(fp - i8) <= 0.01, (fp, i8)
    # dequantized logits stay close to the float model's
    x = task.test.inputs[0][:64]
    with torch.no_grad():
        ref = m[which](x).double().numpy()
    got = q.logits(x)
    assert np.abs(got - ref).mean() < 0.05 * np.abs(ref).mean()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_pruned_masks_survive_and_patterns_are_recorded(models):
    task, m, pats = models
    q = quantize(m["2:4"], task, patterns=pats["2:4"])
    for layer in q.layers:
        assert layer.pattern == NM(2, 4)
        k = layer.weight.shape[1]
        nz = np.pad(layer.weight != 0, ((0, 0), (0, -k % 4))).reshape(layer.out_channels, -1, 4).sum(axis=2)
        assert nz.max() <= 2
        assert layer.weight.dtype == np.int64 and np.abs(layer.weight).max() <= 127
    assert quantize(m["dense"], task).layers[0].pattern == Dense()


def test_every_layer_run_is_the_convolution_of_its_integers(models):
    """Independent check of the im2col path: torch's conv/linear on the same integers (float64 is
    exact for these magnitudes) gives each layer's accumulators, and the chain feeds each layer
    the previous layer's integer output."""
    task, m, pats = models
    q = quantize(m["2:4"], task, calib=64, patterns=pats["2:4"])
    x = q.quantize_input(task.test.inputs[0][:5])
    run = q.run(x)
    assert len(run.layers) == 4
    h = torch.from_numpy(x).double()
    for layer, lr in zip(q.layers, run.layers):
        w = torch.from_numpy(layer.weight.reshape(layer.weight_shape)).double()
        if layer.is_conv:
            y = F.conv2d(h, w, None, layer.stride, layer.padding, layer.dilation, layer.groups)
            acc = y.permute(0, 2, 3, 1).reshape(1, -1, layer.out_channels)
        else:
            h = h.flatten(1)
            acc = F.linear(h, w)[None]
        assert np.array_equal(acc.numpy().astype(np.int64), lr.acc), layer.name
        assert lr.spec.M == lr.acts.shape[1] and lr.spec.K == lr.weights.shape[1]
        out = lr.output
        if layer.relu:
            assert out.min() >= 0
        if layer.name == "conv2":  # the pool follows conv2
            out = F.max_pool2d(torch.from_numpy(out).double(), 2).numpy().astype(np.int64)
        h = torch.from_numpy(out).double()
    assert np.array_equal(run.output, q.forward_int(x))


def test_input_range_and_dtype_are_checked(models):
    task, m, _ = models
    q = quantize(m["dense"], task, calib=32)
    with pytest.raises(ConfigError, match="integer"):
        q.run(np.zeros((1, 1, 8, 8)))
    with pytest.raises(ConfigError, match="lie in"):
        q.run(np.full((1, 1, 8, 8), 300))
    with pytest.raises(ConfigError, match="shape"):
        q.quantize_input(torch.zeros(1, 64))


def test_lenet_quantizes_and_unsupported_graphs_are_named():
    from hwprune.models import LeNet300100

    torch.manual_seed(0)
    q = quantize(LeNet300100(), torch.randn(32, 1, 8, 8), calib=32, calibration="minmax")
    assert [type(s).__name__ for s in q.steps] == ["Flatten", "QuantLayer", "QuantLayer", "QuantLayer"]
    assert all(isinstance(s, QuantLayer) for s in q.steps[1:])
    assert q.forward_int(np.ones((2, 1, 8, 8), dtype=np.int64)).shape == (2, 10)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + x

    with pytest.raises(UnsupportedLayerError, match="single chain"):
        float_steps(Residual())

    class Sigmoid(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.sigmoid(self.fc(x))

    with pytest.raises(UnsupportedLayerError, match="sigmoid"):
        float_steps(Sigmoid())


def test_calibration_and_evaluation_through_a_user_workload(models):
    """A user's DataLoaders (hwprune.Workload) calibrate and score exactly like the built-in task
    when they hold the same examples in the same order."""
    from torch.utils.data import DataLoader, TensorDataset

    from hwprune.workload import Workload

    task, m, _ = models
    calib = task.train.inputs[0][:96]
    train = DataLoader(TensorDataset(calib, task.train.targets[:96]), batch_size=32)
    test = DataLoader(TensorDataset(task.test.inputs[0], task.test.targets), batch_size=100)
    data = Workload(train, test, F.cross_entropy, test=test)
    q_user = quantize(m["dense"], data, calib=96)
    q_ref = quantize(m["dense"], calib, calib=96)
    assert q_user.input_scale == q_ref.input_scale
    assert [lq.output_scale for lq in q_user.layers] == [lq.output_scale for lq in q_ref.layers]
    assert evaluate_int(q_user, data, "test") == evaluate_int(q_ref, task, "test")


def test_near_dead_channel_gets_a_representable_multiplier_and_bias():
    """A channel whose weights are ~1e-12 (not exactly zero) would need a multiplier below 2^-31:
    its scale is floored, its weights round to zero and its bias survives."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[0].weight[1] = 1e-12
        model[0].bias[1] = 0.5
    x = torch.randn(64, 4)
    q = quantize(model, x, calib=64, calibration="minmax")
    first = q.layers[0]
    assert not first.weight[1].any() and first.multiplier[1] >= 1 << 30
    assert abs(first.bias[1] * first.accumulator_scale[1] - 0.5) < 1e-3
    with torch.no_grad():
        ref = model(x).numpy()
    assert np.abs(q.logits(x) - ref).max() < 0.05 * np.abs(ref).max()


def test_to_dict_round_trip_and_layer_chaining(models):
    from hwprune.quant import QuantModel

    task, m, pats = models
    q = quantize(m["2:4"], task, calib=64, patterns=pats["2:4"])
    data = json.loads(json.dumps(q.to_dict()))         # what a manifest holds
    again = QuantModel.from_dict(data, {lay.name: lay.weight for lay in q.layers})
    x = q.quantize_input(task.test.inputs[0][:20])
    assert np.array_equal(again.forward_int(x), q.forward_int(x))
    run = q.run(x)
    for a, b in zip(run.layers, run.layers[1:]):
        name, acts = q.next_activations(a.name, a.acc, 20)
        assert name == b.name and np.array_equal(acts, b.acts)
    assert q.next_activations(run.layers[-1].name, run.layers[-1].acc, 20) is None
    with pytest.raises(ConfigError, match="no weights"):
        QuantModel.from_dict(data, {})


def test_qat_recovers_accuracy_that_4_bit_ptq_loses_and_keeps_the_mask(models):
    from hwprune.config import load_array
    from hwprune.quant import qat_quantize

    task, m, pats = models
    arr = load_array("os8x8").replace(weight_bits=4, act_bits=4, acc_bits=16)
    ptq = quantize(m["2:4"], task, array=arr, patterns=pats["2:4"])
    qat = qat_quantize(m["2:4"], task, array=arr, patterns=pats["2:4"], epochs=1)
    assert evaluate_int(qat, task) > evaluate_int(ptq, task) + 0.02
    float_mask = {name: t.weight.detach().reshape(t.weight.shape[0], -1).numpy() != 0
                  for name, t in m["2:4"].named_modules() if isinstance(t, (nn.Conv2d, nn.Linear))}
    for layer in qat.layers:
        assert not np.any((layer.weight != 0) & ~float_mask[layer.name])
        assert np.abs(layer.weight).max() <= 7


# -- the Transformer: I-BERT integer host steps, attention products as GEMMs -------------------

@settings(max_examples=40, deadline=None)
@given(st.integers(0, (1 << 62) - 1))
def test_isqrt_is_exact(v):
    from hwprune.quant import isqrt

    assert int(isqrt(np.array([v]))[0]) == math.isqrt(v)


def test_integer_softmax_layernorm_gelu_track_float():
    """Each I-BERT kernel against its float definition, within the int8 output's step plus the
    approximation's own error (softmax: 2^-7; LayerNorm: half a step; GELU: I-BERT's erf)."""
    from hwprune.quant.ibert import gelu_params, i_gelu, i_layernorm, i_softmax, layernorm_params, softmax_multiplier

    rng = np.random.default_rng(0)
    acc = rng.integers(-20000, 20000, size=(500, 16))
    p = i_softmax(acc, *softmax_multiplier(1e-4), 7)
    assert p.min() >= 0 and p.max() <= 127
    ref = torch.softmax(torch.tensor(acc * 1e-4), -1).numpy()
    assert np.abs(p / 128 - ref).max() <= 1.1 / 128
    gamma, beta = rng.normal(size=64), rng.normal(size=64)
    x = rng.integers(-3000, 3000, size=(100, 64))
    y = i_layernorm(x, layernorm_params(gamma, beta, 0.05)) * 0.05
    ref = F.layer_norm(torch.tensor(x, dtype=torch.float64), (64,), torch.tensor(gamma), torch.tensor(beta)).numpy()
    assert np.abs(y - np.clip(ref, -128 * 0.05, 127 * 0.05)).max() <= 0.6 * 0.05
    xg = rng.integers(-4000, 4000, size=2000)
    yg = i_gelu(xg, gelu_params(1e-3, 0.03)) * 0.03
    ref = np.clip(F.gelu(torch.tensor(xg * 1e-3)).numpy(), -128 * 0.03, 127 * 0.03)
    assert np.abs(yg - ref).max() <= 0.02 + 0.03        # I-BERT's erf error + one step


@pytest.fixture(scope="module")
def transformers():
    from quant_models import tiny_transformer

    return tiny_transformer()


@pytest.mark.parametrize("which", ["dense", "2:4"])
def test_transformer_integer_reference_accuracy_tracks_fp32(transformers, which):
    """The int8 Transformer on the whole test set (1,000 sequences) within 1 pt of fp32."""
    task, m, pats = transformers
    q = quantize(m[which], task, array="os8x8", patterns=pats[which])
    fp, i8 = evaluate(m[which], task), evaluate_int(q, task)
    assert abs(fp - i8) <= 0.01, (fp, i8)
    x = task.test.inputs[0][:200]
    with torch.no_grad():
        ref = m[which](x).double().numpy()
    got = q.logits(x)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.97
    assert np.abs(got - ref).mean() < 0.05 * np.abs(ref).mean()
    if which == "2:4":
        assert {layer.name: layer.pattern for layer in q.layers} == pats["2:4"]
        assert q.layer("head").output_scale is None and q.layer("head").pattern == NM(2, 4)


def test_transformer_gemms_are_the_products_of_their_integers(transformers):
    """Every GEMM of the integer Transformer, checked independently with torch: the linear layers
    are x·Wᵀ of their operands, Q·Kᵀ and A·V are the per-head products of in_proj's output and the
    softmax; names and shapes are the importer's (what estimate and sim see)."""
    from hwprune.importers import from_torch

    task, m, pats = transformers
    q = quantize(m["2:4"], task, calib=64, patterns=pats["2:4"])
    tokens = task.test.inputs[0][:3]
    run = q.run(q.quantize_input(tokens))
    specs = from_torch(m["2:4"], (tokens,))
    assert [lr.name for lr in run.layers] == [s.name for s in specs]
    assert [(lr.spec.M, lr.spec.K, lr.spec.N, lr.spec.groups) for lr in run.layers] == \
        [(s.M, s.K, s.N, s.groups) for s in specs]
    by_name = {lr.name: lr for lr in run.layers}
    for lr in run.layers:
        w, a = torch.from_numpy(lr.weights).double(), torch.from_numpy(lr.acts).double()
        npg = lr.spec.n_per_group
        acc = torch.stack([a[g] @ w[g * npg:(g + 1) * npg].T for g in range(lr.spec.groups)])
        assert np.array_equal(acc.numpy().astype(np.int64), lr.acc), lr.name
    heads, d = 4, 64
    qkv = torch.from_numpy(by_name["encoder.layers.0.self_attn.in_proj"].output).double()
    qh, kh, vh = (qkv[:, i * d:(i + 1) * d].reshape(3, 16, heads, 16).transpose(1, 2) for i in range(3))
    qk = by_name["encoder.layers.0.self_attn.qk"]
    assert np.array_equal((qh @ kh.transpose(-1, -2)).reshape(-1, 16, 16).numpy().astype(np.int64), qk.acc)
    probs = torch.from_numpy(qk.output).double().reshape(3, heads, 16, 16)
    av = by_name["encoder.layers.0.self_attn.av"]
    assert np.array_equal((probs @ vh).reshape(-1, 16, 16).numpy().astype(np.int64), av.acc)
    assert 0 <= qk.output.min() and qk.output.max() <= 127
    # each row of probabilities sums to about 1 (2^7): floor rounding loses at most one unit per key
    assert np.all(np.abs(qk.output.sum(axis=-1) - 128) <= 16)
    assert np.array_equal(run.output, q.forward_int(q.quantize_input(tokens)))


def test_transformer_inputs_and_unsupported_structures_are_named(transformers):
    from hwprune.models import TinyTransformer

    task, m, _ = transformers
    q = quantize(m["dense"], task, calib=32)
    with pytest.raises(ConfigError, match=r"token ids must be integers in \[0, 10\)"):
        q.run(np.full((1, 16), 10))
    with pytest.raises(ConfigError, match="shape"):
        q.quantize_input(torch.zeros(2, 8, dtype=torch.long))
    pre = TinyTransformer()
    for layer in pre.encoder.layers:
        layer.norm_first = True
    with pytest.raises(UnsupportedLayerError, match="norm_first"):
        quantize(pre, task, calib=16)

    class MaxPooled(TinyTransformer):
        def forward(self, tokens):
            return self.head(self.encoder(self.embed(tokens) + self.pos).amax(dim=1))

    with pytest.raises(UnsupportedLayerError, match="mean over tokens"):
        quantize(MaxPooled(), task, calib=16)


def test_gelu_transformer_quantizes_with_integer_gelu(transformers):
    """A GELU encoder (BERT's activation) runs I-BERT's integer GELU between linear1 and linear2;
    an untrained model's int8 logits stay close to float."""
    from hwprune.models import TinyTransformer

    task, _, _ = transformers
    torch.manual_seed(0)
    model = TinyTransformer()
    model.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, activation="gelu",
                                                                     batch_first=True), 2,
                                          enable_nested_tensor=False)
    model.eval()
    q = quantize(model, task, calib=128)
    assert all(e.gelu is not None for e in q.encoder)
    x = task.test.inputs[0][:200]
    with torch.no_grad():
        ref = model(x).double().numpy()
    got = q.logits(x)
    assert np.abs(got - ref).mean() < 0.1 * np.abs(ref).mean()


def test_export_of_a_transformer_is_refused_by_name(transformers, tmp_path, capsys):
    """Images, manifest and QDQ describe conv/linear chains: a Transformer checkpoint is one line
    and exit 2, nothing written."""
    from hwprune.checkpoint import save_checkpoint
    from hwprune.cli import main

    task, m, pats = transformers
    ckpt = save_checkpoint(tmp_path / "t.pt", m["2:4"], arch=task.arch, task=task.name, patterns=pats["2:4"],
                           masks=None, metrics=None, arch_kwargs=dict(task.arch_kwargs))
    assert main(["export", str(ckpt), "--array", "os8x8", "--out", str(tmp_path / "out"), "--calib", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "QuantTransformer" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
