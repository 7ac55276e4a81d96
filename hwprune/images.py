"""Memory map of the generated array and the images that load a layer into it.

The RTL (:mod:`hwprune.rtl`) and this module share one :class:`MemoryMap`, computed from the
:class:`~hwprune.config.ArrayConfig` and the issue width N alone, so one bitstream (one Verilator
build) serves every layer.  A layer becomes *data* by walking :meth:`Schedule.folds` once:

``weights``  one word per issued slot, in fold order, weight tiles stored once (row folds of the
             same column tile reuse them): C × (value, index); dense arrays (N = M) store no index.
``stream``   the schedule stream, one word per slot (same address as ``weights``): the
             activation word to read, as an offset inside the row tile's activation block —
             the K group for N < M, the K position for dense.
``acts``     per (conv group, row tile) a block of activation words: R × window, window = the M
             values of one K group (N < M) or one K position (dense); zero-padded rows and K.
``desc``     one fold descriptor per fold: weight base, K′ (slots issued), activation base, last.
``outputs``  R words per fold (rows of the tile), C × acc_bits each, written by the drain.

Every word is ``repeat`` copies of its fields, least significant first (``Field`` order), and
is written as one ``$readmemh`` line of ⌈width/4⌉ hex digits.  More formats register in
:data:`IMAGE_FORMATS`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import ArrayConfig
from .errors import ConfigError, ExportError, UnsupportedLayerError
from .io import write_bytes, write_text
from .ir import LayerKind, LayerSpec
from .patterns import SparsityPattern
from .schedule import Fold, Schedule, make_schedule

__all__ = [
    "IMAGE_FORMATS",
    "MEMORIES",
    "Field",
    "LayerImages",
    "MemoryLayout",
    "MemoryMap",
    "PassImages",
    "bank_base",
    "bank_words",
    "build_images",
    "build_pass_images",
    "checked_operands",
    "decode_outputs",
    "padded_outputs",
    "pass_schedule",
    "scatter_outputs",
    "unpad_outputs",
    "memory_map",
    "read_images",
    "reference_outputs",
    "wrap",
    "write_images",
]

#: memories in the order the image files are written
MEMORIES = ("weights", "stream", "acts", "desc", "outputs")
#: memories a layer loads, numbered as the RTL's host write port selects them (``host_mem``);
#: the drain writes ``outputs``
LOADED = tuple(name for name in MEMORIES if name != "outputs")


def _clog2(n: int) -> int:
    return max(1, math.ceil(math.log2(n))) if n > 1 else 1


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a memory word: ``bits`` wide, two's complement when ``signed``."""

    name: str
    bits: int
    signed: bool = False


@dataclass(frozen=True, slots=True)
class MemoryLayout:
    """A memory: ``depth`` words, each ``repeat`` × (fields, LSB first)."""

    name: str
    depth: int
    fields: tuple[Field, ...]
    repeat: int = 1

    @property
    def element_bits(self) -> int:
        return sum(f.bits for f in self.fields)

    @property
    def width(self) -> int:
        return self.repeat * self.element_bits

    @property
    def addr_bits(self) -> int:
        return _clog2(self.depth)

    @property
    def word_bytes(self) -> int:
        """Bytes of one word in a binary image: ⌈width / 8⌉, little-endian."""
        return math.ceil(self.width / 8)

    def to_bytes(self, words: list[int]) -> bytes:
        """Words as a raw binary image (each in :attr:`word_bytes`, little-endian, no header)."""
        n = self.word_bytes
        return b"".join(w.to_bytes(n, "little") for w in words)

    def from_bytes(self, data: bytes) -> list[int]:
        """Inverse of :meth:`to_bytes`."""
        n = self.word_bytes
        if len(data) % n:
            raise ExportError(f"{self.name}: {len(data)} bytes is not a whole number of {n}-byte words")
        return [int.from_bytes(data[i:i + n], "little") for i in range(0, len(data), n)]

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "depth": self.depth, "width": self.width, "repeat": self.repeat,
                "fields": [{"name": f.name, "bits": f.bits, "signed": f.signed} for f in self.fields]}

    def pack(self, values: np.ndarray) -> list[int]:
        """Words from ``values`` of shape (words, repeat, fields) (or (words, repeat) for one field)."""
        v = np.asarray(values, dtype=np.int64)
        if v.ndim == 2:
            v = v[:, :, None]
        if v.shape[1:] != (self.repeat, len(self.fields)):
            raise ExportError(f"{self.name}: values of shape {v.shape} do not match "
                              f"(words, {self.repeat}, {len(self.fields)})")
        n = v.shape[0]
        live = [(e, i, f) for e in range(self.repeat) for i, f in enumerate(self.fields) if f.bits]
        for f_i, f in enumerate(self.fields):
            col = v[:, :, f_i]
            lo, hi = (-(1 << (f.bits - 1)), (1 << (f.bits - 1))) if f.signed else (0, 1 << f.bits)
            if f.bits and col.size and (col.min() < lo or col.max() >= hi):
                raise ExportError(f"{self.name}.{f.name}: value out of range for {f.bits} bits")
        if not live or n == 0:
            return [0] * n
        if all(f.bits in (8, 16, 32, 64) for _, _, f in live):
            # every field a whole number of bytes: the word is the fields' little-endian bytes
            raw = np.concatenate([v[:, e, i].astype(f"<i{f.bits // 8}").view(np.uint8).reshape(n, -1)
                                  for e, i, f in live], axis=1)
        else:
            planes = [((v[:, e, i][:, None] >> np.arange(f.bits, dtype=np.int64)) & 1).astype(np.uint8)
                      for e, i, f in live]
            raw = np.packbits(np.concatenate(planes, axis=1), axis=1, bitorder="little")
        data, step = memoryview(raw.tobytes()), raw.shape[1]
        return [int.from_bytes(data[k: k + step], "little") for k in range(0, n * step, step)]

    def unpack(self, words: list[int]) -> np.ndarray:
        """Inverse of :meth:`pack`: (words, repeat, fields) as Python ints in an object array."""
        out = np.zeros((len(words), self.repeat, len(self.fields)), dtype=object)
        shift = 0
        for e in range(self.repeat):
            for i, f in enumerate(self.fields):
                mask = (1 << f.bits) - 1
                for n, w in enumerate(words):
                    x = (w >> shift) & mask
                    if f.signed and f.bits and x >> (f.bits - 1):
                        x -= 1 << f.bits
                    out[n, e, i] = x
                shift += f.bits
        return out


@dataclass(frozen=True, slots=True)
class MemoryMap:
    """Geometry of one design: array shape, issue width and the five memories."""

    rows: int
    cols: int
    group_size: int
    slots: int
    acc_bits: int
    memories: Mapping[str, MemoryLayout]

    @property
    def dense(self) -> bool:
        return self.slots == self.group_size

    @property
    def window(self) -> int:
        """Activations a PE holds per slot: the M values of a group, or one for a dense array."""
        return 1 if self.dense else self.group_size

    @property
    def max_folds(self) -> int:
        return self.memories["desc"].depth

    def __getitem__(self, name: str) -> MemoryLayout:
        return self.memories[name]

    def to_dict(self) -> dict[str, object]:
        return {"rows": self.rows, "cols": self.cols, "group_size": self.group_size,
                "slots": self.slots, "acc_bits": self.acc_bits, "window": self.window,
                "memories": {k: v.to_dict() for k, v in self.memories.items()}}


def memory_map(array: ArrayConfig, slots: int) -> MemoryMap:
    """The memories of the design for ``array`` issuing ``slots`` per group, sized by its SRAMs."""
    if not isinstance(array, ArrayConfig):
        raise ConfigError(f"array must be an ArrayConfig, not {array!r}")
    if slots not in array.slot_options:
        raise ConfigError(f"array {array.name!r} issues N in {array.slot_options} per group, not {slots!r}")
    R, C, M = array.rows, array.cols, array.group_size
    dense = slots == M
    ib = 0 if dense else array.index_bits
    window = 1 if dense else M
    wb, ab, accb = array.weight_bits, array.act_bits, array.acc_bits

    def depth(kib: float, width: int, what: str) -> int:
        d = int(kib * 8192) // width
        if d < 1:
            raise ConfigError(f"array {array.name!r}: {what} of {kib} KiB holds no {width}-bit word")
        return d

    w_depth = depth(array.weight_sram_kib, C * (wb + ib), "weight_sram_kib")
    a_depth = depth(array.act_sram_kib, R * window * ab, "act_sram_kib")
    o_depth = depth(array.out_sram_kib, C * accb, "out_sram_kib")
    folds = max(1, o_depth // R)
    weights = MemoryLayout("weights", w_depth, (Field("value", wb, True), Field("index", ib)), C)
    stream = MemoryLayout("stream", w_depth, (Field("act_offset", _clog2(a_depth)),))
    acts = MemoryLayout("acts", a_depth, (Field("act", ab, True),), R * window)
    desc = MemoryLayout("desc", folds, (Field("w_base", _clog2(w_depth)), Field("k_prime", _clog2(w_depth + 1)),
                                        Field("a_base", _clog2(a_depth)), Field("last", 1)))
    outputs = MemoryLayout("outputs", folds * R, (Field("psum", accb, True),), C)
    return MemoryMap(R, C, M, slots, accb, {"weights": weights, "stream": stream, "acts": acts,
                                            "desc": desc, "outputs": outputs})


def wrap(x: np.ndarray, bits: int) -> np.ndarray:
    """Two's-complement wrap of int64 values to ``bits`` (the accumulator's overflow semantics)."""
    x = np.asarray(x, dtype=np.int64)
    if bits >= 64:
        return x
    half = np.int64(1) << np.int64(bits - 1)
    return ((x + half) & ((np.int64(1) << np.int64(bits)) - 1)) - half


def reference_outputs(weights: np.ndarray, acts: np.ndarray, groups: int, acc_bits: int) -> np.ndarray:
    """The numpy reference: per group X_g · W_gᵀ in int64, wrapped to ``acc_bits``; (groups, M, N/groups)."""
    w = np.asarray(weights, dtype=np.int64)
    x = np.asarray(acts, dtype=np.int64)
    npg = w.shape[0] // groups
    bound = int(np.abs(w).max(initial=0)) * int(np.abs(x).max(initial=0)) * w.shape[1]
    if bound < 2**53:
        # every partial sum is an integer below 2^53: float64 (BLAS) is exact and much faster
        out = np.stack([np.rint(x[g].astype(np.float64) @ w[g * npg:(g + 1) * npg].T.astype(np.float64))
                        for g in range(groups)]).astype(np.int64)
    else:
        out = np.stack([x[g] @ w[g * npg:(g + 1) * npg].T for g in range(groups)])
    return wrap(out, acc_bits)


@dataclass(frozen=True, slots=True)
class LayerImages:
    """A layer laid out for one design: the words of every memory plus the expected outputs."""

    layer: str
    schedule: Schedule
    map: MemoryMap
    words: Mapping[str, list[int]]          # MEMORIES → words (outputs: the expected words)
    expected: np.ndarray                    # (groups, M, n_out) int64, the reference outputs
    meta: Mapping[str, object] = field(default_factory=dict)

    @property
    def folds(self) -> int:
        return len(self.words["desc"])


def _check_int8(name: str, a: np.ndarray, bits: int) -> np.ndarray:
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ConfigError(f"{name} must be integers (quantize first), not {a.dtype}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if a.size and (a.min() < lo or a.max() > hi):
        raise ConfigError(f"{name} must lie in [{lo}, {hi}] for {bits}-bit operands, "
                          f"found [{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def build_images(layer: LayerSpec, weights: np.ndarray, acts: np.ndarray, array: ArrayConfig,
                 pattern: SparsityPattern | None = None) -> LayerImages:
    """Lay ``layer`` out for the array: walk ``Schedule.folds()`` and fill every memory.

    Parameters
    ----------
    layer : LayerSpec
        The layer (its GEMM shape and conv groups are used).
    weights : ndarray
        N×K integer weights; their non-zeros are the mask the schedule is built from.  For an
        activation×activation matmul (no weights of its own) the second operand, run dense.
    acts : ndarray
        im2col'd integer activations, (groups, M, K) or (M, K) for one group.
    array : ArrayConfig
    pattern : SparsityPattern, optional
        Chooses the issue width (e.g. 2:4); defaults to the layer's own, else dense.

    Raises
    ------
    UnsupportedLayerError
        When the layer does not fit the memories sized by the array config.
    """
    w, x = checked_operands(layer, weights, acts, array)
    # an activation×activation matmul (attention) takes its second operand (K or V) in the weight
    # memory, written at run time: its zeros are not known when the schedule is laid out, so
    # every group is issued on the dense design (as the cost model counts it)
    sched = make_schedule(layer, array, pattern, w != 0 if layer.has_weights else None)
    mm = memory_map(array, sched.slots)
    words = _lay_out(layer, w, x, sched, mm, {}, lambda need: _check_fits(layer, array, mm, need))
    expected = reference_outputs(w, x, layer.groups, array.acc_bits)
    columns = _column_channels(sched, layer.n_per_group, mm.cols)
    words["outputs"] = mm["outputs"].pack(_output_words(sched, mm, _pad_outputs(sched, mm, expected, columns)))
    meta = {"layer": layer.name, "M": layer.M, "K": layer.K, "N": layer.N, "groups": layer.groups,
            "slots": mm.slots, "group_size": mm.group_size, "folds": sched.folds_count,
            "pattern": str(pattern) if pattern is not None else None}
    return LayerImages(layer.name, sched, mm, words, expected, meta)


def _lay_out(layer: LayerSpec, w: np.ndarray, x: np.ndarray, sched: Schedule, mm: MemoryMap,
             base: Mapping[str, int], fits: Callable[[dict[str, int]], None],
             memo: dict | None = None, keys: tuple[object, object] = (None, None)) -> dict[str, list[int]]:
    """The words of every loaded memory for ``sched`` (walked once), descriptors pointing at
    the ``base`` addresses (memory → first address, 0 when absent); ``fits`` is called first
    with the words each memory needs (outputs included) and raises when they do not fit.

    With ``memo``, the weight tiles (weights and stream words) are kept under ``keys[0]`` and
    the activation words under ``keys[1]``, and a later call with the same key takes them from
    there (the passes of one layer that share their columns or their rows lay them out once)."""
    memo = {} if memo is None else memo

    def weights() -> tuple[_WeightTiles, list[int], list[int]]:
        tiles = _weight_tiles(layer, w, sched, mm, _column_channels(sched, layer.n_per_group, mm.cols))
        return (tiles, mm["weights"].pack(np.stack([tiles.values, tiles.index], axis=2)),
                mm["stream"].pack(tiles.offsets[:, None]))

    tiles, w_words, s_words = _cached(memo, ("weights", keys[0]), weights)
    a_block = sched.k_groups if not mm.dense else layer.K
    fits({"weights": tiles.slots, "acts": layer.groups * sched.row_tiles * a_block,
          "desc": sched.folds_count, "outputs": sched.folds_count * mm.rows})
    desc = _descriptors(sched, tiles.base, a_block)
    desc[:, 0] += base.get("weights", 0)
    desc[:, 2] += base.get("acts", 0)
    acts = _cached(memo, ("acts", keys[1]), lambda: mm["acts"].pack(_activation_words(layer, x, sched, mm)))
    return {"weights": w_words, "stream": s_words, "acts": acts, "desc": mm["desc"].pack(desc[:, None, :])}


def _cached(memo: dict, key: tuple[str, object], make: Callable[[], object]):
    """``memo[key]``, made by ``make()`` the first time; made every time (and not kept) when
    the key's second part is ``None``."""
    if key[1] is None:
        return make()
    if key not in memo:
        memo[key] = make()
    return memo[key]


def checked_operands(layer: LayerSpec, weights: np.ndarray, acts: np.ndarray,
                     array: ArrayConfig) -> tuple[np.ndarray, np.ndarray]:
    """Checked int64 operands: weights N×K, activations (groups, M, K) (a 2-D (M, K) is one group).

    Raises
    ------
    ConfigError
        Not integers, out of the array's operand range, or not the layer's shapes.
    """
    w = _check_int8("weights", weights, array.weight_bits)
    x = _check_int8("activations", acts, array.act_bits)
    if x.ndim == 2:
        x = x[None]
    if w.shape != (layer.N, layer.K):
        raise ConfigError(f"{layer.name}: weights of shape {w.shape} are not N×K = {(layer.N, layer.K)}")
    if x.shape != (layer.groups, layer.M, layer.K):
        raise ConfigError(f"{layer.name}: activations of shape {x.shape} are not "
                          f"(groups, M, K) = {(layer.groups, layer.M, layer.K)}")
    return w, x


def _column_channels(sched: Schedule, npg: int, cols: int) -> np.ndarray:
    """The original output channel (within its conv group) of every array column, per conv
    group: shape (groups, col_tiles × C), −1 for a padding column.  Surviving channels are
    packed (``Schedule.kept_channels``); the one map weights, outputs and decoding all read."""
    width = sched.col_tiles * cols
    out = np.full((sched.groups, width), -1, dtype=np.int64)
    if sched.kept_channels is None:
        n = min(npg, width)
        out[:, :n] = np.arange(n)
    else:
        kept = sched.kept_channels
        out[:, : kept.shape[1]] = kept
    return out


@dataclass(frozen=True, slots=True)
class _WeightTiles:
    """Weight slots of every weight tile in fold order: (slots, C) values and indices, the
    stream word of every slot, and each tile's first slot by (conv group, column tile)."""

    values: np.ndarray
    index: np.ndarray
    offsets: np.ndarray
    base: Mapping[tuple[int, int], int]

    @property
    def slots(self) -> int:
        return self.values.shape[0]


def _weight_tiles(layer: LayerSpec, w: np.ndarray, sched: Schedule, mm: MemoryMap,
                  columns: np.ndarray) -> _WeightTiles:
    """Walk the folds once; a weight tile is stored the first time a fold uses it (row folds of
    the same column tile reuse it)."""
    C = mm.cols
    npg = layer.n_per_group
    kpad = sched.k_groups * mm.group_size
    values, index, offsets, base, n = [], [], [], {}, 0
    for fold in sched.folds():
        key = (fold.group, fold.col_tile)
        if key in base:
            continue
        base[key] = n
        chans = columns[fold.group, fold.col_start: fold.col_start + C]
        tile = np.zeros((C, kpad), dtype=np.int64)
        live = chans >= 0
        tile[live, : layer.K] = w[fold.group * npg + chans[live]]
        v, i, o = _tile_slots(tile.reshape(C, sched.k_groups, mm.group_size), fold, mm)
        values.append(v.T)
        index.append(i.T)
        offsets.append(o)
        n += fold.k_prime
    empty = np.zeros((0, C), dtype=np.int64)
    return _WeightTiles(np.concatenate(values) if values else empty,
                        np.concatenate(index) if index else empty,
                        np.concatenate(offsets) if offsets else np.zeros(0, dtype=np.int64), base)


def _tile_slots(tile: np.ndarray, fold: Fold, mm: MemoryMap) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The issued slots of one (C, k_groups, M) weight tile: values and indices (C, K′) and the
    stream word of each slot (the K position for a dense array, else the K group).

    An N:M array stores a group's non-zeros first, in K order, each with its position in the
    group; the remaining slots are zero padding."""
    sel_kg = np.repeat(fold.k_groups, fold.k_slots)
    sel_j = (np.concatenate([np.arange(n) for n in fold.k_slots]) if fold.k_slots.size
             else np.zeros(0, dtype=np.int64))
    if mm.dense:
        vals = tile[:, sel_kg, sel_j]
        return vals, np.zeros_like(vals), sel_kg * mm.group_size + sel_j
    C, kg_n, _ = tile.shape
    nz = tile != 0
    rank = np.cumsum(nz, axis=2) - 1
    v = np.zeros((C, kg_n, mm.slots), dtype=np.int64)
    ix = np.zeros((C, kg_n, mm.slots), dtype=np.int64)
    c_i, g_i, p_i = np.nonzero(nz)
    r_i = rank[c_i, g_i, p_i]
    v[c_i, g_i, r_i] = tile[c_i, g_i, p_i]
    ix[c_i, g_i, r_i] = p_i
    return v[:, sel_kg, sel_j], ix[:, sel_kg, sel_j], sel_kg


def _check_fits(layer: LayerSpec, array: ArrayConfig, mm: MemoryMap, need: Mapping[str, int]) -> None:
    """Refuse a layer whose words exceed a memory, naming the memory and its config key."""
    for name, words in need.items():
        if words > mm[name].depth:
            kib = {"weights": "weight_sram_kib", "acts": "act_sram_kib"}.get(name, "out_sram_kib")
            raise UnsupportedLayerError(
                f"{layer.name}: needs {words} {name} words but array {array.name!r} holds "
                f"{mm[name].depth} ({kib} = {getattr(array, kib)}); use a larger array config or "
                "split the layer")


def _activation_words(layer: LayerSpec, x: np.ndarray, sched: Schedule, mm: MemoryMap) -> np.ndarray:
    """Activation blocks per (conv group, row tile): one word per K position (dense) or K group,
    R rows × window, zero-padded."""
    R, Mg, kg_n = mm.rows, mm.group_size, sched.k_groups
    kpad = kg_n * Mg
    xp = np.zeros((layer.groups, sched.row_tiles * R, kpad), dtype=np.int64)
    xp[:, : layer.M, : layer.K] = x
    if mm.dense:
        blocks = xp.reshape(layer.groups, sched.row_tiles, R, kpad)[..., : layer.K]
        return blocks.transpose(0, 1, 3, 2).reshape(-1, R)                  # (.., K, R)
    blocks = xp.reshape(layer.groups, sched.row_tiles, R, kg_n, Mg)
    return blocks.transpose(0, 1, 3, 2, 4).reshape(-1, R * Mg)              # (.., kg, R, M)


def _descriptors(sched: Schedule, tile_base: Mapping[tuple[int, int], int], a_block: int) -> np.ndarray:
    """One (w_base, k_prime, a_base, last) row per fold, in fold order (conv group, column
    tile, row tile: :meth:`Schedule.folds`), computed for all folds at once."""
    G, CT, RT = sched.groups, sched.col_tiles, sched.row_tiles
    base = np.array([[tile_base[(g, tc)] for tc in range(CT)] for g in range(G)], dtype=np.int64).reshape(G, CT)
    g, tc, tr = (i.ravel() for i in np.indices((G, CT, RT)))
    desc = np.stack([base[g, tc], sched.tile_k_prime()[g, tc], (g * RT + tr) * a_block, np.zeros_like(g)], axis=1)
    if len(desc):
        desc[-1, 3] = 1
    return desc.astype(np.int64)


def _fold_tiles(sched: Schedule, mm: MemoryMap) -> tuple[int, int, int, int, int]:
    """A padded output grid (groups, row tiles × R, column tiles × C) split into fold tiles:
    (groups, row tiles, R, column tiles, C), whose axes (0, 3, 1, 2, 4) are in fold order."""
    return sched.groups, sched.row_tiles, mm.rows, sched.col_tiles, mm.cols


def _pad_outputs(sched: Schedule, mm: MemoryMap, y: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(groups, M, n_per_group) outputs placed on the padded grid of row × column tiles."""
    ypad = np.zeros((sched.groups, sched.row_tiles * mm.rows, sched.col_tiles * mm.cols), dtype=np.int64)
    live = columns >= 0
    for g in range(sched.groups):
        ypad[g, : sched.M, live[g]] = y[g][:, columns[g, live[g]]].T
    return ypad


def _output_words(sched: Schedule, mm: MemoryMap, ypad: np.ndarray) -> np.ndarray:
    """R words of C outputs per fold, in fold order (what the drain writes)."""
    return ypad.reshape(_fold_tiles(sched, mm)).transpose(0, 3, 1, 2, 4).reshape(-1, mm.cols)


def decode_outputs(words: list[int], images: LayerImages) -> np.ndarray:
    """Output-memory words (fold order) back to (groups, M, n_out) int64, padding dropped."""
    sched, mm = images.schedule, images.map
    ypad = padded_outputs(sched, mm)
    scatter_outputs(ypad, words, sched, mm)
    return unpad_outputs(ypad, sched, mm, images.expected.shape[2])


def padded_outputs(sched: Schedule, mm: MemoryMap) -> np.ndarray:
    """Zero int64 outputs of ``sched`` on its padded grid: (groups, row tiles × R, column tiles × C),
    compacted columns (what :func:`scatter_outputs` fills and :func:`unpad_outputs` reads)."""
    return np.zeros((sched.groups, sched.row_tiles * mm.rows, sched.col_tiles * mm.cols), dtype=np.int64)


def scatter_outputs(ypad: np.ndarray, words: list[int], sched: Schedule, mm: MemoryMap, *,
                    group: int = 0, row: int = 0, col: int = 0) -> None:
    """Add the output words of a run of ``sched`` (R per fold, fold order) into ``ypad`` in place,
    its (conv group 0, row 0, column 0) at (``group``, ``row``, ``col``), wrapped to the
    accumulator width: partial sums over K chunks add up exactly as the array would."""
    R, C = mm.rows, mm.cols
    n_folds = sched.folds_count
    if len(words) < n_folds * R:
        raise ExportError(f"{len(words)} output words, expected {n_folds * R}")
    G, RT, _, CT, _ = _fold_tiles(sched, mm)
    vals = _unpack_signed(words[: n_folds * R], mm["outputs"])
    grid = vals.reshape(G, CT, RT, R, C).transpose(0, 2, 3, 1, 4).reshape(G, RT * R, CT * C)
    part = ypad[group: group + G, row: row + RT * R, col: col + CT * C]
    part[:] = wrap(part + grid, mm.acc_bits)


def unpad_outputs(ypad: np.ndarray, sched: Schedule, mm: MemoryMap, npg: int) -> np.ndarray:
    """(groups, M, ``npg``) outputs from the padded grid, compacted columns back to channels."""
    columns = _column_channels(sched, npg, mm.cols)
    out = np.zeros((sched.groups, sched.M, npg), dtype=np.int64)
    for g in range(sched.groups):
        live = columns[g] >= 0
        out[g][:, columns[g, live]] = ypad[g, : sched.M, live].T
    return out


# -- passes ------------------------------------------------------------------------------------

def bank_words(mm: MemoryMap, name: str, double_buffer: bool) -> int:
    """Words of one bank of memory ``name``: the whole memory single-buffered, ⌊depth/2⌋ double."""
    depth = mm[name].depth
    return depth // 2 if double_buffer else depth


def bank_base(mm: MemoryMap, bank: int, double_buffer: bool) -> dict[str, int]:
    """First address of ``bank`` (0 or 1) in every memory: 0 single-buffered, else
    ``bank`` × ⌊depth/2⌋ (weights and stream share addresses: same depth, same base)."""
    if bank not in (0, 1) or (bank and not double_buffer):
        raise ConfigError(f"bank must be 0{' or 1' if double_buffer else ''}, not {bank!r}")
    return {name: bank * bank_words(mm, name, True) if double_buffer else 0 for name in MEMORIES}


def pass_schedule(sched: Schedule, *, group: int, row_tiles: range, col_tiles: range,
                  k_groups: range) -> Schedule:
    """The schedule of one pass: the layer schedule ``sched`` restricted to conv group ``group``,
    its row tiles, column tiles (of compacted channels) and K groups, as a one-group layer.

    Its folds are the layer's folds of that rectangle, in the same order, issuing the same
    groups (the issued groups inside the K range); the columns keep the layer's channels."""
    R, C, gs = sched.rows, sched.cols, sched.group_size
    for what, r, n in (("row_tiles", row_tiles, sched.row_tiles), ("col_tiles", col_tiles, sched.col_tiles),
                       ("k_groups", k_groups, sched.k_groups)):
        if r.step != 1 or not 0 <= r.start < r.stop <= n:
            raise ConfigError(f"pass {what} {r!r} is not a non-empty range inside 0..{n}")
    if not 0 <= group < sched.groups:
        raise ConfigError(f"pass group {group!r} is not in 0..{sched.groups - 1}")
    r0, r1 = row_tiles.start * R, min(row_tiles.stop * R, sched.M)
    c0, c1 = col_tiles.start * C, min(col_tiles.stop * C, sched.n_out)
    k0, k1 = k_groups.start * gs, min(k_groups.stop * gs, sched.K)
    kept = _column_channels(sched, sched.n_out, C)[group: group + 1, c0:c1]
    issued = sched.issued[group: group + 1, col_tiles.start: col_tiles.stop, k_groups.start: k_groups.stop]
    return Schedule(R, C, r1 - r0, k1 - k0, c1 - c0, 1, gs, sched.slots, issued, sched.expected_issue,
                    kept, sched.fold_overlap)


@dataclass(frozen=True, slots=True)
class PassImages:
    """One pass laid out in one bank: the words of every loaded memory (:data:`LOADED`, each
    from ``base[name]``), the pass's own schedule, and where its outputs go in the layer
    (conv ``group``, first output ``row``, first compacted column ``col``)."""

    schedule: Schedule
    words: Mapping[str, list[int]]
    base: Mapping[str, int]
    group: int
    row: int
    col: int

    @property
    def output_words(self) -> int:
        """Words the pass's drain writes from ``base["outputs"]`` on: R per fold."""
        return self.schedule.folds_count * self.schedule.rows


def build_pass_images(layer: LayerSpec, weights: np.ndarray, acts: np.ndarray, array: ArrayConfig,
                      sched: Schedule, *, group: int, row_tiles: range, col_tiles: range,
                      k_groups: range, bank: int = 0, double_buffer: bool = False,
                      memo: dict | None = None) -> PassImages:
    """Lay one pass of ``layer`` out at the base addresses of ``bank``.

    ``sched`` is the layer's schedule (``build_images(...).schedule`` or the cost model's); the
    pass is the rectangle of :func:`pass_schedule`.  Weights, stream and activation addresses
    in the descriptors are absolute (the bank's bases added), so the design runs it from
    ``desc_base = base["desc"]`` with outputs at ``out_base = base["outputs"]``.

    ``memo`` (a dict, empty at first) is for the passes of one layer with the same operands, as
    :func:`hwprune.sim.dma.build_program` lays them out: the operands are checked once, and the
    words passes have in common are laid out once (weights and stream per group, column tiles
    and K range; activations per group, row tiles and K range).

    Raises
    ------
    UnsupportedLayerError
        The pass's words exceed one bank of a memory.
    """
    memo = {} if memo is None else memo
    w, x = _cached(memo, ("operands", "checked"), lambda: checked_operands(layer, weights, acts, array))
    mm = memory_map(array, sched.slots)
    sub = pass_schedule(sched, group=group, row_tiles=row_tiles, col_tiles=col_tiles, k_groups=k_groups)
    npg = layer.n_per_group
    r0, k0 = row_tiles.start * mm.rows, k_groups.start * mm.group_size
    spec = LayerSpec(f"{layer.name}[g{group} r{row_tiles.start}:{row_tiles.stop} "
                     f"c{col_tiles.start}:{col_tiles.stop} k{k_groups.start}:{k_groups.stop}]",
                     LayerKind.LINEAR, sub.M, sub.K, npg)
    base = bank_base(mm, bank, double_buffer)

    def fits(need: dict[str, int]) -> None:
        for name, n in need.items():
            if n > bank_words(mm, name, double_buffer):
                raise UnsupportedLayerError(f"{spec.name}: needs {n} {name} words but a bank of array "
                                            f"{array.name!r} holds {bank_words(mm, name, double_buffer)}")

    k = (k_groups.start, k_groups.stop)
    words = _lay_out(spec, w[group * npg:(group + 1) * npg, k0: k0 + sub.K],
                     x[group: group + 1, r0: r0 + sub.M, k0: k0 + sub.K], sub, mm, base, fits, memo,
                     ((group, col_tiles.start, col_tiles.stop, *k), (group, row_tiles.start, row_tiles.stop, *k)))
    return PassImages(sub, words, base, group, r0, col_tiles.start * mm.cols)


def _unpack_signed(words: list[int], layout: MemoryLayout) -> np.ndarray:
    """Fast path for single-field words of ≤ 64-bit signed elements: (words, repeat) int64."""
    (f,) = layout.fields
    if f.bits % 8 or f.bits > 64:
        return layout.unpack(words)[:, :, 0].astype(np.int64)
    raw = layout.to_bytes(words)
    dt = {8: "<i1", 16: "<i2", 32: "<i4", 64: "<i8"}.get(f.bits)
    if dt is None:
        return layout.unpack(words)[:, :, 0].astype(np.int64)
    arr = np.frombuffer(raw, dtype=dt).reshape(len(words), -1)[:, : layout.repeat]
    return arr.astype(np.int64)


# -- file formats ------------------------------------------------------------------------------

def _hex_text(words: list[int], width: int) -> str:
    digits = math.ceil(width / 4)
    return "".join(f"{w:0{digits}x}\n" for w in words)


def _write_hex(path: Path, words: list[int], layout: MemoryLayout, *, force: bool) -> Path:
    return write_text(path, _hex_text(words, layout.width), force=force)


def _read_hex(path: Path, layout: MemoryLayout) -> list[int]:
    words = []
    width = layout.width
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("//")[0].strip()
        if not line or line.startswith("@"):
            if line.startswith("@"):
                raise ExportError(f"{path}:{n}: address records are not supported")
            continue
        try:
            words.append(int(line, 16))
        except ValueError:
            raise ExportError(f"{path}:{n}: not a hex word: {line!r}") from None
        if words[-1] >> width:
            raise ExportError(f"{path}:{n}: word wider than {width} bits")
    return words


def _parse_word(path: Path, n: int, text: str, width: int) -> int:
    try:
        word = int(text, 16)
    except ValueError:
        raise ExportError(f"{path}:{n}: not a hex word: {text!r}") from None
    if word < 0 or word >> width:
        raise ExportError(f"{path}:{n}: word wider than {width} bits")
    return word


def _write_coe(path: Path, words: list[int], layout: MemoryLayout, *, force: bool) -> Path:
    """Xilinx COE: radix 16, one word per line, comma-separated, the last ended by ';'."""
    digits = math.ceil(layout.width / 4)
    body = ",\n".join(f"{w:0{digits}x}" for w in words) or "0"
    return write_text(path, f"; hwprune {layout.name}: {len(words)} words of {layout.width} bits\n"
                            f"memory_initialization_radix=16;\nmemory_initialization_vector=\n{body};\n",
                      force=force)


def _read_coe(path: Path, layout: MemoryLayout) -> list[int]:
    text = "\n".join(line.split(";", 1)[0] if line.lstrip().startswith(";") else line
                     for line in path.read_text().splitlines())
    head, sep, vector = text.partition("memory_initialization_vector=")
    if not sep or "memory_initialization_radix=16;" not in head.replace(" ", ""):
        raise ExportError(f"{path}: not a radix-16 COE file (no memory_initialization_vector)")
    if not vector.rstrip().endswith(";"):
        raise ExportError(f"{path}: COE vector is not terminated by ';' (truncated?)")
    items = [t.strip() for t in vector.rstrip()[:-1].split(",")]
    return [_parse_word(path, i, t, layout.width) for i, t in enumerate(items, 1)]


def _write_mif(path: Path, words: list[int], layout: MemoryLayout, *, force: bool) -> Path:
    """Intel MIF: WIDTH, DEPTH (the words written), hex address and data radix."""
    digits = math.ceil(layout.width / 4)
    lines = [f"-- hwprune {layout.name}: {len(words)} words of {layout.width} bits",
             f"WIDTH={layout.width};", f"DEPTH={max(1, len(words))};", "ADDRESS_RADIX=HEX;",
             "DATA_RADIX=HEX;", "CONTENT BEGIN"]
    lines += [f"    {a:x} : {w:0{digits}x};" for a, w in enumerate(words)] or ["    0 : 0;"]
    lines.append("END;")
    return write_text(path, "\n".join(lines) + "\n", force=force)


def _read_mif(path: Path, layout: MemoryLayout) -> list[int]:
    header: dict[str, str] = {}
    words: list[int] = []
    state = "header"
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("--", 1)[0].strip()
        if not line:
            continue
        if state == "header":
            if line.upper() == "CONTENT BEGIN":
                state = "content"
                continue
            key, eq, value = line.rstrip(";").partition("=")
            if not eq:
                raise ExportError(f"{path}:{n}: not a MIF header line: {line!r}")
            header[key.strip().upper()] = value.strip().upper()
        elif state == "content":
            if line.upper() == "END;":
                state = "end"
                continue
            addr, colon, data = line.rstrip(";").partition(":")
            if not colon or _parse_word(path, n, addr.strip(), 64) != len(words):
                raise ExportError(f"{path}:{n}: expected address {len(words):x}, got {line!r}")
            words.append(_parse_word(path, n, data.strip(), layout.width))
    if state != "end":
        raise ExportError(f"{path}: MIF content has no END; (truncated?)")
    if header.get("WIDTH") != str(layout.width):
        raise ExportError(f"{path}: MIF WIDTH={header.get('WIDTH')}, the memory is {layout.width} bits")
    if header.get("ADDRESS_RADIX") != "HEX" or header.get("DATA_RADIX") != "HEX":
        raise ExportError(f"{path}: only hex MIF radixes are read")
    if header.get("DEPTH") != str(max(1, len(words))):
        raise ExportError(f"{path}: MIF DEPTH={header.get('DEPTH')} but {len(words)} words")
    return words


def _write_bin(path: Path, words: list[int], layout: MemoryLayout, *, force: bool) -> Path:
    """Raw little-endian: each word in ⌈width/8⌉ bytes, no header."""
    return write_bytes(path, layout.to_bytes(words), force=force)


def _read_bin(path: Path, layout: MemoryLayout) -> list[int]:
    try:
        words = layout.from_bytes(path.read_bytes())
    except ExportError as exc:
        raise ExportError(f"{path}: {exc}") from None
    for i, w in enumerate(words):
        if w >> layout.width:
            raise ExportError(f"{path}: word {i} wider than {layout.width} bits")
    return words


#: image formats: name → (suffix, writer(path, words, layout, force=...), reader(path, layout) | None)
IMAGE_FORMATS: dict[str, tuple[str, Callable, Callable | None]] = {
    "hex": (".hex", _write_hex, _read_hex),       # $readmemh
    "coe": (".coe", _write_coe, _read_coe),       # Xilinx block-memory generator
    "mif": (".mif", _write_mif, _read_mif),       # Intel (Quartus) memory initialization
    "bin": (".bin", _write_bin, _read_bin),       # raw little-endian words
}


def write_images(images: LayerImages, out_dir: str | Path, *, fmt: str = "hex",
                 force: bool = False) -> dict[str, Path]:
    """Write every memory image (``outputs`` holds the expected outputs) and ``images.json``.

    Returns the paths by memory name (plus ``"manifest"``).  Files are written atomically and
    never overwritten without ``force``.
    """
    if fmt not in IMAGE_FORMATS:
        raise ExportError(f"unknown image format {fmt!r} (known: {', '.join(IMAGE_FORMATS)})")
    suffix, writer, _ = IMAGE_FORMATS[fmt]
    out = Path(out_dir)
    paths = {}
    for name in MEMORIES:
        paths[name] = writer(out / f"{name}{suffix}", images.words[name], images.map[name], force=force)
    manifest = {"format": fmt, "meta": dict(images.meta), "map": images.map.to_dict(),
                "words": {name: len(images.words[name]) for name in MEMORIES},
                "files": {name: p.name for name, p in paths.items()}}
    paths["manifest"] = write_text(out / "images.json", json.dumps(manifest, indent=2) + "\n", force=force)
    return paths


def read_images(out_dir: str | Path, mm: MemoryMap, *, fmt: str = "hex") -> dict[str, list[int]]:
    """Read the words of every memory image written by :func:`write_images` for design ``mm``."""
    suffix, _, reader = IMAGE_FORMATS.get(fmt, (None, None, None))
    if reader is None:
        raise ExportError(f"image format {fmt!r} cannot be read back")
    out = Path(out_dir)
    words = {}
    for name in MEMORIES:
        path = out / f"{name}{suffix}"
        if not path.is_file():
            raise ExportError(f"{path}: missing memory image")
        words[name] = reader(path, mm[name])
        if len(words[name]) > mm[name].depth:
            raise ExportError(f"{path}: {len(words[name])} words exceed the memory depth {mm[name].depth}")
    return words
