"""Import an ONNX model's Conv, Gemm and MatMul nodes as layers.

Shapes come from ``onnx.shape_inference.infer_shapes``; a symbolic leading (batch) dimension of
a graph input is fixed to ``batch`` first (not a Conv's weight: its leading dimension is the
output channels).  Weights are initializers, ``Constant`` outputs, or
such a constant reached through ``Identity``, ``Cast``, ``Transpose`` and QDQ chains
(``DequantizeLinear`` of an int8/uint8 initializer is dequantized; ``QuantizeLinear`` of a float
initializer is quantized then dequantized), so the N×K weight is the value the model computes with.

Names follow :func:`~hwprune.importers.from_torch` as far as the file allows: a layer whose
weight initializer is called ``<path>.weight`` is named ``<path>`` (``<path>.in_proj_weight`` gives
``<path>.in_proj``); a weight folded by the exporter is named after the module scope the exporter
recorded (node metadata of ``torch.onnx.export(dynamo=True)``, node names ``/layer1/layer1.0/conv1/
Conv`` of the TorchScript exporter); products of two activations are ``<scope>.qk``/``.av``
(exported attention) or ``<scope>.matmul``, ``…matmul_1``; otherwise the node name (or
``<OpType>_<index>`` for unnamed nodes).  An initializer used twice (exporters share
identical constants) gives ``name#2`` for the second use.

Non-compute operators (activations, pooling, normalisation, element-wise, shape ops …) are passed
over.  Compute operators hwprune cannot map raise one :class:`UnsupportedLayerError` naming
every such node.
"""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import ConfigError, UnsupportedLayerError
from ..ir import ConvGeometry, LayerSpec, same_padding, symmetric_padding

__all__ = ["from_onnx", "UNSUPPORTED_OPS"]

#: compute operators that cannot be lowered to the GEMM array (listed, never skipped)
UNSUPPORTED_OPS = frozenset({
    "ConvTranspose", "LSTM", "GRU", "RNN", "Einsum", "ConvInteger", "MatMulInteger",
    "QLinearConv", "QLinearMatMul", "DeformConv", "Attention", "MultiHeadAttention", "QGemm",
    "QAttention", "FusedConv", "FusedGemm", "FusedMatMul", "DynamicQuantizeMatMul",
    "MatMulNBits", "GroupQueryAttention", "ConvTransposeWithDynamicPads",
})
_CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
_COMPUTE = frozenset({"Conv", "Gemm", "MatMul"})


def from_onnx(model: str | os.PathLike | onnx.ModelProto, *, batch: int = 1) -> list[LayerSpec]:
    """The GEMM-shaped layers of an ONNX model, in graph order.

    Parameters
    ----------
    model
        A path to an ``.onnx`` file or a loaded ``ModelProto``.
    batch
        Value given to a symbolic leading dimension of the graph inputs (``"batch_size"`` …).

    Raises
    ------
    ConfigError
        If the file does not exist or is not an ONNX model (naming the path), or a layer's
        shape cannot be inferred.
    UnsupportedLayerError
        Naming every unsupported compute node (op type and node name).
    """
    proto = _load(model)
    proto = _fix_batch(proto, batch)
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as exc:  # onnx raises several types for broken graphs
        raise ConfigError(f"{_label(model)}: ONNX shape inference failed: {exc}") from None
    graph = inferred.graph

    bad = []
    for i, node in enumerate(graph.node):
        if node.op_type in UNSUPPORTED_OPS or (node.op_type in _CONTROL_FLOW and _has_compute(node)):
            bad.append(f"{node.op_type} '{_node_name(node, i)}'")
        elif node.op_type == "Conv" and len(_attrs(node).get("kernel_shape", [0, 0])) > 2:
            bad.append(f"Conv (3-D) '{_node_name(node, i)}'")
    if bad:
        raise UnsupportedLayerError(f"{_label(model)}: {len(bad)} unsupported compute node(s): "
                                    + ", ".join(bad))

    env = _Graph(graph, _label(model))
    specs: list[LayerSpec] = []
    used: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        if node.op_type not in _COMPUTE:
            continue
        spec = {"Conv": env.conv, "Gemm": env.gemm, "MatMul": env.matmul}[node.op_type](node, i)
        count = used.get(spec.name, 0) + 1
        used[spec.name] = count
        if count > 1:
            spec = _renamed(spec, f"{spec.name}#{count}")
        specs.append(spec)
    return specs


# -- loading --------------------------------------------------------------------------------------

def _label(model: object) -> str:
    return os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<ModelProto>"


def _load(model: object) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ConfigError(f"from_onnx needs a path or an onnx.ModelProto, not {type(model).__name__}")
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise ConfigError(f"{path}: not an ONNX model ({type(exc).__name__}: {exc})") from None
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise ConfigError(f"{path}: not an ONNX model (no graph)")
    return proto


def _fix_batch(proto: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch must be a positive integer, not {batch!r}")
    inits = {t.name for t in proto.graph.initializer}
    # a Conv's weight leads with its output channels, never a batch: leave it unknown (refused)
    inits |= {n.input[1] for n in proto.graph.node if n.op_type == "Conv" and len(n.input) > 1}
    needs = [vi for vi in proto.graph.input if vi.name not in inits
             and vi.type.tensor_type.shape.dim and not vi.type.tensor_type.shape.dim[0].HasField("dim_value")]
    if not needs:
        return proto
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    for vi in proto.graph.input:
        if vi.name in {n.name for n in needs}:
            vi.type.tensor_type.shape.dim[0].dim_value = batch
    for vi in proto.graph.output:  # let inference recompute outputs with the fixed batch
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    return proto


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"{node.op_type}_{index}"


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _has_compute(node: onnx.NodeProto) -> bool:
    for a in node.attribute:
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)):
            for n in g.node:
                if n.op_type in _COMPUTE or n.op_type in UNSUPPORTED_OPS or (
                        n.op_type in _CONTROL_FLOW and _has_compute(n)):
                    return True
    return False


def _meta(node: onnx.NodeProto, key: str) -> str | None:
    return next((p.value for p in node.metadata_props if p.key == key), None)


def _scope(node: onnx.NodeProto) -> str | None:
    """The PyTorch module path a node was exported from, when the exporter recorded it.

    ``torch.onnx.export(dynamo=True)`` stores cumulative scopes in the node's metadata
    (``['', 'encoder', 'encoder.layers.0', 'encoder.layers.0.linear1', 'linear_2']``); the
    TorchScript exporter names nodes ``/layer1/layer1.0/conv1/Conv`` or
    ``/encoder/layers.0/linear1/MatMul`` (a Sequential child repeats its parent's name).
    """
    scopes = _meta(node, "pkg.torch.onnx.name_scopes")
    if scopes:
        try:
            parts = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            parts = None
        if isinstance(parts, list) and len(parts) >= 2 and all(isinstance(x, str) for x in parts):
            return parts[-2]
    if node.name.startswith("/") and node.name.count("/") >= 2:
        path: list[str] = []
        for comp in node.name.strip("/").split("/")[:-1]:
            head, dot, tail = comp.rpartition(".")
            if dot and path and head == path[-1]:
                path.append(tail)  # 'layer1' then 'layer1.0' → layer1.0
            else:
                path.append(comp)
        return ".".join(path)
    return None


def _renamed(spec: LayerSpec, name: str) -> LayerSpec:
    from dataclasses import replace
    return replace(spec, name=name)


# -- the graph ------------------------------------------------------------------------------------

class _Graph:
    """Shapes and constants of an inferred graph, and the three layer builders."""

    def __init__(self, graph: onnx.GraphProto, label: str) -> None:
        self.label = label
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {out: n for n in graph.node for out in n.output}
        self.shapes: dict[str, list[int | None]] = {}
        for vi in [*graph.input, *graph.value_info, *graph.output]:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                                        for d in t.shape.dim]
        for name, t in self.inits.items():
            self.shapes[name] = list(t.dims)
        self._consts: dict[str, np.ndarray | None] = {}
        self.products: dict[tuple[str, str], int] = {}
        self.shared: dict[str, int] = {}  # initializer → how many compute nodes use it
        self.attention_scopes: set[str] = set()  # scopes computing with an out_proj.weight
        for node in graph.node:
            if node.op_type in _COMPUTE:
                for name in {self._initializer_behind(i) for i in node.input[:2]} - {None}:
                    self.shared[name] = self.shared.get(name, 0) + 1
                    if name.endswith("out_proj.weight") and _scope(node):
                        self.attention_scopes.add(_scope(node))

    # -- helpers --------------------------------------------------------------------------------
    def shape(self, node: onnx.NodeProto, index: int, tensor: str) -> list[int]:
        s = self.shapes.get(tensor)
        if s is None or any(d is None or d < 1 for d in s):
            raise ConfigError(f"{self.label}: {node.op_type} '{_node_name(node, index)}': the shape "
                              f"of {tensor!r} is not known after shape inference ({s}); export "
                              "the model with static shapes")
        return [int(d) for d in s]

    def const(self, name: str) -> np.ndarray | None:
        """The value of ``name`` if it is a constant (possibly through Cast/Transpose/QDQ)."""
        if name not in self._consts:
            self._consts[name] = None  # guards against cycles
            self._consts[name] = self._eval(name)
        return self._consts[name]

    def _eval(self, name: str) -> np.ndarray | None:
        if not name:
            return None
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producer.get(name)
        if node is None:
            return None
        a = _attrs(node)
        if node.op_type == "Constant":
            return numpy_helper.to_array(a["value"]) if "value" in a else None
        if node.op_type in ("Identity", "Cast"):
            x = self.const(node.input[0])
            return None if x is None else x.astype(np.float32) if node.op_type == "Cast" else x
        if node.op_type == "Transpose":
            x = self.const(node.input[0])
            return None if x is None else np.transpose(x, a.get("perm"))
        if node.op_type == "DequantizeLinear":
            x, scale = self.const(node.input[0]), self.const(node.input[1])
            zp = self.const(node.input[2]) if len(node.input) > 2 else None
            if x is None or scale is None:
                return None
            axis = int(a.get("axis", 1))
            return ((x.astype(np.float32) - _bcast(zp, x, axis)) * _bcast(scale, x, axis)).astype(np.float32)
        if node.op_type == "QuantizeLinear":
            x, scale = self.const(node.input[0]), self.const(node.input[1])
            zp = self.const(node.input[2]) if len(node.input) > 2 else None
            if x is None or scale is None:
                return None
            axis = int(a.get("axis", 1))
            dtype = zp.dtype if zp is not None else np.uint8
            info = np.iinfo(dtype)
            q = np.rint(x / _bcast(scale, x, axis)) + _bcast(zp, x, axis)
            return np.clip(q, info.min, info.max).astype(dtype)
        return None

    def _name(self, node: onnx.NodeProto, index: int, weight_input: str | None,
              shape: tuple[int, int] | None = None) -> str:
        """A weight layer's name: the initializer's parameter path, else the node's module scope."""
        source = self._initializer_behind(weight_input) if weight_input else None
        scope = _scope(node)
        path = None
        if source and source.endswith(".weight"):
            path = source[: -len(".weight")]
        elif source and source.endswith("_weight") and "." in source:  # MHA's in_proj_weight
            path = source[: -len("_weight")]
        if path is not None:
            if self.shared.get(source, 0) > 1 and scope:
                # Exporters keep one copy of identical constants: layers.1 may compute with
                # 'layers.0.linear1.weight'.  The node's own scope says which module it is.
                parts, here = path.split("."), scope.split(".")
                if len(parts) >= len(here):
                    return ".".join(here + parts[len(here):])
            return path
        if scope is not None:
            fx = _meta(node, "pkg.torch.onnx.fx_node") or ""
            for proj in ("in_proj", "q_proj", "k_proj", "v_proj"):
                if f"{proj}_weight" in fx:  # folded or transposed attention projection
                    return f"{scope}.{proj}" if scope else proj
            if scope in self.attention_scopes and shape is not None and shape[0] == 3 * shape[1]:
                return f"{scope}.in_proj"  # the packed q, k, v projection of an attention module
            if scope:
                return scope
        return _node_name(node, index)

    def _product_name(self, node: onnx.NodeProto, index: int) -> str:
        """An activation × activation product: ``<scope>.qk``/``.av`` inside an exported
        scaled_dot_product_attention, else ``<scope>.matmul``, ``…matmul_1`` …"""
        scope = _scope(node)
        if not scope:
            return _node_name(node, index)
        fx = _meta(node, "pkg.torch.onnx.fx_node") or ""
        key = (scope, fx) if "scaled_dot_product_attention" in fx else (scope, "")
        i = self.products.get(key, 0)
        self.products[key] = i + 1
        if key[1] and i < 2:
            return f"{scope}.{('qk', 'av')[i]}"
        return f"{scope}.matmul" + (f"_{i}" if i else "")

    def _initializer_behind(self, name: str) -> str | None:
        for _ in range(8):
            if name in self.inits:
                return name
            node = self.producer.get(name)
            if node is None or node.op_type not in ("Identity", "Cast", "Transpose",
                                                    "DequantizeLinear", "QuantizeLinear"):
                return None
            name = node.input[0]
        return None

    # -- builders -------------------------------------------------------------------------------
    def conv(self, node: onnx.NodeProto, index: int) -> LayerSpec:
        a = _attrs(node)
        x = self.shape(node, index, node.input[0])
        if len(x) not in (3, 4):
            raise UnsupportedLayerError(f"{self.label}: Conv '{_node_name(node, index)}' is "
                                        f"{len(x) - 2}-D; only 1-D and 2-D convolutions map")
        w_value = self.const(node.input[1])
        w = list(w_value.shape) if w_value is not None else self.shape(node, index, node.input[1])
        one_d = len(x) == 3
        spatial = x[2:]
        kernel = list(a.get("kernel_shape", w[2:]))
        dims = len(kernel)
        strides = list(a.get("strides", [1] * dims))
        dilations = list(a.get("dilations", [1] * dims))
        group = int(a.get("group", 1))
        auto_pad = a.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pairs = [same_padding(s, k, st, d, upper=auto_pad == "SAME_UPPER")
                     for s, k, st, d in zip(spatial, kernel, strides, dilations)]
            begin, end = [b for b, _ in pairs], [e for _, e in pairs]
        elif auto_pad == "VALID":
            begin, end = [0] * dims, [0] * dims
        else:
            pads = list(a.get("pads", [0] * 2 * dims))
            begin, end = pads[:dims], pads[dims:]
        sym = [symmetric_padding(s, b, e) for s, b, e in zip(spatial, begin, end)]
        in_size, pad = [s for s, _ in sym], [p for _, p in sym]
        if one_d:
            in_size, kernel, strides, pad, dilations = ([1, *in_size], [1, *kernel], [1, *strides],
                                                        [0, *pad], [1, *dilations])
        try:
            geom = ConvGeometry.make(in_channels=x[1], out_channels=w[0], in_size=tuple(in_size),
                                     kernel=tuple(kernel), stride=tuple(strides), padding=tuple(pad),
                                     dilation=tuple(dilations), groups=group, batch=x[0])
        except ConfigError as exc:
            raise ConfigError(f"{self.label}: Conv '{_node_name(node, index)}': {exc}") from None
        return LayerSpec.from_conv(self._name(node, index, node.input[1]), geom, weight=w_value)

    def gemm(self, node: onnx.NodeProto, index: int) -> LayerSpec:
        a = _attrs(node)
        ta, tb = int(a.get("transA", 0)), int(a.get("transB", 0))
        sa = self.shape(node, index, node.input[0])
        sb = self.shape(node, index, node.input[1])
        m, k = (sa[1], sa[0]) if ta else (sa[0], sa[1])
        n = sb[0] if tb else sb[1]
        b_value, a_value = self.const(node.input[1]), self.const(node.input[0])
        if b_value is not None:
            weight = b_value if tb else b_value.T
            return LayerSpec.linear(self._name(node, index, node.input[1], (n, k)), k, n, tokens=m,
                                    weight=weight)
        if a_value is not None:  # constant left operand: Yᵀ = Bᵀ·Aᵀ, B's columns are the tokens
            weight = a_value.T if ta else a_value
            return LayerSpec.linear(self._name(node, index, node.input[0]), k, m, tokens=n,
                                    weight=weight)
        return LayerSpec.matmul(self._product_name(node, index), m, k, n)

    def matmul(self, node: onnx.NodeProto, index: int) -> LayerSpec:
        sa = self.shape(node, index, node.input[0])
        sb = self.shape(node, index, node.input[1])
        b_value, a_value = self.const(node.input[1]), self.const(node.input[0])
        if b_value is not None and b_value.ndim == 2:
            tokens = math.prod(sa[:-1]) if len(sa) > 1 else 1
            return LayerSpec.linear(self._name(node, index, node.input[1], (sb[1], sb[0])), sb[0], sb[1],
                                    tokens=tokens, weight=b_value.T)
        if b_value is not None and b_value.ndim == 1:  # matrix × constant vector: N = 1
            return LayerSpec.linear(self._name(node, index, node.input[1], (1, sb[0])), sb[0], 1,
                                    tokens=math.prod(sa[:-1]) if len(sa) > 1 else 1,
                                    weight=b_value[None, :])
        if a_value is not None and a_value.ndim == 2:
            tokens = math.prod(sb[:-2]) * sb[-1] if len(sb) > 1 else 1
            return LayerSpec.linear(self._name(node, index, node.input[0]), sa[1], sa[0],
                                    tokens=tokens, weight=a_value)
        if (b_value is not None and b_value.ndim > 2) or (a_value is not None and a_value.ndim > 2):
            raise UnsupportedLayerError(f"{self.label}: MatMul '{_node_name(node, index)}' has a "
                                        "batched constant operand (one weight per batch entry)")
        m = sa[-2] if len(sa) > 1 else 1
        n = sb[-1] if len(sb) > 1 else 1
        groups = math.prod(np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2])))
        return LayerSpec.matmul(self._product_name(node, index), m, sa[-1], n, groups=groups)


def _bcast(v: np.ndarray | None, x: np.ndarray, axis: int) -> np.ndarray | float:
    """A per-tensor or per-axis quantization parameter shaped to broadcast against ``x``."""
    if v is None:
        return 0.0
    v = np.asarray(v)
    if v.ndim == 0 or v.size == 1:
        return v.reshape(()).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis % x.ndim] = v.size
    return v.reshape(shape).astype(np.float32)
