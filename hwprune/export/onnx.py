"""ONNX export: the pruned float model, and the QDQ int8 model carrying the integer reference's scales.

* **float**: ``torch.onnx.export`` (the TorchScript exporter: it folds BatchNorm into the conv
  weights, which keeps every pruned zero a zero) of the model with its masks made permanent.  The
  initializers are renamed after the layers that read them (``conv1.weight``, ``conv1.bias``).
* **QDQ**: written directly from a :class:`~hwprune.quant.QuantModel`, so it carries exactly our
  scales: int8 weights with per-channel ``DequantizeLinear`` (axis 0), int32 biases at scale
  s_in·s_w, and a ``QuantizeLinear``/``DequantizeLinear`` pair (int8, zero point 0) on the input
  and on every requantized layer output.  Runtimes that fuse QDQ into integer kernels and those
  that simulate it in float compute the same model up to rounding of the requantization.

Both files use opset :data:`OPSET`, pass ``onnx.checker.check_model(full_check=True)``, and record
for every weight initializer a ``metadata_props`` entry ``hwprune.sparsity.<initializer>`` holding
JSON ``{"layer", "pattern", "density", "nm"}`` (``nm``: the N:M the weight satisfies on the array's
group size, ``null`` when none is smaller than dense).
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError, UnsupportedLayerError
from ..io import write_with
from ..patterns import NM, SparsityPattern
from ..quant.graph import Flatten, MaxPool, Relu
from ..quant.model import QuantLayer, QuantModel, detect_pattern

__all__ = [
    "OPSET",
    "export_float_onnx",
    "export_qdq_onnx",
    "read_sparsity_metadata",
    "run_onnx",
    "sparsity_metadata",
]

#: the ONNX operator set both files use
OPSET = 17
_META_PREFIX = "hwprune.sparsity."


def sparsity_entry(layer: str, weight: np.ndarray, pattern: SparsityPattern | None,
                   group_size: int) -> str:
    """The JSON recorded for one weight initializer."""
    w = np.asarray(weight).reshape(np.shape(weight)[0], -1)
    found = detect_pattern(w, group_size)
    nm = f"{found.n}:{found.m}" if isinstance(found, NM) else None
    return json.dumps({"layer": layer, "pattern": str(pattern if pattern is not None else found),
                       "density": float(np.count_nonzero(w) / w.size) if w.size else 0.0, "nm": nm},
                      sort_keys=True)


def sparsity_metadata(weights: Mapping[str, tuple[str, np.ndarray, SparsityPattern | None]],
                      group_size: int) -> dict[str, str]:
    """``metadata_props`` entries: initializer name → (layer, weight, pattern)."""
    return {f"{_META_PREFIX}{init}": sparsity_entry(layer, w, p, group_size)
            for init, (layer, w, p) in weights.items()}


def read_sparsity_metadata(model: object) -> dict[str, dict[str, object]]:
    """The per-initializer sparsity records of an ONNX model (as written by this module)."""
    return {p.key[len(_META_PREFIX):]: json.loads(p.value) for p in model.metadata_props
            if p.key.startswith(_META_PREFIX)}


def _set_metadata(model: object, entries: Mapping[str, str]) -> None:
    import onnx

    for key, value in entries.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def _check(model: object, what: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{what}: the ONNX checker rejects the model: {str(exc).splitlines()[0]}") from None


def _rename(graph: object, old: str, new: str) -> None:
    for init in graph.initializer:
        if init.name == old:
            init.name = new
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def export_float_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: str | os.PathLike, *,
                      patterns: Mapping[str, SparsityPattern] | None = None, group_size: int = 4,
                      force: bool = False) -> Path:
    """Write the pruned float model as ONNX (batch dimension dynamic), atomically.

    Raises
    ------
    ExportError
        The exporter or the ONNX checker fails, or ``path`` exists without ``force``.
    """
    import onnx

    from ..quant.graph import Gemm, float_steps
    from ..quant.model import _float_model

    m = _float_model(model)
    layers = [s for s in float_steps(m) if isinstance(s, Gemm)]
    inputs = tuple(example_inputs)
    with tempfile.TemporaryDirectory(prefix="hwprune-onnx-") as tmp:
        raw = Path(tmp) / "float.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(m, inputs, str(raw), opset_version=OPSET, dynamo=False,
                                  input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                                  do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from None
        proto = onnx.load(str(raw))
    graph = proto.graph
    inits = {i.name: i for i in graph.initializer}
    compute = [n for n in graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    if len(compute) != len(layers):
        raise ExportError(f"the exported graph has {len(compute)} conv/gemm nodes, the model "
                          f"{len(layers)} layers")
    pats = dict(patterns or {})
    weights = {}
    for node, layer in zip(compute, layers):
        for slot, suffix in ((1, "weight"), (2, "bias")):
            if len(node.input) > slot and node.input[slot] in inits:
                _rename(graph, node.input[slot], f"{layer.name}.{suffix}")
        new = f"{layer.name}.weight"
        if new in {i.name for i in graph.initializer}:
            w = onnx.numpy_helper.to_array(next(i for i in graph.initializer if i.name == new))
            weights[new] = (layer.name, w, pats.get(layer.name))
    _set_metadata(proto, {"hwprune.kind": "float", **sparsity_metadata(weights, group_size)})
    _check(proto, "float model")
    return write_with(path, lambda tmp: onnx.save(proto, str(tmp)), force=force)


def _qdq_graph(q: QuantModel) -> tuple[list, list]:
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, value: np.ndarray, dtype: np.dtype) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value).astype(dtype), name))
        return name

    def qdq(x: str, scale: float, name: str) -> str:
        s = const(f"{name}.scale", np.float32(scale), np.float32)
        z = const(f"{name}.zero_point", np.int8(0), np.int8)
        nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{name}.q"], name=f"{name}.quantize"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}.q", s, z], [f"{name}.dq"],
                                      name=f"{name}.dequantize"))
        return f"{name}.dq"

    cur = qdq("input", q.input_scale, "input")
    for i, step in enumerate(q.steps):
        last = i == len(q.steps) - 1
        if isinstance(step, QuantLayer):
            cur = _qdq_layer(step, cur, nodes, const, qdq, out="logits" if last else None)
            continue
        out = "logits" if last else f"step{i}.out"
        if isinstance(step, Relu):
            nodes.append(helper.make_node("Relu", [cur], [out], name=f"step{i}.relu"))
        elif isinstance(step, MaxPool):
            (ph, pw) = step.padding
            nodes.append(helper.make_node("MaxPool", [cur], [out], name=f"step{i}.maxpool",
                                          kernel_shape=list(step.kernel), strides=list(step.stride),
                                          pads=[ph, pw, ph, pw], dilations=list(step.dilation)))
        elif isinstance(step, Flatten):
            nodes.append(helper.make_node("Flatten", [cur], [out], name=f"step{i}.flatten", axis=1))
        cur = out
    del TensorProto
    return nodes, inits


def _qdq_layer(L: QuantLayer, cur: str, nodes: list, const, qdq, *, out: str | None) -> str:
    from onnx import helper

    if L.is_conv and len(L.input_shape) != 3:
        raise UnsupportedLayerError(f"{L.name}: QDQ export covers 2-D convolutions and linear layers")
    n = L.out_channels
    w = const(f"{L.name}.weight_quantized", L.weight.reshape(L.weight_shape), np.int8)
    ws = const(f"{L.name}.weight_scale", L.weight_scale, np.float32)
    wz = const(f"{L.name}.weight_zero_point", np.zeros(n), np.int8)
    nodes.append(helper.make_node("DequantizeLinear", [w, ws, wz], [f"{L.name}.weight"],
                                  name=f"{L.name}.weight_dequantize", axis=0))
    b = const(f"{L.name}.bias_quantized", L.bias, np.int32)
    bs = const(f"{L.name}.bias_scale", L.accumulator_scale, np.float32)
    bz = const(f"{L.name}.bias_zero_point", np.zeros(n), np.int32)
    nodes.append(helper.make_node("DequantizeLinear", [b, bs, bz], [f"{L.name}.bias"],
                                  name=f"{L.name}.bias_dequantize", axis=0))
    y = out if out is not None and not L.relu else f"{L.name}.acc"
    args = [cur, f"{L.name}.weight", f"{L.name}.bias"]
    if L.is_conv:
        (ph, pw) = L.padding
        nodes.append(helper.make_node("Conv", args, [y], name=L.name, kernel_shape=list(L.weight_shape[2:]),
                                      strides=list(L.stride), pads=[ph, pw, ph, pw],
                                      dilations=list(L.dilation), group=L.groups))
    else:
        nodes.append(helper.make_node("Gemm", args, [y], name=L.name, transB=1))
    if L.relu:
        r = out if out is not None else f"{L.name}.relu"
        nodes.append(helper.make_node("Relu", [y], [r], name=f"{L.name}.relu"))
        y = r
    if L.output_scale is not None and out is None:
        return qdq(y, L.output_scale, f"{L.name}.output")
    if L.output_scale is not None:
        raise UnsupportedLayerError(f"{L.name}: a requantized last layer is not exported")
    return y


def export_qdq_onnx(qmodel: QuantModel, path: str | os.PathLike, *, group_size: int = 4,
                    force: bool = False) -> Path:
    """Write the QDQ int8 model of ``qmodel`` (our scales, zero points 0) atomically."""
    import onnx
    from onnx import TensorProto, helper

    nodes, inits = _qdq_graph(qmodel)
    n_out = qmodel.layers[-1].out_channels
    graph = helper.make_graph(
        nodes, "hwprune_qdq",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *qmodel.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_out])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="hwprune")
    proto.ir_version = 8
    weights = {f"{L.name}.weight_quantized": (L.name, L.weight, L.pattern) for L in qmodel.layers}
    _set_metadata(proto, {"hwprune.kind": "qdq",
                          "hwprune.quant": json.dumps({"input_scale": qmodel.input_scale,
                                                       "calibration": qmodel.calibration.to_dict(),
                                                       "bits": [qmodel.weight_bits, qmodel.act_bits,
                                                                qmodel.acc_bits]}),
                          **sparsity_metadata(weights, group_size)})
    _check(proto, "QDQ model")
    return write_with(path, lambda tmp: onnx.save(proto, str(tmp)), force=force)


def run_onnx(path: str | os.PathLike, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Run an exported model on onnxruntime's CPU provider: the ``logits`` output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    a = x.detach().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return sess.run(["logits"], {"input": a.astype(np.float32)})[0]
