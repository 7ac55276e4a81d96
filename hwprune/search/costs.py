"""The cost side of the search: what each (layer, candidate) costs on the array, exactly.

Costs come from :func:`hwprune.cost.estimate_layer` with the candidate's **actual mask** (the
one pruning will produce), not a nominal density: padding slots, skipped groups and packed
channels are counted as the array runs them.  A layer's cost is summed over every GEMM it
executes (a weight used twice is two :class:`~hwprune.ir.LayerSpec`, ``name`` and ``name#2``).
Cycles are compute + fill + stall, the total ``hwprune estimate`` reports.

*Weight bytes* are the layer's compressed weights and their N:M indices as the array stores
them, one copy: ``(weights_sram + index_sram) / row_folds``, since the schedule streams each
weight tile once per row fold (:mod:`hwprune.cost`).

A plan names one pattern per layer.  For most patterns (dense, native N:M, channel) the pattern
alone fixes the cost; where it does not (blocks and unstructured weights under group skipping,
N:M ratios the array only runs padded), the plan carries the mask itself
(:func:`layer_costs` says which), so :func:`plan_cost` reproduces the search's prediction to the
cycle on any model with the same layer shapes, without pruning anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..config import ArrayConfig, load_array
from ..cost import LayerCost, ModelCost, estimate_layer
from ..errors import ConfigError
from ..ir import LayerSpec
from ..patterns import NM, SparsityPattern

__all__ = [
    "COST_KEYS",
    "Cost",
    "candidate_cost",
    "pattern_only_cost",
    "plan_cost",
    "specs_by_layer",
    "weight_bytes",
]

#: the budgeted resources, in the order tables and constraint rows list them
COST_KEYS = ("cycles", "energy_pj", "weight_bytes")


@dataclass(frozen=True, slots=True)
class Cost:
    """What one layer (all its GEMMs) costs: cycles, picojoules, stored weight bytes."""

    cycles: int
    energy_pj: float
    weight_bytes: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.cycles + other.cycles, self.energy_pj + other.energy_pj,
                    self.weight_bytes + other.weight_bytes)

    def as_tuple(self) -> tuple[int, float, int]:
        return (self.cycles, self.energy_pj, self.weight_bytes)


ZERO = Cost(0, 0.0, 0)


def weight_bytes(cost: LayerCost, array: ArrayConfig) -> int:
    """Stored bytes of a layer's (compressed) weights and indices, one copy (module docstring)."""
    if cost.kind == "matmul":
        return 0
    row_folds = math.ceil(cost.M / array.rows)
    return (cost.bytes.weights_sram + cost.bytes.index_sram) // row_folds


def _summarise(costs: Sequence[LayerCost], array: ArrayConfig) -> Cost:
    return Cost(int(sum(c.cycles for c in costs)), float(sum(c.energy_pj for c in costs)),
                int(sum(weight_bytes(c, array) for c in costs)))


def _native(pattern: SparsityPattern | None, array: ArrayConfig) -> SparsityPattern | None:
    """``pattern`` if the cost model can take it as given, None for an N:M the array only pads."""
    if isinstance(pattern, NM):
        try:
            array.slots_for(pattern.n, pattern.m)
        except ConfigError:
            return None
    return pattern


def candidate_cost(specs: Sequence[LayerSpec], array: ArrayConfig, pattern: SparsityPattern | None,
                   mask: np.ndarray | None) -> Cost:
    """Exact cost of a layer's GEMMs with ``mask`` (None: the weights' own non-zeros).

    ``pattern`` only labels the schedule; with a mask the issue width, skipped groups and
    packed channels all come from the mask, so a padded N:M (``1:8`` on a 1-of-4 array) costs
    what the array really does with it.
    """
    pat = _native(pattern, array) if mask is not None else None
    return _summarise([estimate_layer(s, array, pat, mask) for s in specs], array)


def pattern_only_cost(specs: Sequence[LayerSpec], array: ArrayConfig, pattern: SparsityPattern) -> Cost | None:
    """Cost from the pattern alone (what :func:`plan_cost` computes without a mask), or None
    when the cost model cannot cost the pattern without one."""
    if _native(pattern, array) is None:
        return None
    return _summarise([estimate_layer(s, array, pattern, None) for s in specs], array)


def specs_by_layer(specs: Sequence[LayerSpec], layers: Sequence[str]) -> tuple[dict[str, list[LayerSpec]], list[LayerSpec]]:
    """Group the GEMMs of each prunable layer (``name``, ``name#2``, …); the rest are fixed."""
    wanted = set(layers)
    grouped: dict[str, list[LayerSpec]] = {name: [] for name in layers}
    rest = []
    for s in specs:
        base = s.name.split("#", 1)[0]
        if s.has_weights and base in wanted:
            grouped[base].append(s)
        else:
            rest.append(s)
    return grouped, rest


def plan_cost(specs: Sequence[LayerSpec], plan, array: str | ArrayConfig | None = None) -> ModelCost:
    """Cost every layer of a model under ``plan`` (a :class:`~hwprune.prune.plan.PruningPlan`)
    without pruning: planned layers by their stored mask, else by their pattern.

    Parameters
    ----------
    specs : sequence of LayerSpec
        The model's layers (:func:`hwprune.importers.load_model`).
    plan : PruningPlan
        Layers not in the plan keep their own sparsity (dense unless the model carries zeros).
    array : str or ArrayConfig, optional
        Defaults to the plan's array.

    Raises
    ------
    ConfigError
        A plan layer the model does not have, or a stored mask whose shape is not the layer's.
    """
    cfg = load_array(array if array is not None else plan.array)
    names = {s.name.split("#", 1)[0] for s in specs if s.has_weights}
    plan.check_layers(names)
    out = []
    for s in specs:
        base = s.name.split("#", 1)[0]
        pattern = plan.layers.get(base) if s.has_weights else None
        mask = plan.masks.get(base) if pattern is not None else None
        if mask is not None and mask.shape != (s.N, s.K):
            raise ConfigError(f"plan mask of {base!r} is {mask.shape[0]}×{mask.shape[1]}, the model's layer "
                              f"is N×K = {s.N}×{s.K}: the plan was searched on a different model")
        if mask is not None:
            out.append(estimate_layer(s, cfg, _native(pattern, cfg), mask))
        else:
            out.append(estimate_layer(s, cfg, pattern, None))
    return ModelCost(cfg, tuple(out))
