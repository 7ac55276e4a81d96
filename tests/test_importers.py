"""Importers: torch modules, ONNX files and SCALE-Sim CSVs agree on the GEMM shapes of a layer.

Expected shapes are derived by hand in the comments (M = batch × output positions,
K = C_in/groups × kh × kw or in_features, N = output channels).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn.utils import prune

from hwprune import zoo
from hwprune.errors import ConfigError, UnsupportedLayerError
from hwprune.importers import (from_onnx, from_scalesim_csv, from_torch, load_model,
                               resolve_weight)
from hwprune.ir import LayerKind, im2col
from hwprune.models import GCN
from hwprune.patterns import NM, Dense

DATA = Path(__file__).parent / "data" / "scalesim"


def dims(spec):
    return spec.M, spec.K, spec.N, spec.groups


# ================================================================================================
# torch
# ================================================================================================

def test_resnet18_layers_names_and_shapes():
    specs = zoo.layers("resnet18")
    # 1 stem conv + 8 blocks × 2 convs + 3 downsample convs + fc = 21
    assert len(specs) == 21
    assert sum(s.kind is LayerKind.CONV for s in specs) == 20
    assert [s.name for s in specs if "downsample" in s.name] == [
        "layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"]
    by = {s.name: s for s in specs}
    # conv1: 224 → (224 + 6 − 7)//2 + 1 = 112; K = 3·7·7 = 147
    assert dims(by["conv1"]) == (112 * 112, 147, 64, 1)
    # layer1 at 56×56 (after the stride-2 max-pool), K = 64·3·3
    assert dims(by["layer1.0.conv1"]) == (56 * 56, 576, 64, 1)
    # layer2.0.conv1 strides 56 → 28 and reads 64 channels
    assert dims(by["layer2.0.conv1"]) == (28 * 28, 576, 128, 1)
    # 1×1 stride-2 downsample: 28 → 14, K = 128
    assert dims(by["layer3.0.downsample.0"]) == (14 * 14, 128, 256, 1)
    assert dims(by["layer4.1.conv2"]) == (7 * 7, 512 * 9, 512, 1)
    assert dims(by["fc"]) == (1, 512, 1000, 1) and by["fc"].kind is LayerKind.LINEAR


def test_resnet50_bottleneck_shapes():
    specs = zoo.layers("resnet50")
    # 1 + 16 blocks × 3 + 4 downsample + fc = 54
    assert len(specs) == 54
    by = {s.name: s for s in specs}
    assert dims(by["layer1.0.downsample.0"]) == (56 * 56, 64, 256, 1)
    assert dims(by["layer1.0.conv3"]) == (56 * 56, 64, 256, 1)
    # v1.5: the stride sits on conv2 (3×3), so layer2.0.conv1 still runs at 56×56
    assert dims(by["layer2.0.conv1"]) == (56 * 56, 256, 128, 1)
    assert dims(by["layer2.0.conv2"]) == (28 * 28, 128 * 9, 128, 1)
    assert dims(by["layer4.2.conv2"]) == (7 * 7, 4608, 512, 1)
    assert dims(by["fc"]) == (1, 2048, 1000, 1)


def test_mobilenet_v2_depthwise_layers():
    specs = zoo.layers("mobilenet_v2")
    # stem + 17 inverted residuals (first without expansion: 2 convs, others 3) + last 1×1 + fc
    assert len(specs) == 1 + 2 + 16 * 3 + 1 + 1
    dw = [s for s in specs if s.kind is LayerKind.DEPTHWISE]
    assert len(dw) == 17
    for s in dw:
        assert s.K == 9 and s.groups == s.conv.in_channels == s.N and s.n_per_group == 1
    by = {s.name: s for s in specs}
    # features.1: depthwise 3×3 on 32 channels at 112×112
    assert dims(by["features.1.conv.0.0"]) == (112 * 112, 9, 32, 32)
    # features.2: expand 16 → 96 (1×1), depthwise stride 2 → 56×56, project 96 → 24
    assert dims(by["features.2.conv.0.0"]) == (112 * 112, 16, 96, 1)
    assert dims(by["features.2.conv.1.0"]) == (56 * 56, 9, 96, 96)
    assert dims(by["features.2.conv.2"]) == (56 * 56, 96, 24, 1)
    assert dims(by["features.18.0"]) == (7 * 7, 320, 1280, 1)
    assert dims(by["classifier.1"]) == (1, 1280, 1000, 1)


def test_bert_layer_gemms_and_attention_matmuls():
    specs = zoo.layers("bert_layer")
    by = {s.name: s for s in specs}
    assert [s.name for s in specs] == ["self_attn.in_proj", "self_attn.qk", "self_attn.av",
                                       "self_attn.out_proj", "linear1", "linear2"]
    # self-attention runs ONE fused projection: N = 3·768 (q, k, v rows of in_proj_weight)
    assert dims(by["self_attn.in_proj"]) == (128, 768, 2304, 1)
    assert dims(by["self_attn.out_proj"]) == (128, 768, 768, 1)
    assert dims(by["linear1"]) == (128, 768, 3072, 1)
    assert dims(by["linear2"]) == (128, 3072, 768, 1)
    qk, av = by["self_attn.qk"], by["self_attn.av"]
    # per head (12 heads × batch 1): Q[128×64] · Kᵀ[64×128], then A[128×128] · V[128×64]
    assert (qk.M, qk.K, qk.n_per_group, qk.groups) == (128, 64, 128, 12)
    assert (av.M, av.K, av.n_per_group, av.groups) == (128, 128, 64, 12)
    assert qk.kind is LayerKind.MATMUL and not qk.has_weights and qk.weight is None


def test_weights_equal_module_parameters_reshaped():
    model, _ = zoo.build("resnet18")
    for spec in zoo.layers("resnet18"):
        param = model.get_submodule(spec.name).weight.detach().numpy()
        np.testing.assert_array_equal(spec.weight, param.reshape(spec.N, -1))
    model, _ = zoo.build("bert_layer")
    for spec in zoo.layers("bert_layer"):
        if spec.has_weights:
            module, pname = resolve_weight(model, spec.name)
            np.testing.assert_array_equal(spec.weight, getattr(module, pname).detach().numpy())
    assert resolve_weight(model, "self_attn.in_proj")[1] == "in_proj_weight"
    with pytest.raises(ConfigError, match="qk"):
        resolve_weight(model, "self_attn.qk")


def _check_conv_against_im2col(conv: nn.Module, x: torch.Tensor) -> None:
    """The recorded geometry lowers x so that im2col(x) · Wᵀ is exactly the conv output."""
    (spec,) = from_torch(conv, (x,))
    with torch.no_grad():
        y = conv(x).numpy()
    cols = im2col(x.numpy(), spec.conv)  # (groups, M, K)
    w = spec.weight.reshape(spec.groups, spec.n_per_group, spec.K)
    out = np.concatenate([cols[g] @ w[g].T for g in range(spec.groups)], axis=1)
    if conv.bias is not None:
        out = out + conv.bias.detach().numpy()
    b = x.shape[0]
    ref = y.reshape(b, spec.N, -1).transpose(0, 2, 1).reshape(-1, spec.N)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert spec.M == ref.shape[0]


def test_conv1d_geometry_and_lowering():
    torch.manual_seed(0)
    conv = nn.Conv1d(4, 8, 3, stride=2, padding=1)
    x = torch.randn(2, 4, 10)
    (spec,) = from_torch(conv, (x,))
    # L_out = (10 + 2 − 2 − 1)//2 + 1 = 5 per sample, batch 2; K = 4·3
    assert dims(spec) == (10, 12, 8, 1)
    assert spec.conv.in_size == (1, 10) and spec.conv.kernel == (1, 3)
    _check_conv_against_im2col(conv, x)


def test_grouped_and_same_padded_convs():
    torch.manual_seed(0)
    grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    (spec,) = from_torch(grouped, (torch.randn(1, 8, 6, 6),))
    # K = 8/4 · 3·3 = 18; 4 groups of 4 output channels
    assert dims(spec) == (36, 18, 16, 4) and spec.kind is LayerKind.GROUPED
    _check_conv_against_im2col(grouped, torch.randn(2, 8, 6, 6))
    _check_conv_against_im2col(nn.Conv2d(3, 5, 3, padding="same", dilation=2, bias=False),
                               torch.randn(1, 3, 7, 9))
    # an even kernel with padding='same' pads one more at the end: modelled as a wider input
    (even,) = from_torch(nn.Conv2d(3, 5, 4, padding="same"), (torch.randn(1, 3, 7, 9),))
    assert even.M == 7 * 9 and even.K == 48


@settings(max_examples=30, deadline=None)
@given(c_per_group=st.integers(1, 3), n_per_group=st.integers(1, 3), groups=st.integers(1, 3),
       kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       padding=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       size=st.tuples(st.integers(5, 9), st.integers(5, 9)), batch=st.integers(1, 2))
def test_any_conv2d_geometry_lowers_exactly(c_per_group, n_per_group, groups, kernel, stride,
                                            padding, dilation, size, batch):
    torch.manual_seed(0)
    conv = nn.Conv2d(c_per_group * groups, n_per_group * groups, kernel, stride, padding,
                     dilation, groups)
    _check_conv_against_im2col(conv, torch.randn(batch, c_per_group * groups, *size))


def test_gcn_activation_products_are_matmuls():
    specs = from_torch(GCN(), GCN().example_input())
    # X·W over 256 nodes, then Â[256×256]·H for each layer
    assert [(s.name, *dims(s)) for s in specs] == [
        ("lin1", 256, 32, 64, 1), ("matmul", 256, 256, 64, 1),
        ("lin2", 256, 64, 4, 1), ("matmul_1", 256, 256, 4, 1)]
    assert [s.has_weights for s in specs] == [True, False, True, False]


class _Attention(nn.Module):
    """Cross-attention (key is value), need_weights=True (the bmm path), then sdpa and @."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=True)
        self.proj = nn.Parameter(torch.randn(16, 5))

    def forward(self, x: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        a, _ = self.mha(x, mem, mem)                      # need_weights=True: bmm, not sdpa
        q = a.view(2, 25, 4, 4).transpose(1, 2)           # (B=2, H=4, L=25, d=4)
        o = F.scaled_dot_product_attention(q, q, q)
        h = o.transpose(1, 2).reshape(2, 25, 16) @ self.proj  # X · W with a bare Parameter
        return h @ h.transpose(1, 2)                      # activation × activation, batch 2


def test_attention_variants_names_and_shapes():
    torch.manual_seed(0)
    model = _Attention()
    specs = from_torch(model, (torch.randn(2, 25, 16), torch.randn(2, 7, 16)))
    got = [(s.name, *dims(s)) for s in specs]
    assert got == [
        ("mha.in_proj.q", 50, 16, 16, 1),     # rows [0, 16) of in_proj_weight on 2·25 tokens
        ("mha.in_proj.kv", 14, 16, 32, 1),    # rows [16, 48) on the 2·7 memory tokens
        ("mha.qk", 25, 4, 7 * 8, 8),          # per (batch, head): [25×4]·[4×7]
        ("mha.av", 25, 7, 4 * 8, 8),
        ("mha.out_proj", 50, 16, 16, 1),
        ("qk", 25, 4, 25 * 8, 8),             # sdpa at the root module
        ("av", 25, 25, 4 * 8, 8),
        ("proj", 50, 16, 5, 1),               # bare Parameter: named after it, weight = Wᵀ
        ("matmul", 25, 5, 25 * 2, 2),
    ]
    w = model.mha.in_proj_weight.detach().numpy()
    np.testing.assert_array_equal(specs[1].weight, w[16:])
    np.testing.assert_array_equal(specs[7].weight, model.proj.detach().numpy().T)


def test_repeated_module_and_pruned_weights():
    torch.manual_seed(0)
    fc = nn.Linear(8, 8)
    model = nn.Sequential(fc, nn.ReLU(), fc)
    prune.l1_unstructured(fc, "weight", amount=0.5)
    specs = from_torch(model, (torch.randn(3, 8),))
    # the same module twice: two layers, the second marked #2; weights are the masked ones
    assert [s.name for s in specs] == ["0", "0#2"]
    assert (specs[0].weight == 0).sum() == 32
    np.testing.assert_array_equal(specs[0].weight, fc.weight.detach().numpy())
    assert resolve_weight(model, "0#2") == (fc, "weight")


def test_model_state_is_restored():
    model, inputs = zoo.build("tiny_transformer")
    model.train()
    model.encoder.layers[1].eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = torch.backends.mha.get_fastpath_enabled()
    from_torch(model, inputs)
    assert model.training and model.encoder.layers[0].training
    assert not model.encoder.layers[1].training
    assert torch.backends.mha.get_fastpath_enabled() == fast
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.encoder.layers[0]._forward_hooks  # our hooks are gone


def test_batch_rebatches_the_example_inputs():
    model, inputs = zoo.build("digits_cnn")
    specs = from_torch(model, inputs, batch=4)
    assert [s.M for s in specs] == [4 * 64, 4 * 64, 4, 4]
    with pytest.raises(ConfigError, match="batch"):
        from_torch(model, inputs, batch=0)


def test_unsupported_torch_layers_are_all_named():
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 2, 3)
            self.fc = nn.Linear(36, 4)
            self.lstm = nn.LSTM(4, 4)
            self.gru = nn.GRU(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(self.up(x).flatten(2))
            return self.gru(self.lstm(h)[0])[0]

    with pytest.raises(UnsupportedLayerError) as err:
        from_torch(Bad(), (torch.randn(1, 2, 4, 4),))
    msg = str(err.value)
    for text in ("up (ConvTranspose2d", "lstm (LSTM", "gru (GRU", "3 unsupported"):
        assert text in msg


def test_bad_torch_input():
    with pytest.raises(ConfigError, match="nn.Module"):
        from_torch("resnet18", ())
    with pytest.raises(ConfigError, match="failed"):
        from_torch(nn.Linear(4, 4), (torch.randn(2, 5),))


# ================================================================================================
# ONNX
# ================================================================================================

def _export(model: nn.Module, inputs: tuple, path: Path, *, fold: bool = False,
            dynamo: bool = False) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, inputs, str(path), dynamo=True, opset_version=18,
                              verbose=False)
        else:
            torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17,
                              do_constant_folding=fold)
    return path


def _small_resnet() -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    return zoo.ResNet(zoo.BasicBlock, [1, 1, 1, 1], num_classes=10).eval(), (torch.randn(2, 3, 32, 32),)


@pytest.mark.parametrize("name", ["digits_cnn", "lenet300100", "small_resnet", "tiny_transformer"])
def test_onnx_agrees_with_torch(name, tmp_path):
    # Constant folding off keeps the parameters as initializers (BatchNorm stays unfused), so the
    # ONNX weights are the module's weights bit for bit.
    model, inputs = _small_resnet() if name == "small_resnet" else zoo.build(name)
    path = _export(model, inputs, tmp_path / f"{name}.onnx")
    got, want = from_onnx(path), from_torch(model, inputs)
    assert [dims(s) for s in got] == [dims(s) for s in want]
    assert [s.kind for s in got] == [s.kind for s in want]
    for a, b in zip(got, want):
        if b.has_weights:
            assert a.name == b.name
            np.testing.assert_array_equal(a.weight, b.weight)
    assert load_model(str(path)) == got  # load_model dispatches on the suffix


@pytest.mark.parametrize("name", ["digits_cnn", "small_resnet", "tiny_transformer"])
def test_onnx_default_export_names_from_node_scopes(name, tmp_path):
    # The default export folds BatchNorm into the conv weights and pre-transposes MatMul
    # weights into anonymous constants: names then come from the node scopes.
    model, inputs = _small_resnet() if name == "small_resnet" else zoo.build(name)
    got = from_onnx(_export(model, inputs, tmp_path / f"{name}.onnx", fold=True))
    want = from_torch(model, inputs)
    assert [dims(s) for s in got] == [dims(s) for s in want]
    assert [s.name for s in got if s.has_weights] == [s.name for s in want if s.has_weights]


def test_onnx_dynamo_export_of_a_transformer(tmp_path):
    model, inputs = zoo.build("tiny_transformer")
    got = from_onnx(_export(model, inputs, tmp_path / "t.onnx", dynamo=True))
    want = from_torch(model, inputs)
    # all names agree, the attention products included (qk/av from the exported sdpa)
    assert [(s.name, *dims(s)) for s in got] == [(s.name, *dims(s)) for s in want]


def _graph(nodes, inputs, outputs, inits=()):
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                              opset_imports=[helper.make_opsetid("", 17)])
    return model


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def test_onnx_passes_over_non_compute_ops():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    fc = rng.standard_normal((5, 64)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Add", ["p", "p"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.weight"], ["y"], name="fc", transB=1),
    ]
    model = _graph(nodes, [_vi("x", [2, 3, 8, 8])], [_vi("y", [2, 5])],
                   [_init("w", w), _init("fc.weight", fc), _init("shape", np.array([2, 64]))])
    conv, gemm = from_onnx(model)
    # conv: 8×8 with pad 1, 3×3 → 8×8, batch 2; K = 3·9.  Pooling 2 → 4×4·4 = 64 features
    assert (conv.name, *dims(conv)) == ("conv", 128, 27, 4, 1)
    assert (gemm.name, *dims(gemm)) == ("fc", 2, 64, 5, 1)
    np.testing.assert_array_equal(conv.weight, w.reshape(4, -1))
    np.testing.assert_array_equal(gemm.weight, fc)


def test_onnx_gemm_transposes_matmul_batches_and_asymmetric_pads():
    rng = np.random.default_rng(1)
    b = rng.standard_normal((6, 3)).astype(np.float32)   # K×N (transB = 0)
    nodes = [
        helper.make_node("Gemm", ["a", "b"], ["g"], name="gemm", transA=1),
        helper.make_node("MatMul", ["q", "k"], ["s"], name="scores"),
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[0, 0, 1, 1],
                         strides=[2, 2]),
    ]
    model = _graph(nodes, [_vi("a", [6, 4]), _vi("q", [2, 3, 5, 8]), _vi("k", [3, 8, 7]),
                           _vi("x", [1, 2, 8, 8])],
                   [_vi("g", [4, 3]), _vi("s", [2, 3, 5, 7]), _vi("c", None)],
                   [_init("b", b), _init("w", np.ones((4, 2, 3, 3), np.float32))])
    gemm, scores, conv = from_onnx(model)
    # Gemm with transA: A is K×M = 6×4 → M = 4, K = 6; B is K×N so the N×K weight is Bᵀ
    assert dims(gemm) == (4, 6, 3, 1)
    np.testing.assert_array_equal(gemm.weight, b.T)
    # two dynamic operands, batch dims (2, 3) and (3,) broadcast to 6 independent products
    assert (scores.kind, scores.M, scores.K, scores.n_per_group, scores.groups) == (
        LayerKind.MATMUL, 5, 8, 7, 6)
    # pads (0, 0) begin, (1, 1) end, stride 2: out = (8 + 1 − 3)//2 + 1 = 4 per axis
    assert conv.M == 16 and conv.K == 18


def test_onnx_qdq_weights_are_dequantized():
    q = np.array([[10, -20, 30], [-40, 50, 127]], dtype=np.int8)        # N×K = 2×3 as K×N below
    scale = np.array([0.5, 0.25], dtype=np.float32)                      # per output column
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "scale", "zp"], ["w"], axis=1),
        helper.make_node("MatMul", ["x", "w"], ["y"], name="fc"),
    ]
    model = _graph(nodes, [_vi("x", [4, 3])], [_vi("y", [4, 2])],
                   [_init("wq", q.T.copy()), _init("scale", scale),
                    _init("zp", np.zeros(2, np.int8))])
    (fc,) = from_onnx(model)
    assert dims(fc) == (4, 3, 2, 1)
    np.testing.assert_array_equal(fc.weight, q * scale[:, None])


def test_onnx_quantize_dequantize_chain_and_conv1d():
    w = np.array([[[0.5, -1.0, 0.26]], [[2.0, 0.1, -0.74]]], dtype=np.float32)  # (N=2, C=1, k=3)
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "zp"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "zp"], ["wdq"]),
        helper.make_node("Conv", ["x", "wdq"], ["y"], name="conv1d", pads=[1, 1], strides=[2]),
    ]
    model = _graph(nodes, [_vi("x", [1, 1, 9])], [_vi("y", None)],
                   [_init("w", w), _init("s", np.float32(0.5)), _init("zp", np.int8(0))])
    (spec,) = from_onnx(model)
    # 1-D conv: L_out = (9 + 2 − 3)//2 + 1 = 5; K = 1·3.  The weight is what the model computes
    # with: round-half-to-even(w / 0.5) · 0.5 → 0.26 → 0.5, −0.74 → −0.5, 0.1 → 0
    assert dims(spec) == (5, 3, 2, 1)
    np.testing.assert_array_equal(spec.weight, [[0.5, -1.0, 0.5], [2.0, 0.0, -0.5]])


def test_onnx_control_flow_with_compute_is_unsupported():
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "then",
        [], [_vi("y", [2, 2])], [_init("w", np.eye(2, dtype=np.float32))])
    shape_only = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["z"])], "else", [], [_vi("z", [2, 2])])
    nodes = [helper.make_node("If", ["c"], ["o"], name="branch", then_branch=body,
                              else_branch=shape_only),
             helper.make_node("If", ["c"], ["p"], name="harmless", then_branch=shape_only,
                              else_branch=shape_only)]
    model = _graph(nodes, [_vi("x", [2, 2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                   [_vi("o", [2, 2]), _vi("p", [2, 2])])
    with pytest.raises(UnsupportedLayerError, match="If 'branch'") as err:
        from_onnx(model)
    assert "harmless" not in str(err.value)


def test_onnx_symbolic_batch_is_fixed():
    nodes = [helper.make_node("Gemm", ["x", "w.weight"], ["y"], transB=1)]
    model = _graph(nodes, [_vi("x", ["batch", 8])], [_vi("y", ["batch", 4])],
                   [_init("w.weight", np.zeros((4, 8), np.float32))])
    assert from_onnx(model)[0].M == 1
    assert from_onnx(model, batch=16)[0].M == 16
    # any other unknown dimension cannot be guessed: say which tensor, and what to do
    seq = _graph([helper.make_node("MatMul", ["x", "w.weight"], ["y"], name="proj")],
                 [_vi("x", ["batch", "seq", 8])], [_vi("y", None)],
                 [_init("w.weight", np.zeros((8, 4), np.float32))])
    with pytest.raises(ConfigError, match=r"MatMul 'proj'.*'x'.*static shapes"):
        from_onnx(seq)


def test_onnx_unsupported_ops_are_all_named():
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["up"], name="deconv1"),
        helper.make_node("Relu", ["up"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["seq"]),
        helper.make_node("LSTM", ["seq", "W", "R"], ["h"], name="rnn", hidden_size=4),
    ]
    model = _graph(nodes, [_vi("x", [1, 2, 4, 4])], [_vi("h", None)],
                   [_init("w", np.zeros((2, 2, 3, 3), np.float32)),
                    _init("shape", np.array([6, 1, 12])),
                    _init("W", np.zeros((1, 16, 12), np.float32)),
                    _init("R", np.zeros((1, 16, 4), np.float32))])
    with pytest.raises(UnsupportedLayerError) as err:
        from_onnx(model)
    msg = str(err.value)
    assert "ConvTranspose 'deconv1'" in msg and "LSTM 'rnn'" in msg and "2 unsupported" in msg


def test_onnx_bad_files(tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ConfigError, match="nope.onnx"):
        from_onnx(missing)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_text("Layer, M, N, K,\nfc, 1, 2, 3,\n")
    with pytest.raises(ConfigError, match="garbage.onnx.*not an ONNX model"):
        from_onnx(garbage)
    with pytest.raises(ConfigError, match="nope.onnx"):
        load_model(str(missing))


# ================================================================================================
# SCALE-Sim CSV
# ================================================================================================

# Every conv/GEMM shape expected below was also cross-checked against SCALE-Sim 3.0.0 itself
# (scalesim.topology_utils.topologies: load_arrays, then layers_calculated_hyperparams — ofmap
# pixels, window size, filters, MACs — with a DP layer expanded into one layer per channel).
# SCALE-Sim needs the trailing comma on every row; this reader also accepts rows without it.

def test_scalesim_conv_format():
    specs = from_scalesim_csv(DATA / "conv.csv")
    got = {s.name: s for s in specs}
    assert list(got) == ["Conv1", "Conv2_DP", "Conv3", "Mult_DP", "Conv2_dw", "FC"]
    # Conv1: ofmap = ⌈(224 − 3 + 2)/2⌉ = 112 (PyTorch's floor rule would give 111); K = 3·3·3
    assert dims(got["Conv1"]) == (112 * 112, 27, 32, 1)
    assert got["Conv1"].conv.out_size == (112, 112)
    # 'DP' in the name: depthwise, one group per channel: ofmap 114 − 3 + 1 = 112, K = 9
    dp = got["Conv2_DP"]
    assert dims(dp) == (112 * 112, 9, 32, 32) and dp.kind is LayerKind.DEPTHWISE
    assert dims(got["Conv3"]) == (112 * 112, 32, 64, 1)  # tab-indented row, '#' comment
    # depthwise with 2 filters per channel: 4 groups × 2 = N 8; ofmap 10 − 3 + 1 = 8
    assert dims(got["Mult_DP"]) == (64, 9, 8, 4)
    # lower-case 'dw' is NOT depthwise for SCALE-Sim: ofmap (12 − 2)×(10 − 2), K = 9
    assert dims(got["Conv2_dw"]) == (80, 9, 1, 1)
    # last row without a trailing comma: a 1×1 "FC" over 1024 channels
    assert dims(got["FC"]) == (1, 1024, 1000, 1)
    assert all(s.sparsity is None and s.weight is None for s in specs)


def test_scalesim_conv_with_sparsity():
    a, b, c = from_scalesim_csv(DATA / "conv_sparsity.csv")
    # CONV_1: ofmap 5 − 3 + 1 = 3 → M 9, K 2·9 = 18
    assert dims(a) == (9, 18, 6, 1) and a.sparsity == NM(2, 4)
    # CONV_2: ofmap ⌈(5 − 3 + 2)/2⌉ = 2 → M 4; K 6·9 = 54; 1:1 means dense
    assert dims(b) == (4, 54, 8, 1) and b.sparsity == Dense()
    assert dims(c) == (16, 8, 8, 1) and c.sparsity is None


def test_scalesim_gemm_format():
    # SCALE-Sim's column order is M, N, K: QKV is [128×768]·[768×2304]
    assert [(s.name, *dims(s)) for s in from_scalesim_csv(DATA / "gemm.csv")] == [
        ("QKV", 128, 768, 2304, 1), ("FFN1", 128, 768, 3072, 1), ("Out", 1, 64, 10, 1)]
    specs = from_scalesim_csv(DATA / "gemm_sparsity.csv")
    assert [dims(s) for s in specs] == [(64, 16, 32, 1), (8, 8, 8, 1), (8, 24, 16, 1)]
    assert [s.sparsity for s in specs] == [NM(2, 4), Dense(), NM(1, 8)]
    assert all(s.kind is LayerKind.LINEAR for s in specs)


def test_scalesim_csv_matches_torch_digits_cnn():
    # digits_cnn by hand: 8×8 input padded by 1 → IFMAP 10×10 for both 3×3 convs (the pool
    # comes after conv2); fc1 reads 32·4·4 = 512 features.  SCALE-Sim has no padding, so the
    # padded size is what the CSV states.
    csv = from_scalesim_csv(DATA / "digits_cnn.csv")
    torch_specs = zoo.layers("digits_cnn")
    assert [(s.name, s.M, s.K, s.N) for s in csv] == [(s.name, s.M, s.K, s.N) for s in torch_specs]
    assert load_model(str(DATA / "digits_cnn.csv")) == csv


def test_scalesim_depthwise_matches_torch_mobilenet(tmp_path):
    # MobileNetV2 features.2.conv.1.0: depthwise 3×3, stride 2, 96 channels, 112×112, padding 1.
    # PyTorch reads the 114×114 padded input: ⌊(114 − 3)/2⌋ + 1 = 56.  SCALE-Sim given IFMAP 114
    # counts a partial last window: ⌈(114 − 3 + 2)/2⌉ = 57; given 113 (the rows PyTorch's
    # windows touch) it gives ⌈112/2⌉ = 56, the same layer.
    by = {s.name: s for s in zoo.layers("mobilenet_v2")}
    path = tmp_path / "mb.csv"
    path.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                    "Channels, Num Filter, Strides,\nf2_DP, 113, 113, 3, 3, 96, 1, 2,\n"
                    "g2_DP, 114, 114, 3, 3, 96, 1, 2,\n")
    f2, g2 = from_scalesim_csv(path)
    assert dims(f2) == dims(by["features.2.conv.1.0"]) == (56 * 56, 9, 96, 96)
    assert dims(g2) == (57 * 57, 9, 96, 96)


@pytest.mark.parametrize("row, message", [
    ("c1, 8, 8, 3, x, 2, 4, 1,", r"bad\.csv:3: Filter Width must be a positive integer, not 'x'"),
    ("c1, 8, 8, 3, 3, 2, 4,", r"bad\.csv:3: expected 8 values"),
    ("c1, 8, 8, 3, 3, 2, 0, 1,", r"bad\.csv:3: Num Filter must be a positive integer, not '0'"),
    ("c1, 8, 8, 3, 3, 2, 4, 1, 3:2,", r"bad\.csv:3: Sparsity .* not '3:2'"),
    ("c1, 8, 8, 3, 3, 2, 4, 1, dense,", r"bad\.csv:3: Sparsity must be N:M"),
    ("c1, 2, 8, 3, 3, 2, 4, 1,", r"bad\.csv:3: filter 3×3 is larger than the IFMAP 2×8"),
    ("c0, 8, 8, 3, 3, 2, 4, 1,", r"bad\.csv:3: duplicate layer name 'c0'"),
])
def test_scalesim_bad_rows(tmp_path, row, message):
    path = tmp_path / "bad.csv"
    path.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                    f"Channels, Num Filter, Strides,\nc0, 8, 8, 3, 3, 2, 4, 1,\n{row}\n")
    with pytest.raises(ConfigError, match=message):
        from_scalesim_csv(path)


def test_scalesim_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.csv"):
        from_scalesim_csv(tmp_path / "missing.csv")
    header = tmp_path / "header.csv"
    header.write_text("name, rows, cols,\na, 1, 2,\n")
    with pytest.raises(ConfigError, match=r"header\.csv:1: header .* neither SCALE-Sim format"):
        from_scalesim_csv(header)
    gemm = tmp_path / "gemm.csv"
    gemm.write_text("Layer, M, N, K,\nfc, 4, 8,\n")
    with pytest.raises(ConfigError, match=r"gemm\.csv:2: expected 4 values"):
        from_scalesim_csv(gemm)
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    with pytest.raises(ConfigError, match="empty"):
        from_scalesim_csv(empty)


# ================================================================================================
# load_model
# ================================================================================================

def test_load_model_dispatch_and_unknown_text():
    assert load_model("lenet300100") == zoo.layers("lenet300100")
    with pytest.raises(ConfigError) as err:
        load_model("resnet-18")
    msg = str(err.value)
    assert all(n in msg for n in zoo.names()) and ".onnx" in msg and ".csv" in msg and ".pt" in msg
    with pytest.raises(ConfigError, match="ckpt.pt"):
        load_model("ckpt.pt")


def test_macs_are_consistent_across_importers():
    # one layer, three importers: a 3×3 conv, 16 → 32 channels on a (padded) 10×10 input
    csv_spec = from_scalesim_csv(DATA / "digits_cnn.csv")[1]
    torch_spec = zoo.layers("digits_cnn")[1]
    assert csv_spec.macs == torch_spec.macs == 64 * 144 * 32 == math.prod(dims(torch_spec)[:3])


def test_load_model_reads_a_pruned_checkpoint(tmp_path):
    from hwprune.checkpoint import save_checkpoint
    from hwprune.errors import HwPruneError
    from hwprune.models import LeNet300100

    torch.manual_seed(0)
    model = LeNet300100()
    prune.l1_unstructured(model.fc2, "weight", amount=0.5)
    path = save_checkpoint(tmp_path / "pruned.pt", model, arch="LeNet300100", task=None,
                           patterns={"fc2": "unstructured:0.5"}, masks=None, metrics=None,
                           example_inputs=(torch.zeros(1, 1, 8, 8),))
    specs = load_model(str(path))
    # the recorded pattern lands on its layer; the weight is the masked one
    assert [(s.name, str(s.sparsity)) for s in specs] == [
        ("fc1", "None"), ("fc2", "unstructured:0.5"), ("fc3", "None")]
    assert (specs[1].weight == 0).sum() == 300 * 100 // 2
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(HwPruneError, match="junk.pt"):
        load_model(str(junk))
