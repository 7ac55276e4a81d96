"""The int8 Transformer and its integer reference: every GEMM on the array, I-BERT host steps.

:func:`quantize_transformer` turns an encoder classifier — a token embedding plus a learned
position table, a ``torch.nn.TransformerEncoder`` of post-norm layers (ReLU or GELU), mean
pooling over tokens and a linear head (:class:`hwprune.models.TinyTransformer`) — into a
:class:`QuantTransformer`, whose :meth:`~QuantTransformer.run` is the definition of what the
int8 model computes:

* **embedding**: token + position is one int8 table (vocab × tokens × d) at the calibrated
  scale of the encoder's input; looking it up is the model's first integer step.
* **linear layers** (``in_proj``, ``out_proj``, ``linear1``, ``linear2``, ``head``): exactly as the
  CNN's (:mod:`hwprune.quant.model`): per-channel int8 weights, zeros kept, int32 bias, int32
  accumulation on the array, gemmlowp requantization.  ``in_proj`` is one GEMM (N = 3d) whose
  channels requantize to three per-tensor scales (Q, K and V each calibrated).
* **attention products** (``qk``: Q·Kᵀ, ``av``: A·V, per batch × head): int8 × int8 → int32 on
  the array as dense GEMMs whose second operand (K, or Vᵀ) is written as the "weights"
  (:class:`~hwprune.ir.LayerSpec` ``matmul``, groups = batch × heads, as the importer names
  them).  Q, K and V are int8 per tensor; the probabilities are int8 in [0, 127] at scale 2^-7.
* **host steps**, integer-only (:mod:`hwprune.quant.ibert`): I-BERT softmax on the score
  accumulators (the 1/√d_head folded into its input multiplier), residual adds at a common
  fine scale (each side requantized to max(s_x, s_a)/2^10, then added in int32), I-BERT
  LayerNorm, ReLU fused in ``linear1``'s requantization (or I-BERT GELU on an int16-range
  requantization of its accumulators), mean pooling as a sum over tokens requantized by one
  multiplier (1/tokens folded in).  The head's int32 accumulators plus bias are the output.

Activation scales come from the float model's own activations on calibration data (as for the
CNN).  The reference's GEMMs are done by a ``gemm`` callable (:data:`~hwprune.quant.model.GemmRunner`):
:func:`~hwprune.images.reference_outputs` by default, the simulated array in
:func:`hwprune.sim.run_model` — the host steps are the same code either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import ArrayConfig, load_array
from ..errors import ConfigError, UnsupportedLayerError
from ..images import wrap
from ..ir import LayerSpec
from ..patterns import SparsityPattern, parse_pattern
from .calibrate import Calibration, amax_of, calibration_inputs
from .fixedpoint import quantize_multiplier, requantize
from .graph import Gemm
from .ibert import (
                    GeluParams,
                    LayerNormParams,
                    gelu_params,
                    i_gelu,
                    i_layernorm,
                    i_softmax,
                    layernorm_params,
                    softmax_multiplier,
)
from .model import (
                    GemmRunner,
                    IntegerModel,
                    IntegerRun,
                    LayerRun,
                    QuantLayer,
                    _bits,
                    _quant_layer,
                    _readonly,
                    reference_gemm,
)

__all__ = ["QuantEncoderLayer", "QuantTransformer", "Residual", "is_transformer", "quantize_transformer"]

_INT32 = (-(1 << 31), (1 << 31) - 1)
#: the residual sum's scale: the coarser operand's scale / 2^10 (far below one int8 step)
RESIDUAL_FRAC_BITS = 10
#: GELU's input: linear1's accumulators requantized to this many bits (I-BERT feeds int32)
GELU_IN_BITS = 16


@dataclass(frozen=True, slots=True)
class Residual:
    """x + a of two int8 tensors of different scales, in int32 at a common finer scale."""

    x_multiplier: int
    x_shift: int
    a_multiplier: int
    a_shift: int

    @classmethod
    def between(cls, s_x: float, s_a: float) -> Residual:
        s_r = max(s_x, s_a) / (1 << RESIDUAL_FRAC_BITS)
        (mx, ex), (ma, ea) = quantize_multiplier(s_x / s_r), quantize_multiplier(s_a / s_r)
        return cls(mx, ex, ma, ea)

    def __call__(self, x: np.ndarray, a: np.ndarray) -> np.ndarray:
        lo, hi = _INT32
        return (requantize(x, self.x_multiplier, self.x_shift, lo=lo, hi=hi)
                + requantize(a, self.a_multiplier, self.a_shift, lo=lo, hi=hi))


@dataclass(frozen=True, slots=True)
class QuantEncoderLayer:
    """One post-norm encoder layer in integers (see the module docstring).

    ``softmax`` is the multiplier taking Q·Kᵀ accumulators to the softmax's Q16 input; ``av``
    the one taking A·V accumulators to the int8 input of ``out_proj``; ``gelu`` is None for ReLU
    (fused in ``linear1``).
    """

    name: str
    heads: int
    in_proj: QuantLayer
    softmax: tuple[int, int]
    av: tuple[int, int]
    out_proj: QuantLayer
    residual1: Residual
    norm1: LayerNormParams
    linear1: QuantLayer
    linear2: QuantLayer
    residual2: Residual
    norm2: LayerNormParams
    gelu: GeluParams | None = None

    @property
    def gemm_layers(self) -> tuple[QuantLayer, ...]:
        return self.in_proj, self.out_proj, self.linear1, self.linear2


@dataclass(frozen=True, slots=True)
class QuantTransformer(IntegerModel):
    """An int8 Transformer encoder classifier; :meth:`run` is its definition.

    Build with :func:`quantize_transformer` (or :func:`hwprune.quant.quantize`).  The input is a
    batch of token ids (batch, tokens); ``embedding`` the int8 table (vocab, tokens, d) of
    token + position at scale ``input_scale``.
    """

    embedding: np.ndarray
    input_scale: float
    encoder: tuple[QuantEncoderLayer, ...]
    pool: tuple[int, int]
    head: QuantLayer

    @property
    def vocab(self) -> int:
        return int(self.embedding.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (int(self.embedding.shape[1]),)

    @property
    def layers(self) -> tuple[QuantLayer, ...]:
        """The layers with weights, in execution order (the attention products have none)."""
        return tuple(q for e in self.encoder for q in e.gemm_layers) + (self.head,)

    @property
    def output_scale(self) -> np.ndarray:
        return self.head.accumulator_scale

    def quantize_input(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Token ids (batch, tokens) as int64, checked against the vocabulary and length."""
        t = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if t.ndim != 2 or t.shape[1] != self.input_shape[0]:
            raise ConfigError(f"input of shape {tuple(t.shape)} does not match the model's "
                              f"(batch, {self.input_shape[0]}) token ids")
        ti = t.astype(np.int64)
        if not np.array_equal(ti, t) or (ti.size and (ti.min() < 0 or ti.max() >= self.vocab)):
            raise ConfigError(f"token ids must be integers in [0, {self.vocab}), found "
                              f"[{t.min()}, {t.max()}]")
        return ti

    def run(self, x_int: np.ndarray, *, gemm: GemmRunner | None = None) -> IntegerRun:
        """The integer reference on a batch of token ids; ``gemm`` does the array's products."""
        tokens = self.quantize_input(np.asarray(x_int))
        runner = gemm if gemm is not None else reference_gemm(self.acc_bits)
        runs: list[LayerRun] = []
        batch, length = tokens.shape
        x = self.embedding[tokens, np.arange(length)[None, :]]
        for layer in self.encoder:
            x = self._encoder_layer(layer, x, runner, runs)
        lo, hi = self.act_range
        pooled = requantize(x.sum(axis=1), *self.pool, lo=lo, hi=hi)
        out = self._linear(self.head, pooled, runner, runs, lambda total: total)
        return IntegerRun(out, tuple(runs))

    def _linear(self, q: QuantLayer, x: np.ndarray, runner: GemmRunner, runs: list[LayerRun],
                finish: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """One linear layer over rows of ``x`` (rows, K): array product, then bias and ``finish``."""
        spec, acts = q.spec(x.shape[0]), q.lower(x)
        acc = runner(spec, q.weight, acts, q.pattern)
        out = finish(wrap(acc[0] + q.bias, self.acc_bits))
        runs.append(LayerRun(q.name, spec, q.weight, acts, acc, out, q.pattern))
        return out

    def _requant(self, q: QuantLayer, *, relu: bool = False) -> Callable[[np.ndarray], np.ndarray]:
        lo, hi = self.act_range
        return lambda total: requantize(total, q.multiplier, q.shift, lo=0 if relu else lo, hi=hi)

    def _matmul(self, name: str, a: np.ndarray, b: np.ndarray, runner: GemmRunner,
                runs: list[LayerRun], finish: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Per group g: a[g] (M×K) · b[g]ᵀ (b[g] is N×K, written as the array's weights)."""
        groups, m, k = a.shape
        n = b.shape[1]
        spec = LayerSpec.matmul(name, m, k, n, groups=groups)
        w = b.reshape(groups * n, k)
        acc = runner(spec, w, a, None)
        out = finish(acc)
        runs.append(LayerRun(name, spec, w, a, acc, out, None))
        return out

    def _encoder_layer(self, p: QuantEncoderLayer, x: np.ndarray, runner: GemmRunner,
                       runs: list[LayerRun]) -> np.ndarray:
        batch, length, d = x.shape
        heads, dh = p.heads, d // p.heads
        x2 = x.reshape(batch * length, d)
        qkv = self._linear(p.in_proj, x2, runner, runs, self._requant(p.in_proj))

        def per_head(t: np.ndarray) -> np.ndarray:          # (B·L, d) → (B·H, L, dh)
            return t.reshape(batch, length, heads, dh).transpose(0, 2, 1, 3).reshape(-1, length, dh)

        q, k, v = (per_head(qkv[:, i * d:(i + 1) * d]) for i in range(3))
        attn = f"{p.name}.self_attn"
        probs = self._matmul(f"{attn}.qk", q, k, runner, runs,
                             lambda acc: i_softmax(acc, *p.softmax, self.act_bits - 1))
        lo, hi = self.act_range
        o = self._matmul(f"{attn}.av", probs, v.transpose(0, 2, 1), runner, runs,
                         lambda acc: requantize(acc, *p.av, lo=lo, hi=hi))
        o = o.reshape(batch, heads, length, dh).transpose(0, 2, 1, 3).reshape(batch * length, d)
        a = self._linear(p.out_proj, o, runner, runs, self._requant(p.out_proj))
        x1 = i_layernorm(p.residual1(x2, a), p.norm1, lo=lo, hi=hi)
        if p.gelu is None:
            h = self._linear(p.linear1, x1, runner, runs, self._requant(p.linear1, relu=True))
        else:
            gb = (1 << (GELU_IN_BITS - 1)) - 1
            pre = self._linear(p.linear1, x1, runner, runs,
                               lambda total: requantize(total, p.linear1.multiplier, p.linear1.shift,
                                                        lo=-gb, hi=gb))
            h = i_gelu(pre, p.gelu, lo=lo, hi=hi)
        f = self._linear(p.linear2, h, runner, runs, self._requant(p.linear2))
        return i_layernorm(p.residual2(x1, f), p.norm2, lo=lo, hi=hi).reshape(batch, length, d)


# -- the float model, as the integer one is structured -------------------------------------------


def is_transformer(model: nn.Module) -> bool:
    """Whether ``model`` has the structure :func:`quantize_transformer` handles (embedding, position
    table, ``nn.TransformerEncoder``, linear head)."""
    return (isinstance(getattr(model, "embed", None), nn.Embedding)
            and isinstance(getattr(model, "pos", None), torch.Tensor)
            and isinstance(getattr(model, "encoder", None), nn.TransformerEncoder)
            and isinstance(getattr(model, "head", None), nn.Linear))


def _np(t: torch.Tensor | None, n: int) -> np.ndarray:
    return np.zeros(n) if t is None else t.detach().double().numpy().copy()


def _check_layer(name: str, layer: nn.Module) -> str:
    """The layer's activation name; anything the integer layer does not model is refused."""
    if not isinstance(layer, nn.TransformerEncoderLayer):
        raise UnsupportedLayerError(f"{name}: {type(layer).__name__} (only nn.TransformerEncoderLayer)")
    if layer.norm_first:
        raise UnsupportedLayerError(f"{name}: norm_first=True (pre-norm) has no integer layer here")
    if not layer.self_attn.batch_first or not layer.self_attn._qkv_same_embed_dim:
        raise UnsupportedLayerError(f"{name}: attention must be batch_first with packed q/k/v weights")
    if layer.self_attn.bias_k is not None or layer.self_attn.add_zero_attn:
        raise UnsupportedLayerError(f"{name}: attention with bias_k/add_zero_attn")
    act = layer.activation
    if act is F.relu or isinstance(act, nn.ReLU):
        return "relu"
    if act is F.gelu or (isinstance(act, nn.GELU) and act.approximate == "none"):
        return "gelu"
    raise UnsupportedLayerError(f"{name}: activation {act!r} (relu or gelu)")


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, norm.normalized_shape, norm.weight.double(), norm.bias.double(), norm.eps)


def _float_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One post-norm encoder layer in float64, every tensor the integer layer quantizes."""
    mha = layer.self_attn
    b, length, d = x.shape
    heads = mha.num_heads
    dh = d // heads
    qkv = F.linear(x, mha.in_proj_weight.double(),
                   None if mha.in_proj_bias is None else mha.in_proj_bias.double())
    q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(b, length, heads, dh).transpose(1, 2) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    o = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, length, d)
    out = mha.out_proj
    a = F.linear(o, out.weight.double(), None if out.bias is None else out.bias.double())
    ln1 = _layer_norm(x + a, layer.norm1)
    pre = F.linear(ln1, layer.linear1.weight.double(), layer.linear1.bias.double())
    h = F.relu(pre) if _check_layer("", layer) == "relu" else F.gelu(pre)
    f = F.linear(h, layer.linear2.weight.double(), layer.linear2.bias.double())
    ln2 = _layer_norm(ln1 + f, layer.norm2)
    return {"q": q, "k": k, "v": v, "o": o, "a": a, "ln1": ln1, "pre": pre, "h": h, "f": f, "ln2": ln2}


def float_forward(model: nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """The model's logits in float64 through the integer model's structure, and every layer's
    tensors (what calibration reads)."""
    with torch.no_grad():
        x = model.embed.weight.double()[tokens] + model.pos.double()[:, : tokens.shape[1]]
        recs = [{"embedding": x}]
        for layer in model.encoder.layers:
            rec = _float_layer(layer, x)
            recs.append(rec)
            x = rec["ln2"]
        pooled = x.mean(dim=1)
        recs.append({"pooled": pooled})
        logits = F.linear(pooled, model.head.weight.double(), model.head.bias.double())
    return logits, recs


def _check_structure(model: nn.Module, tokens: torch.Tensor) -> None:
    """The structured float forward must be the model's own (else its forward does something else)."""
    for i, layer in enumerate(model.encoder.layers):
        _check_layer(f"encoder.layers.{i}", layer)
    if model.encoder.norm is not None:
        raise UnsupportedLayerError("encoder.norm: a final LayerNorm after the encoder has no integer step here")
    mine, _ = float_forward(model, tokens)
    with torch.no_grad():
        theirs = model(tokens).double()
    if mine.shape != theirs.shape or not torch.allclose(mine, theirs, atol=1e-4, rtol=1e-4):
        raise UnsupportedLayerError(f"{type(model).__name__}: forward is not embedding + position → "
                                    "TransformerEncoder → mean over tokens → head (the integer "
                                    "Transformer's structure)")


def quantize_transformer(model: nn.Module, data: object, *, calib: int = 256,
                         calibration: Calibration | str = "percentile", percentile: float = 99.99,
                         array: ArrayConfig | str | None = None,
                         patterns: Mapping[str, SparsityPattern | str] | None = None) -> QuantTransformer:
    """Post-training int8 quantization of a Transformer encoder classifier (see the module docstring).

    Parameters are those of :func:`hwprune.quant.quantize`, which calls this for such models.

    Raises
    ------
    UnsupportedLayerError
        The model is not embedding + position → post-norm ``TransformerEncoder`` (ReLU/GELU) →
        mean over tokens → linear head.
    ConfigError
        Bad calibration data or settings.
    """
    from .model import _float_model

    calib_cfg = calibration if isinstance(calibration, Calibration) else Calibration(calibration, percentile)
    cfg = load_array(array) if array is not None else None
    wb, ab, accb, gs = _bits(cfg)
    amax_q = (1 << (ab - 1)) - 1
    pats = {k: parse_pattern(v) if isinstance(v, str) else v for k, v in (patterns or {}).items()}
    m = _float_model(model)
    tokens = calibration_inputs(data, calib).round().long()
    _check_structure(m, tokens)
    _, recs = float_forward(m, tokens)

    def scale_of(t: torch.Tensor, where: str, qmax: int = amax_q) -> float:
        amax = amax_of([t], calib_cfg)
        if amax <= 0:
            raise ConfigError(f"{where}: calibration activations are all zero; cannot choose a scale")
        return amax / qmax

    def linear(name: str, mod_w: torch.Tensor, mod_b: torch.Tensor | None, s_in: float,
               s_out: float | np.ndarray | None) -> QuantLayer:
        w = mod_w.detach().double().numpy().copy()
        g = Gemm(name, w, _np(mod_b, w.shape[0]))
        return _quant_layer(g, s_in, s_out, False, (w.shape[1],), wb, accb, pats.get(name), gs)

    s_x = s_in = scale_of(recs[0]["embedding"], "embedding")
    table = (m.embed.weight.detach().double()[:, None, :] + m.pos.detach().double()[0][None]).numpy()
    embedding = np.clip(np.rint(table / s_x), -amax_q - 1, amax_q).astype(np.int64)
    layers = []
    for i, (layer, rec) in enumerate(zip(m.encoder.layers, recs[1:-1], strict=True)):
        name, mha = f"encoder.layers.{i}", layer.self_attn
        d, heads = mha.embed_dim, mha.num_heads
        s_q, s_k, s_v = (scale_of(rec[t], f"{name} {t}") for t in "qkv")
        in_proj = linear(f"{name}.self_attn.in_proj", mha.in_proj_weight, mha.in_proj_bias, s_x,
                         np.repeat([s_q, s_k, s_v], d))
        s_o, s_a = scale_of(rec["o"], f"{name} attention"), scale_of(rec["a"], f"{name}.self_attn.out_proj")
        out_proj = linear(f"{name}.self_attn.out_proj", mha.out_proj.weight, mha.out_proj.bias, s_o, s_a)
        s_ln1 = scale_of(rec["ln1"], f"{name}.norm1")
        s_h = scale_of(rec["h"], f"{name}.linear1")
        gelu = None
        if _check_layer(name, layer) == "relu":
            linear1 = linear(f"{name}.linear1", layer.linear1.weight, layer.linear1.bias, s_ln1, s_h)
        else:
            s_pre = scale_of(rec["pre"], f"{name}.linear1", (1 << (GELU_IN_BITS - 1)) - 1)
            linear1 = linear(f"{name}.linear1", layer.linear1.weight, layer.linear1.bias, s_ln1, s_pre)
            gelu = gelu_params(s_pre, s_h)
        s_f = scale_of(rec["f"], f"{name}.linear2")
        linear2 = linear(f"{name}.linear2", layer.linear2.weight, layer.linear2.bias, s_h, s_f)
        s_ln2 = scale_of(rec["ln2"], f"{name}.norm2")
        layers.append(QuantEncoderLayer(
            name, heads, in_proj, softmax_multiplier(s_q * s_k / math.sqrt(d // heads)),
            quantize_multiplier(s_v / (1 << (ab - 1)) / s_o), out_proj, Residual.between(s_x, s_a),
            layernorm_params(_np(layer.norm1.weight, d), _np(layer.norm1.bias, d), s_ln1),
            linear1, linear2, Residual.between(s_ln1, s_f),
            layernorm_params(_np(layer.norm2.weight, d), _np(layer.norm2.bias, d), s_ln2), gelu))
        s_x = s_ln2
    s_p = scale_of(recs[-1]["pooled"], "mean pooling")
    pool = quantize_multiplier(s_x / (tokens.shape[1] * s_p))
    head = linear("head", m.head.weight, m.head.bias, s_p, None)
    return QuantTransformer(_readonly(embedding), float(s_in), tuple(layers), pool, head, weight_bits=wb,
                            act_bits=ab, acc_bits=accb, calibration=calib_cfg, calib_examples=int(tokens.shape[0]))
