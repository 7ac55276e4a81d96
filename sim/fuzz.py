"""Random layers that break schedules, for property tests and ``benchmarks/rtl_fuzz.py``.

:func:`random_case` draws a layer; :func:`pass_sized` shrinks an array's memories so that such
layers run in one to a dozen passes (K split included), and :func:`random_dma` draws the data
movement (buffering, DRAM bandwidth), which changes the DMA program but not the design: one
Verilator build serves every draw.
"""

from __future__ import annotations

import numpy as np

from hwprune.config import ArrayConfig
from hwprune.ir import LayerKind, LayerSpec
from hwprune.patterns import Dense, SparsityPattern

__all__ = ["random_case", "random_dma", "pass_sized"]

#: DRAM bandwidths :func:`random_dma` draws from (bytes per cycle): slower and faster than the
#: host port's word per cycle, and fractional
DRAM_BYTES_PER_CYCLE = (0.75, 2.0, 5.0, 64.0)


def random_case(array: ArrayConfig, pattern: SparsityPattern, seed: int, *, max_m: int = 9,
                max_k: int = 19, max_n: int = 7) -> tuple[LayerSpec, np.ndarray, np.ndarray]:
    """A random layer (M ≤ ``max_m``, K ≤ ``max_k``, N/groups ≤ ``max_n``) with its integer
    weights and activations, drawn from ``seed``, with the features that break schedules:
    padding in every dimension, conv groups, under-filled N:M groups, all-zero K groups
    (skipped), all-zero channels (packed away), a whole zero conv group (K′ = 0 folds) and
    extreme values (−2^(b−1) everywhere).  Activations are (M, K) or (groups, M, K)."""
    rng = np.random.default_rng(seed)
    wlim, alim = 1 << (array.weight_bits - 1), 1 << (array.act_bits - 1)
    groups = 2 if rng.random() < 0.2 else 1
    M = int(rng.integers(1, max_m + 1))
    K = int(rng.integers(1, max_k + 1))
    npg = int(rng.integers(1, max_n + 1))
    layer = LayerSpec(f"case{seed}", LayerKind.GROUPED if groups > 1 else LayerKind.LINEAR, M, K,
                      npg * groups, groups)
    w = rng.integers(-wlim, wlim, size=(layer.N, K))
    x = rng.integers(-alim, alim, size=(groups, M, K))
    if rng.random() < 0.15:                              # extreme values
        w[:], x[:] = -wlim, -alim
    if rng.random() < 0.5:                               # under-filled groups
        w[rng.random(w.shape) < 0.4] = 0
    if rng.random() < 0.4:                               # all-zero K groups (skipped)
        gs = array.group_size
        for kg in range(0, K, gs):
            if rng.random() < 0.5:
                w[:, kg:kg + gs] = 0
    if rng.random() < 0.3:                               # all-zero channels (packed away) …
        w[: min(array.cols, layer.N)] = 0
    if groups > 1 and rng.random() < 0.3:                # … or a whole zero conv group (K′ = 0 folds)
        w[:npg] = 0
    if not isinstance(pattern, Dense):
        w = np.where(pattern.mask(np.abs(w) + rng.random(w.shape) * 1e-3), w, 0)
    return layer, w, (x[0] if groups == 1 and rng.random() < 0.5 else x)


def pass_sized(array: ArrayConfig, *, weights: int = 14, acts: int = 12, folds: int = 8) -> ArrayConfig:
    """``array`` with memories of ``weights`` weight words, ``acts`` activation words (as laid
    out for N < M; a dense design's are narrower, so it gets more) and ``folds`` folds of
    outputs: :func:`random_case`'s layers then need from one to a dozen passes, and a dense
    tile's K may not fit one bank (K split)."""
    R, C, M = array.rows, array.cols, array.group_size
    bits = {"weight_sram_kib": weights * C * (array.weight_bits + array.index_bits),
            "act_sram_kib": acts * R * M * array.act_bits,
            "out_sram_kib": folds * R * C * array.acc_bits}
    return array.replace(**{key: b / 8192 for key, b in bits.items()})


def random_dma(array: ArrayConfig, seed: int) -> ArrayConfig:
    """``array`` single- or double-buffered, at a DRAM bandwidth of :data:`DRAM_BYTES_PER_CYCLE`,
    drawn from ``seed`` (the design, hence its Verilator build, is unchanged)."""
    rng = np.random.default_rng([seed, 1])
    return array.replace(double_buffer=bool(rng.integers(2)),
                         dram_bytes_per_cycle=float(rng.choice(DRAM_BYTES_PER_CYCLE)))
