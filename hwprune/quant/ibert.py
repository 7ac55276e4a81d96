"""Integer-only softmax, LayerNorm and GELU: I-BERT's kernels in exact numpy int64.

The Transformer's host steps between the array's GEMMs follow I-BERT (Kim et al., "I-BERT:
Integer-only BERT Quantization", ICML 2021; HF ``transformers.models.ibert.quant_modules``):
the same polynomial approximations and range reductions, written here with every constant
fixed at quantization time and only integer operations at run time (shifts, floor divisions,
products), so the host part is a pure function of integers like the array's.  Where I-BERT keeps
a float scale (its ``QuantAct`` re-scalings) a power of two or a gemmlowp multiplier
(:mod:`hwprune.quant.fixedpoint`) stands in, which is what makes it integer-only:

* :func:`i_softmax` — the score accumulators go to Q16 fixed point (one multiplier: the
  accumulator scale × 2^16), then I-BERT's ``int_exp``: ``x = q·(−ln 2) + r`` with
  r ∈ (−ln 2, 0], ``exp(r) ≈ a(r + b)² + c`` (a = 0.35815147, b = 0.96963238/a, c = 1/a) and
  ``exp(x) = exp(r) ≫ q``, evaluated in Q15 (I-BERT's 16-bit ``QuantAct`` with the scale fixed
  at 2^-15, the value exp(0) = 1 takes); inputs below −30·ln 2 are clamped there (I-BERT's
  ``const``).  Normalisation as I-BERT: ``factor = ⌊2^32 / Σ⌋``, ``p = ⌊e·factor / 2^(32−b)⌋``
  with b = act_bits − 1 output bits (the array's operands are signed: probabilities are
  [0, 127] at scale 2^-7; the one value 128, a key taking all the weight, is clamped to 127).
* :func:`i_layernorm` — I-BERT's integer LayerNorm: the mean rounded to an integer, ``y = x − μ``,
  ``std = ⌊√Σy²⌋`` by an exact integer square root (:func:`isqrt`; I-BERT's "to be replaced
  with an integer-sqrt kernel"), ``factor = ⌊2^31 / std⌋`` and ``n = ⌊y·factor / 2^15⌋`` (y/σ at
  scale √d·2^-16; ε is ignored, as in I-BERT).  The affine part differs: I-BERT folds β/γ into a
  float per-channel scale; here γ is an 11-bit integer (per tensor) and β an int32 at the scale
  of n·γ, and one multiplier requantizes ``n·γ + β`` to int8 — the same form as a linear layer's
  ``acc + bias``, valid for any sign of γ.
* :func:`i_gelu` — I-BERT's ``int_erf``: ``erf(x/√2) ≈ sgn(x)·[a(min(|x|, −b) + b)² + 1]``
  (a = −0.2888, b = −1.769), ``gelu(x) = x·(1 + erf)/2``; the input at a fine integer scale,
  the output requantized by one multiplier.

Every constant is an integer computed by the ``*_params`` functions below at quantization time;
the kernels take integers only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from .fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier, requantize

__all__ = [
    "GeluParams",
    "LayerNormParams",
    "i_exp_q15",
    "i_gelu",
    "i_layernorm",
    "i_softmax",
    "isqrt",
    "gelu_params",
    "layernorm_params",
]

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1

#: fixed point of the softmax's exponent argument (Q16) and of exp's value (Q15)
SOFTMAX_IN_BITS = 16
EXP_BITS = 15
#: I-BERT's ``int_exp`` constants: x0 = −ln 2, clamp at 30·x0, exp(r) ≈ a·(r + b)² + c on (−ln 2, 0]
_LN2 = 0.6931
_EXP_CLAMP = 30
_EXP_A, _EXP_B, _EXP_C = 0.35815147, 0.96963238 / 0.35815147, 1.0 / 0.35815147
#: I-BERT's softmax normalisation width (factor = 2^32 / Σ)
_SOFTMAX_MAX_BITS = 32
#: LayerNorm: y/‖y‖ in Q16 (|n| ≤ 2^16), γ as an 11-bit signed integer
LN_FRAC_BITS = 16
LN_GAMMA_BITS = 11
#: I-BERT's ``int_erf`` constants and the bits kept after squaring (its ``const``)
_ERF_A, _ERF_B = -0.2888, -1.769
_ERF_SHIFT = 14


def isqrt(v: np.ndarray) -> np.ndarray:
    """⌊√v⌋ of non-negative int64 values, exact (a float estimate corrected by integer steps)."""
    v = np.asarray(v, dtype=np.int64)
    if v.size and v.min() < 0:
        raise ConfigError("isqrt of a negative value")
    s = np.floor(np.sqrt(v.astype(np.float64))).astype(np.int64)
    # the float estimate is within a few units below 2^63; two correction rounds make it exact
    for _ in range(2):
        s = np.where(s * s > v, s - 1, s)
        s = np.where((s + 1) * (s + 1) <= v, s + 1, s)
    return s


def i_exp_q15(x_q16: np.ndarray) -> np.ndarray:
    """exp(x) in Q15 of x ≤ 0 in Q16, by I-BERT's range reduction and second-order polynomial."""
    one = 1 << SOFTMAX_IN_BITS
    x0 = math.floor(-_LN2 * one)                      # −ln 2 in Q16 (negative)
    b = math.floor(_EXP_B * one)
    c = math.floor(_EXP_C * one * one)                # Q32
    a = round(_EXP_A * one)                           # Q16
    x = np.maximum(np.asarray(x_q16, dtype=np.int64), _EXP_CLAMP * x0)
    q = x // x0                                       # ≥ 0: how many halvings
    r = x - x0 * q                                    # (x0, 0]
    z = (r + b) * r + c                               # ≈ exp(r)/a in Q32
    # a·z is Q48; to Q15 and ≫ q in one floor shift
    return (z * a) >> (2 * SOFTMAX_IN_BITS + SOFTMAX_IN_BITS - EXP_BITS + q)


def i_softmax(acc: np.ndarray, multiplier: int, shift: int, out_bits: int) -> np.ndarray:
    """Integer softmax over the last axis of int32 score accumulators.

    ``(multiplier, shift)`` is the accumulator's real scale × 2^16 as a gemmlowp multiplier
    (:func:`softmax_multiplier`); the result is in [0, 2^out_bits − 1] at scale 2^-out_bits.
    """
    acc = np.asarray(acc, dtype=np.int64)
    x = np.clip(acc - acc.max(axis=-1, keepdims=True), _INT32_MIN, 0)
    e = i_exp_q15(multiply_by_quantized_multiplier(x, multiplier, shift))
    factor = (np.int64(1) << _SOFTMAX_MAX_BITS) // e.sum(axis=-1, keepdims=True)
    p = (e * factor) >> (_SOFTMAX_MAX_BITS - out_bits)
    return np.minimum(p, (1 << out_bits) - 1)


def softmax_multiplier(acc_scale: float) -> tuple[int, int]:
    """The multiplier taking score accumulators (real scale ``acc_scale``) to Q16."""
    return quantize_multiplier(acc_scale * (1 << SOFTMAX_IN_BITS))


@dataclass(frozen=True, slots=True)
class LayerNormParams:
    """An integer LayerNorm: γ (int, per channel), β (int32 at the scale of n·γ) and the
    multiplier to the int8 output scale (see the module docstring)."""

    gamma: np.ndarray
    beta: np.ndarray
    multiplier: int
    shift: int


def layernorm_params(gamma: np.ndarray, beta: np.ndarray, out_scale: float) -> LayerNormParams:
    """Quantize a LayerNorm's affine part for an int8 output of scale ``out_scale``."""
    gamma = np.asarray(gamma, dtype=np.float64)
    beta = np.asarray(beta, dtype=np.float64)
    d = gamma.shape[-1]
    gmax = (1 << (LN_GAMMA_BITS - 1)) - 1
    peak = float(np.abs(gamma).max(initial=0.0))
    s_g = peak / gmax if peak > 0 else 1.0
    s_n = math.sqrt(d) / (1 << LN_FRAC_BITS)          # real value of one unit of n
    g_int = np.clip(np.rint(gamma / s_g), -gmax, gmax).astype(np.int64)
    b_int = np.clip(np.rint(beta / (s_n * s_g)), _INT32_MIN, _INT32_MAX).astype(np.int64)
    m, e = quantize_multiplier(s_n * s_g / out_scale)
    return LayerNormParams(g_int, b_int, m, e)


def i_layernorm(x: np.ndarray, p: LayerNormParams, *, lo: int = -128, hi: int = 127) -> np.ndarray:
    """Integer LayerNorm over the last axis of integers (any scale: LayerNorm does not see it)."""
    x = np.asarray(x, dtype=np.int64)
    d = x.shape[-1]
    mean = (2 * x.sum(axis=-1, keepdims=True) + d) // (2 * d)        # rounded half up
    y = x - mean
    std = np.maximum(isqrt((y * y).sum(axis=-1, keepdims=True)), 1)
    factor = (np.int64(1) << 31) // std
    n = (y * factor) >> (31 - LN_FRAC_BITS)                           # y/‖y‖ in Q16
    return requantize(n * p.gamma + p.beta, p.multiplier, p.shift, lo=lo, hi=hi)


@dataclass(frozen=True, slots=True)
class GeluParams:
    """An integer GELU: its input's fine integer scale ``in_scale``, I-BERT's ``b`` and ``c`` at
    that scale, the constant 1 at the erf's scale, and the multiplier to the int8 output."""

    b: int
    c: int
    one: int
    multiplier: int
    shift: int


def gelu_params(in_scale: float, out_scale: float) -> GeluParams:
    """I-BERT's ``IntGELU`` constants for inputs of real scale ``in_scale``."""
    s = in_scale / math.sqrt(2.0)                        # erf's argument is x/√2
    b = math.floor(_ERF_B / s)
    c = math.floor(1.0 / _ERF_A / (s * s))
    erf_scale = s * s * _ERF_A * (1 << _ERF_SHIFT)       # negative: a < 0
    one = math.floor(1.0 / -erf_scale)
    out = in_scale * -erf_scale / 2                      # x·(erf + 1) / 2
    m, e = quantize_multiplier(out / out_scale)
    return GeluParams(b, c, one, m, e)


def i_gelu(x: np.ndarray, p: GeluParams, *, lo: int = -128, hi: int = 127) -> np.ndarray:
    """Integer GELU of integers at the ``in_scale`` of :func:`gelu_params`, requantized to int8."""
    x = np.asarray(x, dtype=np.int64)
    sign = np.sign(x)
    a = np.minimum(np.abs(x), -p.b)
    erf = sign * ((a + p.b) ** 2 + p.c)
    erf = erf >> _ERF_SHIFT                              # I-BERT's floor(y / 2^const)
    # the erf is negative-scaled (a < 0): erf + 1 at that scale is one − erf
    return requantize(x * (p.one - erf), p.multiplier, p.shift, lo=lo, hi=hi)
