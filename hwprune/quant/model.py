"""The int8 model and its integer reference: the one definition of what the quantized model computes.

Quantization (:func:`quantize`) turns a float chain of steps (:mod:`hwprune.quant.graph`) into a
:class:`QuantModel`:

* **weights**: symmetric, per output channel: ``s_w[n] = max|W[n]| / 127``, ``q = round(W / s_w)``
  clamped to ±127.  Zero stays exactly zero, so an N:M mask survives quantization.
* **activations**: symmetric, per tensor, zero point 0: ``s = amax / 127`` with ``amax`` calibrated
  (:mod:`hwprune.quant.calibrate`) on the network input and on every conv/linear output (after its
  ReLU when one follows).  Values are clamped to [−128, 127]; after a fused ReLU to [0, 127].
* **bias**: int32 at the accumulator's scale ``s_in · s_w[n]``.
* **requantization**: ``acc + bias`` (int32) to the next int8 with an integer multiplier and shift
  (:mod:`hwprune.quant.fixedpoint`, the gemmlowp/TFLite scheme).

The integer reference (:meth:`QuantModel.run`) then runs every conv/linear exactly as the array
does — operands lowered by the one :func:`~hwprune.ir.im2col`, products accumulated by
:func:`~hwprune.images.reference_outputs` (int64, wrapped to the accumulator width) — and chains the
layers in integers: bias add, requantize, ReLU and max-pool are integer operations.  The last
conv/linear layer is not requantized: the model's output is its int32 accumulators plus bias,
which :attr:`QuantModel.output_scale` turns into logits (the only float in the pipeline, after it).

Each layer's run is kept (:class:`LayerRun`): its :class:`~hwprune.ir.LayerSpec` for the batch, the
int8 weights (N×K) and im2col'd activations the array reads, and the int32 outputs the array must
write — what :func:`hwprune.sim.simulate` and the memory images consume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..config import ArrayConfig, load_array
from ..errors import ConfigError, UnsupportedLayerError
from ..images import reference_outputs, wrap
from ..ir import ConvGeometry, LayerSpec, im2col
from ..patterns import NM, Dense, SparsityPattern, Unstructured, group_view, parse_pattern
from .calibrate import Calibration, amax_of, calibration_inputs
from .fixedpoint import quantize_multiplier, requantize
from .graph import Flatten, Gemm, MaxPool, Relu, float_steps, run_float

__all__ = [
    "GemmRunner",
    "IntegerModel",
    "IntegerRun",
    "LayerRun",
    "QuantLayer",
    "QuantModel",
    "detect_pattern",
    "evaluate_int",
    "quantize",
    "quantize_steps",
    "quantize_weights",
    "reference_gemm",
]

#: does one GEMM of an integer run: ``(spec, weights N×K, acts (groups, M, K), pattern) → acc``
#: (groups, M, N/groups), int64 holding acc_bits-wrapped values.  The integer reference uses
#: :func:`reference_gemm`; :func:`hwprune.sim.run_model` passes the simulated array instead, so
#: every host step between the GEMMs is the same code in both.
GemmRunner = Callable[[LayerSpec, np.ndarray, np.ndarray, "SparsityPattern | None"], np.ndarray]


def reference_gemm(acc_bits: int) -> GemmRunner:
    """The numpy GEMM of the array (:func:`~hwprune.images.reference_outputs`) as a runner."""
    def run(spec: LayerSpec, weights: np.ndarray, acts: np.ndarray, pattern: SparsityPattern | None) -> np.ndarray:
        del pattern  # the product does not depend on it; the array's schedule does
        return reference_outputs(weights, acts, spec.groups, acc_bits)
    return run


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.setflags(write=False)
    return a


def quantize_weights(w: np.ndarray, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel quantization of an N×K matrix: (integers, scales (N,)).

    An all-zero channel gets scale 0 here (its integers are all zero); :func:`quantize_steps`
    chooses a scale for it that keeps its bias representable.
    """
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ConfigError("weights contain NaN or infinity")
    qmax = (1 << (bits - 1)) - 1
    peak = np.abs(w).max(axis=1, initial=0.0)
    scale = peak / qmax
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint(w / safe[:, None]), -qmax, qmax).astype(np.int64)
    return q, scale


def detect_pattern(weights: np.ndarray, group_size: int = 4) -> SparsityPattern:
    """The pattern a weight matrix satisfies on an array of ``group_size``: dense, N:M with the
    largest per-group count as N, or unstructured at its density."""
    nz = np.asarray(weights) != 0
    if nz.all():
        return Dense()
    occ = int(group_view(nz, group_size, False).sum(axis=2).max(initial=0))
    if 0 < occ < group_size:
        return NM(occ, group_size)
    return Unstructured(max(float(nz.mean()), 1e-6))


@dataclass(frozen=True, slots=True)
class LayerRun:
    """One conv/linear layer of one integer run: what the array reads and must write.

    ``acts`` are the im2col'd int8 operands (groups, M, K); ``acc`` the array's outputs
    (groups, M, N/groups), int64 holding acc_bits-wrapped values; ``output`` the layer's
    integer output after bias and requantization (NCHW or (batch, N)).
    """

    name: str
    spec: LayerSpec
    weights: np.ndarray
    acts: np.ndarray
    acc: np.ndarray
    output: np.ndarray
    pattern: SparsityPattern | None


@dataclass(frozen=True, slots=True)
class IntegerRun:
    """The integer reference on one batch: the model output and every layer's run."""

    output: np.ndarray
    layers: tuple[LayerRun, ...]


@dataclass(frozen=True, slots=True)
class QuantLayer:
    """A quantized conv or linear layer (BatchNorm folded, ReLU fused when one follows).

    ``weight`` is the N×K int8 matrix (K in im2col order); ``weight_shape`` the PyTorch shape
    (N, C/groups, kh, kw) or (N, K).  ``output_scale`` is None for the model's last layer, whose
    int32 accumulators plus bias are the output; an array when channels go to different output
    tensors (a Transformer's packed Q/K/V projection).
    """

    name: str
    weight: np.ndarray
    weight_shape: tuple[int, ...]
    weight_scale: np.ndarray
    bias: np.ndarray
    input_scale: float
    output_scale: float | np.ndarray | None
    multiplier: np.ndarray
    shift: np.ndarray
    relu: bool
    input_shape: tuple[int, ...]        # one example's input (C, H, W), (C, L) or (K,)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    pattern: SparsityPattern | None = None
    folded_bn: str | None = None

    @property
    def is_conv(self) -> bool:
        return len(self.weight_shape) > 2

    @property
    def out_channels(self) -> int:
        return int(self.weight_shape[0])

    @property
    def accumulator_scale(self) -> np.ndarray:
        """Real value of one accumulator unit, per output channel: s_in · s_w[n]."""
        return self.input_scale * self.weight_scale

    def geometry(self, batch: int) -> ConvGeometry:
        c = self.input_shape[0]
        size = self.input_shape[1:] if len(self.input_shape) == 3 else (1, self.input_shape[1])
        return ConvGeometry.make(in_channels=c, out_channels=self.out_channels, in_size=tuple(size),
                                 kernel=tuple(self.weight_shape[2:]), stride=self.stride,
                                 padding=self.padding, dilation=self.dilation, groups=self.groups,
                                 batch=batch)

    def spec(self, batch: int) -> LayerSpec:
        """The GEMM this layer is for a batch of ``batch`` examples."""
        if self.is_conv:
            return LayerSpec.from_conv(self.name, self.geometry(batch), sparsity=self.pattern)
        return LayerSpec.linear(self.name, self.weight.shape[1], self.out_channels, tokens=batch).with_sparsity(
            self.pattern)

    def lower(self, x: np.ndarray) -> np.ndarray:
        """Integer input (batch first) → the array's activation operands (groups, M, K)."""
        if not self.is_conv:
            return np.asarray(x, dtype=np.int64).reshape(1, x.shape[0], -1)
        return im2col(x, self.geometry(x.shape[0]))

    def to_dict(self) -> dict[str, object]:
        """Scales, zero points and requantization constants (for manifests and reports)."""
        return {"name": self.name, "kind": "conv" if self.is_conv else "linear",
                "weight_shape": list(self.weight_shape), "input_shape": list(self.input_shape),
                "input_scale": self.input_scale, "input_zero_point": 0,
                "weight_scale": self.weight_scale.tolist(), "weight_zero_point": 0,
                "output_scale": (np.asarray(self.output_scale).tolist() if self.output_scale is not None
                                 else None),
                "output_zero_point": 0 if self.output_scale is not None else None,
                "bias_int32": self.bias.tolist(), "multiplier": self.multiplier.tolist(),
                "shift": self.shift.tolist(), "relu": self.relu, "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation), "groups": self.groups,
                "pattern": str(self.pattern) if self.pattern is not None else None,
                "folded_bn": self.folded_bn}


QStep = QuantLayer | Relu | MaxPool | Flatten


def _max_pool_int(x: np.ndarray, p: MaxPool) -> np.ndarray:
    """Integer max-pool (NCHW), PyTorch's floor-mode output size; padding never wins."""
    if p.ceil_mode:
        raise UnsupportedLayerError("max-pool with ceil_mode=True has no integer kernel here")
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = p.kernel, p.stride, p.padding, p.dilation
    lowest = np.iinfo(np.int64).min
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=lowest)
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    oh = (x.shape[2] + 2 * ph - span_h) // sh + 1
    ow = (x.shape[3] + 2 * pw - span_w) // sw + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (span_h, span_w), axis=(2, 3))
    win = win[:, :, : (oh - 1) * sh + 1: sh, : (ow - 1) * sw + 1: sw, ::dh, ::dw]
    return win.max(axis=(4, 5))


@dataclass(frozen=True, slots=True)
class IntegerModel:
    """What every int8 model offers on top of its ``run`` and ``layers`` (:class:`QuantModel`,
    :class:`~hwprune.quant.transformer.QuantTransformer`): the array's bit widths and how it was
    calibrated (keyword-only fields, so each model's own fields come first), layers by name,
    outputs, logits, predictions."""

    weight_bits: int = field(default=8, kw_only=True)
    act_bits: int = field(default=8, kw_only=True)
    acc_bits: int = field(default=32, kw_only=True)
    calibration: Calibration = field(default_factory=Calibration, kw_only=True)
    calib_examples: int = field(default=0, kw_only=True)

    @property
    def act_range(self) -> tuple[int, int]:
        return -(1 << (self.act_bits - 1)), (1 << (self.act_bits - 1)) - 1

    def layer(self, name: str) -> QuantLayer:
        """The layer with weights called ``name``."""
        for q in self.layers:
            if q.name == name:
                return q
        raise ConfigError(f"no layer {name!r}; layers: {', '.join(q.name for q in self.layers)}")

    def forward_int(self, x_int: np.ndarray) -> np.ndarray:
        """The model's integer output for integer inputs (the last layer's int32 acc + bias)."""
        return self.run(x_int).output

    def logits(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Inputs → quantize → integer reference → dequantized outputs (float64)."""
        out = self.forward_int(self.quantize_input(x))
        return out * self.output_scale.reshape((-1,) + (1,) * (out.ndim - 2))

    def predict(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)


@dataclass(frozen=True, slots=True)
class QuantModel(IntegerModel):
    """An int8 model: quantized steps plus the input scale; :meth:`run` is its definition.

    Build with :func:`quantize`.  ``weight_bits``/``act_bits``/``acc_bits`` are the array's.
    """

    steps: tuple[QStep, ...]
    input_scale: float
    input_shape: tuple[int, ...]

    @property
    def layers(self) -> tuple[QuantLayer, ...]:
        return tuple(s for s in self.steps if isinstance(s, QuantLayer))

    @property
    def output_scale(self) -> np.ndarray:
        """Real value of one unit of the output, per output channel."""
        last = self.steps[-1]
        if isinstance(last, QuantLayer) and last.output_scale is None:
            return last.accumulator_scale
        return np.full(1, self._scale_before(len(self.steps)))

    def _scale_before(self, index: int) -> float:
        scale = self.input_scale
        for s in self.steps[:index]:
            if isinstance(s, QuantLayer):
                scale = s.output_scale if s.output_scale is not None else float("nan")
        return scale

    def quantize_input(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Float input → int8 (round half to even, as ONNX QuantizeLinear), batch first."""
        a = x.detach().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)
        if tuple(a.shape[1:]) != tuple(self.input_shape):
            raise ConfigError(f"input of shape {tuple(a.shape)} does not match the model's "
                              f"(batch, {', '.join(map(str, self.input_shape))})")
        lo, hi = self.act_range
        return np.clip(np.rint(a / self.input_scale), lo, hi).astype(np.int64)

    def run(self, x_int: np.ndarray, *, gemm: GemmRunner | None = None) -> IntegerRun:
        """The integer reference on a batch of quantized inputs (see the module docstring);
        ``gemm`` does the array's products (default: :func:`reference_gemm`)."""
        x = np.asarray(x_int)
        if not np.issubdtype(x.dtype, np.integer):
            raise ConfigError(f"the integer reference takes integer inputs (quantize_input), not {x.dtype}")
        lo, hi = self.act_range
        if x.size and (x.min() < lo or x.max() > hi):
            raise ConfigError(f"inputs must lie in [{lo}, {hi}], found [{x.min()}, {x.max()}]")
        x = x.astype(np.int64)
        runs: list[LayerRun] = []
        x = self._steps(self.steps, x, runs, gemm if gemm is not None else reference_gemm(self.acc_bits))
        return IntegerRun(x, tuple(runs))

    def _steps(self, steps: tuple[QStep, ...], x: np.ndarray, runs: list[LayerRun],
               gemm: GemmRunner | None = None) -> np.ndarray:
        for step in steps:
            if isinstance(step, QuantLayer):
                acts = step.lower(x)
                spec = step.spec(x.shape[0])
                acc = gemm(spec, step.weight, acts, step.pattern)                  # (g, M, N/g)
                out = self.finish(step, acc, x.shape[0])
                runs.append(LayerRun(step.name, spec, step.weight, acts, acc, out, step.pattern))
                x = out
            elif isinstance(step, Relu):
                x = np.maximum(x, 0)
            elif isinstance(step, MaxPool):
                x = _max_pool_int(x, step)
            else:
                x = x.reshape(x.shape[0], -1)
        return x

    def finish(self, q: QuantLayer, acc: np.ndarray, batch: int) -> np.ndarray:
        """A layer's array outputs (groups, M, N/groups) → its integer output tensor: channels
        gathered (NCHW or (batch, N)), bias added (wrapping at acc_bits), requantized."""
        if q.is_conv:
            geom = q.geometry(batch)
            oh, ow = geom.out_size
            y = acc.reshape(q.groups, batch, oh, ow, -1).transpose(1, 0, 4, 2, 3).reshape(batch, -1, oh, ow)
            if len(q.input_shape) == 2:   # Conv1d: drop the unit height
                y = y[:, :, 0, :]
            chan = (-1,) + (1,) * (y.ndim - 2)
        else:
            y = acc[0]
            chan = (-1,)
        total = wrap(y + q.bias.reshape(chan), self.acc_bits)
        if q.output_scale is None:
            return total
        lo, hi = self.act_range
        return requantize(total, q.multiplier.reshape(chan), q.shift.reshape(chan),
                          lo=0 if q.relu else lo, hi=hi)

    def next_activations(self, name: str, acc: np.ndarray, batch: int) -> tuple[str, np.ndarray] | None:
        """From layer ``name``'s array outputs to the next conv/linear layer's operands: its name
        and im2col'd int8 activations (None after the last layer).  Chains per-layer runs (the
        memory images of consecutive layers) exactly as :meth:`run` does."""
        index = next((i for i, s in enumerate(self.steps) if isinstance(s, QuantLayer) and s.name == name), None)
        if index is None:
            raise ConfigError(f"no layer {name!r}; layers: {', '.join(q.name for q in self.layers)}")
        nxt = next((i for i in range(index + 1, len(self.steps)) if isinstance(self.steps[i], QuantLayer)), None)
        if nxt is None:
            return None
        x = self._steps(self.steps[index + 1: nxt], self.finish(self.steps[index], acc, batch), [])
        return self.steps[nxt].name, self.steps[nxt].lower(x)

    def to_dict(self) -> dict[str, object]:
        return {"input_scale": self.input_scale, "input_zero_point": 0,
                "input_shape": list(self.input_shape),
                "bits": {"weight": self.weight_bits, "activation": self.act_bits,
                         "accumulator": self.acc_bits},
                "calibration": {**self.calibration.to_dict(), "examples": self.calib_examples},
                "steps": [s.to_dict() if isinstance(s, QuantLayer) else _step_dict(s) for s in self.steps]}

    @classmethod
    def from_dict(cls, data: Mapping[str, object], weights: Mapping[str, np.ndarray]) -> QuantModel:
        """Rebuild from :meth:`to_dict` (a manifest's ``quant``) and each layer's N×K integers.

        Raises
        ------
        ConfigError
            A field is missing or malformed, or a layer's weights are absent or misshaped.
        """
        try:
            steps = tuple(_layer_from_dict(d, weights) if "weight_shape" in d else _step_from_dict(d)
                          for d in data["steps"])
            bits = data["bits"]
            cal = data["calibration"]
            return cls(steps, float(data["input_scale"]), tuple(int(v) for v in data["input_shape"]),
                       weight_bits=int(bits["weight"]), act_bits=int(bits["activation"]),
                       acc_bits=int(bits["accumulator"]),
                       calibration=Calibration(cal["method"], float(cal["percentile"])),
                       calib_examples=int(cal.get("examples", 0)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a quantized-model description: {type(exc).__name__}: {exc}") from None


def _step_dict(step: QStep) -> dict[str, object]:
    d: dict[str, object] = {"op": type(step).__name__.lower()}
    if isinstance(step, MaxPool):
        d.update(kernel=list(step.kernel), stride=list(step.stride), padding=list(step.padding),
                 dilation=list(step.dilation), ceil_mode=step.ceil_mode)
    return d


def _pair_of(v: object) -> tuple[int, int]:
    a, b = v
    return int(a), int(b)


def _step_from_dict(d: Mapping[str, object]) -> QStep:
    op = d["op"]
    if op == "relu":
        return Relu()
    if op == "flatten":
        return Flatten()
    if op == "maxpool":
        return MaxPool(_pair_of(d["kernel"]), _pair_of(d["stride"]), _pair_of(d["padding"]),
                       _pair_of(d["dilation"]), bool(d["ceil_mode"]))
    raise ValueError(f"unknown step {op!r}")


def _layer_from_dict(d: Mapping[str, object], weights: Mapping[str, np.ndarray]) -> QuantLayer:
    name = str(d["name"])
    shape = tuple(int(v) for v in d["weight_shape"])
    if name not in weights:
        raise ValueError(f"no weights for layer {name!r}")
    w = np.asarray(weights[name], dtype=np.int64)
    if w.shape != (shape[0], int(np.prod(shape[1:]))):
        raise ValueError(f"{name}: weights of shape {w.shape} do not match {shape}")
    arr = {k: np.asarray(d[k], dtype=np.float64 if k == "weight_scale" else np.int64)
           for k in ("weight_scale", "bias_int32", "multiplier", "shift")}
    conv = {}
    if len(shape) > 2:
        conv = {"stride": _pair_of(d["stride"]), "padding": _pair_of(d["padding"]),
                "dilation": _pair_of(d["dilation"]), "groups": int(d["groups"])}
    out = d["output_scale"]
    return QuantLayer(name, _readonly(w), shape, _readonly(arr["weight_scale"]), _readonly(arr["bias_int32"]),
                      float(d["input_scale"]), None if out is None else float(out),
                      _readonly(arr["multiplier"]), _readonly(arr["shift"]), bool(d["relu"]),
                      tuple(int(v) for v in d["input_shape"]),
                      pattern=parse_pattern(d["pattern"]) if d.get("pattern") else None,
                      folded_bn=d.get("folded_bn"), **conv)


def _float_model(model: nn.Module) -> nn.Module:
    from ..prune.engine import make_permanent
    from ..train import clone_model

    m = make_permanent(clone_model(model))
    m.eval()
    return m


def quantize(model: nn.Module, data: object, *, calib: int = 256,
             calibration: Calibration | str = "percentile", percentile: float = 99.99,
             array: ArrayConfig | str | None = None,
             patterns: Mapping[str, SparsityPattern | str] | None = None) -> IntegerModel:
    """Post-training int8 quantization of a (pruned) model.

    Parameters
    ----------
    model : nn.Module
        A chain of conv/linear (+BatchNorm, ReLU, max-pool, flatten) layers, or a Transformer
        encoder classifier (:func:`~hwprune.quant.transformer.quantize_transformer`, which then
        returns a :class:`~hwprune.quant.transformer.QuantTransformer`); torch-prune masks are
        folded in (the model itself is not modified).
    data : workload or tensor
        Calibration data: a built-in task, an :class:`hwprune.Workload` over DataLoaders, or a
        tensor of inputs (see :func:`~hwprune.quant.calibrate.calibration_inputs`).
    calib : int
        Number of calibration examples.
    calibration : Calibration or str
        ``"minmax"``, ``"percentile"`` (with ``percentile``) or a :class:`Calibration`.
    array : ArrayConfig or str, optional
        Takes the bit widths (default 8/8/32) and the N:M group size for pattern detection.
    patterns : mapping, optional
        Layer → pattern the layer was pruned to (a checkpoint's); others are detected.

    Raises
    ------
    UnsupportedLayerError
        The model is not a chain of supported layers.
    ConfigError
        Bad calibration data or settings.
    """
    from .transformer import is_transformer, quantize_transformer

    if is_transformer(model):
        return quantize_transformer(model, data, calib=calib, calibration=calibration, percentile=percentile,
                                    array=array, patterns=patterns)
    calib_cfg = calibration if isinstance(calibration, Calibration) else Calibration(calibration, percentile)
    cfg = load_array(array) if array is not None else None
    steps = float_steps(_float_model(model))
    x = calibration_inputs(data, calib).double()
    return quantize_steps(steps, x, calibration=calib_cfg, array=cfg, patterns=patterns)


def _bits(array: ArrayConfig | None) -> tuple[int, int, int, int]:
    if array is None:
        return 8, 8, 32, 4
    return array.weight_bits, array.act_bits, array.acc_bits, array.group_size


def quantize_steps(steps: tuple, x: torch.Tensor, *, calibration: Calibration,
                   array: ArrayConfig | None = None,
                   patterns: Mapping[str, SparsityPattern | str] | None = None,
                   scales: Mapping[str, float] | None = None) -> QuantModel:
    """Quantize a float chain of steps with calibration inputs ``x`` (see :func:`quantize`).

    ``scales`` fixes activation scales instead of calibrating them: ``"input"`` for the network
    input, a layer name for that layer's output (QAT keeps the scales it trained with).
    """
    fixed = dict(scales or {})
    wb, ab, accb, gs = _bits(array)
    amax_q = (1 << (ab - 1)) - 1
    pats = {k: parse_pattern(v) if isinstance(v, str) else v for k, v in (patterns or {}).items()}
    _, outs = run_float(steps, x, record=True)

    def scale_of(t: torch.Tensor, where: str) -> float:
        if where in fixed:
            return float(fixed[where])
        amax = amax_of([t], calibration)
        if amax <= 0:
            raise ConfigError(f"{where}: calibration activations are all zero; cannot choose a scale")
        return amax / amax_q

    s_in0 = scale_of(x, "input")
    scale, shape = s_in0, tuple(x.shape[1:])
    out_steps: list[QStep] = []
    i = 0
    while i < len(steps):
        step = steps[i]
        if not isinstance(step, Gemm):
            out_steps.append(step)
            shape = tuple(outs[i].shape[1:])
            i += 1
            continue
        relu = i + 1 < len(steps) and isinstance(steps[i + 1], Relu)
        j = i + 1 if relu else i
        last = j == len(steps) - 1 and not relu
        s_out = None if last else scale_of(outs[j], step.name)
        layer = _quant_layer(step, scale, s_out, relu, shape, wb, accb,
                             pats.get(step.name), gs)
        out_steps.append(layer)
        if s_out is not None:
            scale = s_out
        shape = tuple(outs[j].shape[1:])
        i = j + 1
    return QuantModel(tuple(out_steps), s_in0, tuple(x.shape[1:]), weight_bits=wb, act_bits=ab, acc_bits=accb,
                      calibration=calibration, calib_examples=int(x.shape[0]))


#: the smallest requantization multiplier a channel gets (2^-24: far below one output step)
_MIN_MULTIPLIER = 2.0 ** -24


def _quant_layer(g: Gemm, s_in: float, s_out: float | np.ndarray | None, relu: bool, in_shape: tuple[int, ...],
                 wb: int, accb: int, pattern: SparsityPattern | None, group_size: int) -> QuantLayer:
    w_int, s_w = quantize_weights(g.matrix(), wb)
    # an all-zero channel outputs its bias alone: give it the scale that makes the multiplier 1
    empty = s_w == 0
    s_w = np.where(empty, (s_out if s_out is not None else 2.0 ** -16) / s_in, s_w)
    # a near-dead channel (|w| ≪ everything else) would need a multiplier below 2^-31 and a bias
    # beyond int32: floor its scale (its tiny weights then round to zero, as they contribute nothing)
    lim = (1 << (accb - 1)) - 1
    floor = np.abs(g.bias) / (s_in * (lim >> 1))
    if s_out is not None:
        floor = np.maximum(floor, _MIN_MULTIPLIER * s_out / s_in)
    if np.any(s_w < floor):
        s_w = np.maximum(s_w, floor)
        qmax = (1 << (wb - 1)) - 1
        w_int = np.clip(np.rint(g.matrix() / s_w[:, None]), -qmax, qmax).astype(np.int64)
    acc_scale = s_in * s_w
    bias = np.clip(np.rint(g.bias / acc_scale), -lim, lim).astype(np.int64)
    if s_out is not None:
        qe = [quantize_multiplier(float(m)) for m in acc_scale / s_out]
        mult = np.array([q for q, _ in qe], dtype=np.int64)
        shift = np.array([e for _, e in qe], dtype=np.int64)
    else:
        mult = shift = np.zeros(g.out_channels, dtype=np.int64)
    if pattern is None:
        pattern = detect_pattern(g.matrix(), group_size)  # the float mask: rounding to 0 is not pruning
    conv = {}
    if g.is_conv:
        conv = {"stride": tuple(g.stride), "padding": tuple(g.padding), "dilation": tuple(g.dilation),
                "groups": g.groups}
    return QuantLayer(g.name, _readonly(w_int), tuple(g.weight.shape), _readonly(s_w), _readonly(bias),
                      float(s_in), s_out, _readonly(mult), _readonly(shift), relu, tuple(in_shape),
                      pattern=pattern, folded_bn=g.folded_bn, **conv)


def evaluate_int(qmodel: QuantModel, data: object, split: str = "test") -> float:
    """The workload's metric (top-1 accuracy for the built-in tasks) of the integer reference on
    ``split``: inputs quantized, run in integers, outputs dequantized."""
    from ..workload import as_workload
    from .calibrate import _single_input

    workload = as_workload(data, what="evaluation data")
    outs, targets = [], []
    for batch in workload.eval_batches(split):
        outs.append(torch.from_numpy(qmodel.logits(_single_input(batch, workload))))
        targets.append(batch.targets)
    if not outs:
        return 0.0
    return float(workload.compute_metric(torch.cat(outs), torch.cat(targets)))
