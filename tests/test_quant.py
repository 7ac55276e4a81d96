"""hwprune.quant: fixed-point requantization, calibration, the integer reference of a whole model."""

from __future__ import annotations

import json
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
