"""The layer IR: every layer hwprune reasons about is one GEMM-shaped :class:`LayerSpec`.

Y[M×N] = X[M×K] · Wᵀ per group, with W viewed as N×K.  Convolutions are lowered by im2col
(:func:`im2col`); their GEMM dimensions come from the same :class:`ConvGeometry` the lowering
uses, so the cost model, the numpy reference and the simulator agree by construction.

The K axis of a convolution is ordered (input channel, kernel row, kernel column), which is
exactly ``weight.reshape(out_channels, -1)`` in PyTorch: N:M groups run along that order.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError

if TYPE_CHECKING:
    from .patterns import SparsityPattern

__all__ = ["LayerKind", "ConvGeometry", "LayerSpec", "im2col", "conv_output_size", "same_padding",
           "symmetric_padding"]


class LayerKind(enum.StrEnum):
    """What a layer is, for reporting and for the importers' bookkeeping."""

    LINEAR = "linear"
    CONV = "conv"
    DEPTHWISE = "depthwise"
    GROUPED = "grouped"
    MATMUL = "matmul"  # activation × activation (attention scores): no weights to prune


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _pair(name: str, value: int | tuple[int, int], *, minimum: int = 1) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                             for v in pair):
        raise ConfigError(f"{name} must be an integer ≥ {minimum} or a pair of them, not {value!r}")
    return int(pair[0]), int(pair[1])


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """PyTorch's output-size rule: ⌊(size + 2·padding − dilation·(kernel − 1) − 1) / stride⌋ + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1, *,
                 upper: bool = True) -> tuple[int, int]:
    """(begin, end) padding that gives ⌈size / stride⌉ outputs: ONNX ``SAME_UPPER`` (the odd
    pixel at the end; PyTorch's ``padding='same'``, stride 1) or ``SAME_LOWER`` (at the start)."""
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + dilation * (kernel - 1) + 1 - size)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def symmetric_padding(size: int, begin: int, end: int) -> tuple[int, int]:
    """(input size, padding) for :class:`ConvGeometry`, which pads both sides alike: the smaller
    pad on both sides and the input extended by the difference (same output size and GEMM)."""
    return size + abs(end - begin), min(begin, end)


@dataclass(frozen=True, slots=True)
class ConvGeometry:
    """Geometry of a 1-D or 2-D convolution (1-D is stored as height 1).

    Create with :meth:`make`, which validates every field.
    """

    in_channels: int
    out_channels: int
    in_size: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    batch: int = 1

    @classmethod
    def make(cls, *, in_channels: int, out_channels: int, in_size: int | tuple[int, int],
             kernel: int | tuple[int, int], stride: int | tuple[int, int] = 1,
             padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
             groups: int = 1, batch: int = 1) -> ConvGeometry:
        """Validated constructor; scalars mean square kernels, strides, paddings."""
        geom = cls(_positive("in_channels", in_channels), _positive("out_channels", out_channels),
                   _pair("in_size", in_size), _pair("kernel", kernel), _pair("stride", stride),
                   _pair("padding", padding, minimum=0), _pair("dilation", dilation),
                   _positive("groups", groups), _positive("batch", batch))
        if in_channels % groups or out_channels % groups:
            raise ConfigError(f"groups={groups} must divide in_channels={in_channels} "
                              f"and out_channels={out_channels}")
        if min(geom.out_size) < 1:
            raise ConfigError(f"kernel {geom.kernel} (dilation {geom.dilation}) does not fit input "
                              f"{geom.in_size} with padding {geom.padding}")
        return geom

    @property
    def out_size(self) -> tuple[int, int]:
        return tuple(conv_output_size(s, k, st, p, d) for s, k, st, p, d in
                     zip(self.in_size, self.kernel, self.stride, self.padding, self.dilation))

    @property
    def gemm_dims(self) -> tuple[int, int, int]:
        """(M, K, N): M = batch × output positions, K = C_in/groups × kh × kw, N = C_out."""
        oh, ow = self.out_size
        return (self.batch * oh * ow, self.in_channels // self.groups * self.kernel[0] * self.kernel[1],
                self.out_channels)


def im2col(x: np.ndarray, geom: ConvGeometry) -> np.ndarray:
    """Lower a conv input (B, C, H, W) — or (B, C, L) for 1-D — to per-group GEMM operands.

    Returns an array of shape (groups, M, K) with rows ordered (batch, out_y, out_x) and columns
    ordered (channel within group, kernel row, kernel column): X_g such that
    ``X_g @ W_g.T`` is the convolution of group g with ``W_g = weight[g].reshape(N/g, K)``.
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, :, None, :]
    expected = (geom.batch, geom.in_channels, *geom.in_size)
    if x.shape != expected:
        raise ConfigError(f"input of shape {x.shape} does not match the conv geometry {expected}")
    (ph, pw), (kh, kw), (sh, sw), (dh, dw) = geom.padding, geom.kernel, geom.stride, geom.dilation
    oh, ow = geom.out_size
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    # windows[b, c, y, x, i, j] = xp[b, c, y*sh + i*dh, x*sw + j*dw]
    span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    win = np.lib.stride_tricks.sliding_window_view(xp, (span_h, span_w), axis=(2, 3))
    win = win[:, :, : (oh - 1) * sh + 1: sh, : (ow - 1) * sw + 1: sw, ::dh, ::dw]
    g = geom.groups
    cg = geom.in_channels // g
    win = win.reshape(geom.batch, g, cg, oh, ow, kh, kw)
    cols = win.transpose(1, 0, 3, 4, 2, 5, 6).reshape(g, geom.batch * oh * ow, cg * kh * kw)
    return np.ascontiguousarray(cols)


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One GEMM-shaped layer: Y[M×N] = X[M×K]·Wᵀ for each of ``groups`` independent groups.

    ``N`` is the total number of output channels (N/groups per group); ``K`` is the reduction
    length of one group.  ``weight`` (when known) is the N×K matrix, read-only.  ``sparsity`` is a
    pattern recorded by the source (a SCALE-Sim ``Sparsity`` column, a pruned checkpoint).
    Build with the classmethods; they validate.
    """

    name: str
    kind: LayerKind
    M: int
    K: int
    N: int
    groups: int = 1
    conv: ConvGeometry | None = None
    weight: np.ndarray | None = field(default=None, compare=False, repr=False)
    sparsity: SparsityPattern | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"layer name must be a non-empty string, not {self.name!r}")
        for dim in ("M", "K", "N", "groups"):
            _positive(f"{self.name}: {dim}", getattr(self, dim))
        if self.N % self.groups:
            raise ConfigError(f"{self.name}: groups={self.groups} must divide N={self.N}")
        if self.weight is not None:
            w = np.array(self.weight, dtype=np.float32)
            if w.shape != (self.N, self.K):
                raise ConfigError(f"{self.name}: weight of shape {w.shape} is not N×K = {(self.N, self.K)}")
            w.setflags(write=False)
            object.__setattr__(self, "weight", w)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def linear(cls, name: str, in_features: int, out_features: int, *, tokens: int = 1,
               weight: np.ndarray | None = None) -> LayerSpec:
        """A fully connected layer applied to ``tokens`` rows (batch × sequence)."""
        return cls(name, LayerKind.LINEAR, _positive("tokens", tokens), _positive("in_features", in_features),
                   _positive("out_features", out_features), weight=_flat(weight, out_features))

    @classmethod
    def gemm(cls, name: str, M: int, K: int, N: int, *, weight: np.ndarray | None = None,
             sparsity: SparsityPattern | None = None) -> LayerSpec:
        """A plain GEMM with a weight operand (as in a SCALE-Sim GEMM topology)."""
        return cls(name, LayerKind.LINEAR, M, K, N, weight=weight, sparsity=sparsity)

    @classmethod
    def from_conv(cls, name: str, geom: ConvGeometry, *, weight: np.ndarray | None = None,
                  sparsity: SparsityPattern | None = None) -> LayerSpec:
        """A (grouped, depthwise) convolution lowered by im2col."""
        M, K, N = geom.gemm_dims
        if geom.groups == 1:
            kind = LayerKind.CONV
        elif geom.groups == geom.in_channels and geom.out_channels % geom.in_channels == 0:
            kind = LayerKind.DEPTHWISE
        else:
            kind = LayerKind.GROUPED
        return cls(name, kind, M, K, N, geom.groups, geom, _flat(weight, N), sparsity)

    @classmethod
    def matmul(cls, name: str, M: int, K: int, N: int, *, groups: int = 1) -> LayerSpec:
        """Activation × activation (e.g. attention's Q·Kᵀ per head): ``groups`` independent GEMMs."""
        return cls(name, LayerKind.MATMUL, M, K, _positive("N", N) * _positive("groups", groups), groups)

    # -- derived ------------------------------------------------------------------------------
    @property
    def has_weights(self) -> bool:
        """False for activation × activation matmuls: nothing there to prune."""
        return self.kind is not LayerKind.MATMUL

    @property
    def n_per_group(self) -> int:
        return self.N // self.groups

    @property
    def macs(self) -> int:
        """Dense multiply-accumulates of the layer."""
        return self.M * self.K * self.N

    @property
    def params(self) -> int:
        return self.N * self.K if self.has_weights else 0

    def with_weight(self, weight: np.ndarray | None) -> LayerSpec:
        """The same layer carrying ``weight`` (N×K or the layer's native weight shape)."""
        return _replace(self, weight=_flat(weight, self.N))

    def with_sparsity(self, sparsity: SparsityPattern | None) -> LayerSpec:
        return _replace(self, sparsity=sparsity)


def _flat(weight: np.ndarray | None, n: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float32)
    return w.reshape(n, -1) if w.ndim != 2 else w


def _replace(spec: LayerSpec, **changes: object) -> LayerSpec:
    from dataclasses import replace
    return replace(spec, **changes)
