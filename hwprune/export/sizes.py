"""Weight storage of a quantized model: dense fp32, dense int8, and the N:M images as stored.

The stored size is measured on the real weight image (:func:`hwprune.images.build_images`):
slots × C columns × (weight bits + index bits), so it includes what the layout pays beyond the
format bound n·(b + ⌈log2 m⌉) / (m·b) — columns padding a last partial tile, the extra slot of a
last partial K group — and what group skipping saves below it.
"""

from __future__ import annotations


import numpy as np

from ..config import ArrayConfig, index_bits
from ..images import build_images
from ..patterns import NM
from ..quant.model import QuantModel

__all__ = ["format_bound", "layer_weight_bytes"]


def format_bound(n: int, m: int, bits: int = 8) -> float:
    """Compressed/dense bits of an n:m format with ⌈log2 m⌉-bit indices (2:4 int8: 0.625)."""
    if n >= m:
        return 1.0
    return n * (bits + index_bits(m)) / (m * bits)


def layer_weight_bytes(q: QuantModel, array: ArrayConfig) -> list[dict[str, object]]:
    """Per layer: ``dense_fp32``, ``dense_int8``, ``nm_int8`` (the weight image's bytes) and their
    ratio, the format bound of the layer's N:M pattern on this array, and the gap to it."""
    rows = []
    for layer in q.layers:
        spec = layer.spec(1)
        acts = np.zeros((spec.groups, spec.M, spec.K), dtype=np.int64)
        images = build_images(spec, layer.weight, acts, array, layer.pattern)
        mm = images.map
        stored = len(images.words["weights"]) * mm["weights"].width / 8
        dense8 = spec.N * spec.K * q.weight_bits / 8
        slots, m = mm.slots, mm.group_size
        bound = format_bound(slots, m, q.weight_bits)
        pattern = layer.pattern
        rows.append({"layer": layer.name, "pattern": str(pattern) if pattern is not None else None,
                     "N": spec.N, "K": spec.K, "slots": f"{slots}:{m}",
                     "dense_fp32": spec.N * spec.K * 4, "dense_int8": dense8, "nm_int8": stored,
                     "ratio_to_dense_int8": stored / dense8 if dense8 else None, "format_bound": bound,
                     "gap_to_bound": stored / dense8 - bound if dense8 else None,
                     "nm_pattern": isinstance(pattern, NM)})
    return rows
