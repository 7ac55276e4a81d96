"""Sparsity patterns: which shapes of zero a layer's N×K weight may take.

A pattern plus importance scores gives a mask (:meth:`SparsityPattern.mask`); a mask plus an
:class:`~hwprune.config.ArrayConfig` gives cycles (:mod:`hwprune.schedule`).  Patterns are
independent of how scores are computed (criteria live in :mod:`hwprune.prune`).

Text forms (CLI, plans, SCALE-Sim columns): ``dense``, ``2:4``, ``unstructured:0.25``,
``block:4x4:0.5``, ``channel:0.5``.  Every number is a *density* (fraction kept), never a
sparsity: ``unstructured:0.25`` keeps a quarter of the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .errors import ConfigError

__all__ = ["PATTERN_SYNTAX", "SparsityPattern", "Dense", "Unstructured", "NM", "Block", "Channel",
           "parse_pattern", "PATTERNS", "topk_mask", "group_view"]


#: The text forms, for help texts and error messages.
PATTERN_SYNTAX = ("dense, N:M (e.g. 2:4, 1:4), unstructured:DENSITY, block:BHxBW:DENSITY or channel:KEEP "
                  "(every number a fraction kept)")


def _density(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ConfigError(f"{name} must be a density in (0, 1], not {value!r}")
    return float(value)


def topk_mask(scores: np.ndarray, keep: int) -> np.ndarray:
    """Boolean mask of the ``keep`` highest scores (ties broken by position, deterministic)."""
    flat = np.asarray(scores, dtype=np.float64).ravel()
    mask = np.zeros(flat.size, dtype=bool)
    if keep > 0:
        order = np.argsort(-flat, kind="stable")
        mask[order[:keep]] = True
    return mask.reshape(np.shape(scores))


def group_view(a: np.ndarray, group_size: int, fill: object = 0) -> np.ndarray:
    """An N×K matrix as (N, ⌈K/M⌉, M) groups of M consecutive K positions, the last one padded
    with ``fill``: the one definition of N:M groups along K (patterns, schedule, metrics)."""
    a = np.asarray(a)
    rows, k = a.shape
    pad = (-k) % group_size
    if pad:
        a = np.concatenate([a, np.full((rows, pad), fill, dtype=a.dtype)], axis=1)
    return a.reshape(rows, -1, group_size)


def _check_scores(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ConfigError(f"scores must be an N×K matrix, not of shape {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores contain NaN or infinity")
    return s


@dataclass(frozen=True, slots=True)
class SparsityPattern:
    """Base class: override :meth:`_mask` and :attr:`density`; ``mask`` validates the scores."""

    kind: ClassVar[str] = "base"

    @property
    def density(self) -> float:
        """Expected fraction of weights kept."""
        raise NotImplementedError

    def mask(self, scores: np.ndarray) -> np.ndarray:
        """Boolean N×K mask keeping the most important weights the pattern allows."""
        return self._mask(_check_scores(scores))

    def _mask(self, s: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __str__(self) -> str:  # the text form, parseable by parse_pattern
        raise NotImplementedError

    def keep_count(self, size: int) -> int:
        return max(1, round(self.density * size)) if size else 0


@dataclass(frozen=True, slots=True)
class Dense(SparsityPattern):
    kind: ClassVar[str] = "dense"

    @property
    def density(self) -> float:
        return 1.0

    def _mask(self, s: np.ndarray) -> np.ndarray:
        return np.ones(s.shape, dtype=bool)

    def __str__(self) -> str:
        return "dense"


@dataclass(frozen=True, slots=True)
class Unstructured(SparsityPattern):
    """Keep the ``density`` fraction of highest-scoring weights, anywhere in the matrix."""

    kind: ClassVar[str] = "unstructured"
    density_: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "density_", _density("unstructured density", self.density_))

    @property
    def density(self) -> float:
        return self.density_

    def _mask(self, s: np.ndarray) -> np.ndarray:
        return topk_mask(s, self.keep_count(s.size))

    def __str__(self) -> str:
        return f"unstructured:{self.density_:g}"


@dataclass(frozen=True, slots=True)
class NM(SparsityPattern):
    """At most ``n`` non-zeros in every group of ``m`` consecutive K positions of every row.

    A last, partial group of r < m positions keeps min(n, r) of them.
    """

    kind: ClassVar[str] = "nm"
    n: int
    m: int

    def __post_init__(self) -> None:
        for name in ("n", "m"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"N:M pattern needs positive integers, not {name}={v!r}")
        if self.n > self.m:
            raise ConfigError(f"N:M pattern needs N ≤ M, not {self.n}:{self.m}")

    @property
    def density(self) -> float:
        return self.n / self.m

    def _mask(self, s: np.ndarray) -> np.ndarray:
        rows, k = s.shape
        g = group_view(s, self.m, -np.inf)
        order = np.argsort(-g, axis=2, kind="stable")
        keep = np.zeros_like(g, dtype=bool)
        np.put_along_axis(keep, order[:, :, : self.n], True, axis=2)
        return keep.reshape(rows, -1)[:, :k]

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"


@dataclass(frozen=True, slots=True)
class Block(SparsityPattern):
    """Keep the ``density`` fraction of bh×bw blocks (rows = output channels) by summed score."""

    kind: ClassVar[str] = "block"
    bh: int
    bw: int
    density_: float

    def __post_init__(self) -> None:
        for name in ("bh", "bw"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"block size must be positive integers, not {name}={v!r}")
        object.__setattr__(self, "density_", _density("block density", self.density_))

    @property
    def density(self) -> float:
        return self.density_

    def _mask(self, s: np.ndarray) -> np.ndarray:
        rows, k = s.shape
        gr, gc = math.ceil(rows / self.bh), math.ceil(k / self.bw)
        padded = np.zeros((gr * self.bh, gc * self.bw))
        padded[:rows, :k] = s
        block_scores = padded.reshape(gr, self.bh, gc, self.bw).sum(axis=(1, 3))
        keep = topk_mask(block_scores, self.keep_count(block_scores.size))
        return np.repeat(np.repeat(keep, self.bh, axis=0), self.bw, axis=1)[:rows, :k]

    def __str__(self) -> str:
        return f"block:{self.bh}x{self.bw}:{self.density_:g}"


@dataclass(frozen=True, slots=True)
class Channel(SparsityPattern):
    """Keep the ``keep`` fraction of output channels (rows) by summed score."""

    kind: ClassVar[str] = "channel"
    keep: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep", _density("channel keep ratio", self.keep))

    @property
    def density(self) -> float:
        return self.keep

    def _mask(self, s: np.ndarray) -> np.ndarray:
        rows = topk_mask(s.sum(axis=1), self.keep_count(s.shape[0]))
        return np.repeat(rows[:, None], s.shape[1], axis=1)

    def __str__(self) -> str:
        return f"channel:{self.keep:g}"


def _parse_float(text: str, what: str, spec: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"pattern {spec!r}: {what} must be a number, not {text!r}") from None


def _parse_int(text: str, what: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"pattern {spec!r}: {what} must be an integer, not {text!r}") from None


def _parse_nm(spec: str, parts: list[str]) -> SparsityPattern:
    return NM(_parse_int(parts[0], "N", spec), _parse_int(parts[1], "M", spec))


def _parse_block(spec: str, parts: list[str]) -> SparsityPattern:
    dims = parts[1].lower().split("x") if len(parts) == 3 else []
    if len(dims) != 2:
        raise ConfigError(f"block pattern must look like block:4x4:0.5, not {spec!r}")
    return Block(_parse_int(dims[0], "block height", spec), _parse_int(dims[1], "block width", spec),
                 _parse_float(parts[2], "density", spec))


#: The pattern registry: name → parser of the text form split on ':'.
PATTERNS = {
    "dense": lambda spec, parts: Dense() if len(parts) == 1 else _bad(spec),
    "unstructured": lambda spec, parts: Unstructured(_parse_float(parts[1], "density", spec))
    if len(parts) == 2 else _bad(spec),
    "block": _parse_block,
    "channel": lambda spec, parts: Channel(_parse_float(parts[1], "keep ratio", spec))
    if len(parts) == 2 else _bad(spec),
}


def _bad(spec: str) -> SparsityPattern:
    raise ConfigError(f"unknown sparsity pattern {spec!r}; expected {PATTERN_SYNTAX}")


def parse_pattern(spec: str | SparsityPattern) -> SparsityPattern:
    """Parse the text form of a pattern (``dense``, ``2:4``, ``block:4x4:0.5`` …)."""
    if isinstance(spec, SparsityPattern):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a sparsity pattern must be text such as '2:4', not {spec!r}")
    text = spec.strip()
    parts = text.split(":")
    head = parts[0].lower()
    if head in PATTERNS:
        return PATTERNS[head](text, parts)
    if len(parts) == 2 and head.isdigit():
        return _parse_nm(text, parts)
    return _bad(spec)
