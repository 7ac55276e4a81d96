"""Integer requantization: the gemmlowp / TFLite fixed-point scheme, in exact numpy int64.

A layer's int32 accumulator ``acc`` (scale ``s_in · s_w[n]``) becomes the next layer's int8 value
(scale ``s_out``) through the real multiplier ``m = s_in · s_w[n] / s_out``.  ``m`` is written
once, at quantization time, as a Q31 integer ``q`` ∈ [2^30, 2^31) and a power-of-two exponent
``e`` with ``m ≈ q · 2^(e − 31)`` (:func:`quantize_multiplier`).  At run time only integers are
touched (:func:`multiply_by_quantized_multiplier`), exactly as TFLite's reference kernels do:

1. ``x · 2^max(e, 0)`` (a left shift, for m ≥ 1),
2. ``SaturatingRoundingDoublingHighMul(x, q)``: the high 32 bits of the doubled 64-bit product
   ``2·x·q``, rounded to nearest with ties toward +∞ (gemmlowp's nudge of 2^30 for a
   non-negative product, 1 − 2^30 for a negative one, then a division truncating toward zero);
   the single overflow case, both operands −2^31, saturates to 2^31 − 1,
3. ``RoundingDivideByPOT(·, max(−e, 0))``: an arithmetic right shift rounded half away from zero.

Then the output zero point is added and the result clamped to the activation range (a fused
ReLU raises the lower bound to the zero point).  No float is involved in steps 1–3.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ConfigError

__all__ = [
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "requantize",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

_INT32_MIN = -(1 << 31)
_INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """A positive real multiplier as ``(q, e)``: ``real ≈ q · 2^(e − 31)``, ``q`` ∈ [2^30, 2^31).

    TFLite's ``QuantizeMultiplier``: ``frexp`` splits ``real`` into a fraction in [½, 1) and an
    exponent; the fraction is rounded to Q31 (a fraction that rounds up to 1 bumps the exponent).
    Zero gives ``(0, 0)``.
    """
    if not math.isfinite(real) or real < 0:
        raise ConfigError(f"a requantization multiplier must be finite and ≥ 0, not {real!r}")
    if real == 0.0:
        return 0, 0
    frac, exp = math.frexp(real)
    q = round(frac * (1 << 31))
    if q == 1 << 31:
        q //= 2
        exp += 1
    if exp > 30 or exp < -31:
        raise ConfigError(f"requantization multiplier {real!r} is out of the representable range "
                          "(2^-32, 2^30)")
    return int(q), int(exp)


def saturating_rounding_doubling_high_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp's ``SaturatingRoundingDoublingHighMul`` on int32 values held in int64."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    # gemmlowp: (ab + nudge) / 2^31 truncated toward zero, nudge = 2^30 for ab ≥ 0 and 1 − 2^30
    # otherwise.  For ab < 0 the truncation is a ceiling, ⌊(ab + 1 − 2^30 + 2^31 − 1) / 2^31⌋, so
    # both signs are one floor shift: ⌊(ab + 2^30) / 2^31⌋ (ties toward +∞).
    high = (a * b + np.int64(1 << 30)) >> 31
    return np.where((a == _INT32_MIN) & (b == _INT32_MIN), np.int64(_INT32_MAX), high)


def rounding_divide_by_pot(x: np.ndarray, exponent: np.ndarray | int) -> np.ndarray:
    """gemmlowp's ``RoundingDivideByPOT``: x / 2^exponent rounded half away from zero."""
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, q: np.ndarray | int, e: np.ndarray | int) -> np.ndarray:
    """TFLite's ``MultiplyByQuantizedMultiplier``: x · q · 2^(e − 31), rounded, integers only.

    ``q`` and ``e`` broadcast against ``x`` (per output channel on the last axis).
    """
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(e, dtype=np.int64)
    left = np.maximum(e, 0)
    right = np.maximum(-e, 0)
    shifted = np.clip(x << left, _INT32_MIN, _INT32_MAX)  # int32 arithmetic saturates here
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, q), right)


def requantize(acc: np.ndarray, q: np.ndarray, e: np.ndarray, *, zero_point: int = 0,
               lo: int = -128, hi: int = 127) -> np.ndarray:
    """int32 accumulators (channels on the last axis) → clamped integers of the next layer."""
    y = multiply_by_quantized_multiplier(acc, q, e) + np.int64(zero_point)
    return np.clip(y, lo, hi)
