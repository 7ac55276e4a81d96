"""The search table: sensitivity × cost of every (layer, candidate), built once per model.

Rows are the model's prunable layers in execution order, columns the candidate patterns.  Each
cell holds the objective side (validation loss and accuracy change of pruning only that layer
that way, :mod:`.sensitivity`) and the cost side (cycles, energy, weight bytes with the
candidate's actual mask, :mod:`.costs`).  Layers the search cannot prune (attention's
activation × activation products) are a fixed cost.  Everything the solvers (:mod:`.solve`)
need is in this one frozen value, so a table can be built once and solved under any number of
budgets — the Pareto sweep does exactly that.

Masks come from the same pieces ``hwprune prune`` uses — the criterion's scores from the same
calibration batches (``seed``, ``calib_batches``) and :class:`~hwprune.prune.method.PatternPruning`
— so pruning the model to the chosen plan reproduces them, and with them the predicted cycles.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import ArrayConfig, load_array
from ..errors import ConfigError
from ..patterns import Channel, Dense, SparsityPattern, parse_pattern
from ..workload import WorkloadLike, as_workload
from .candidates import parse_candidates
from .costs import COST_KEYS, Cost, candidate_cost, pattern_only_cost, specs_by_layer
from .sensitivity import (
    SENSITIVITY_METHODS,
    SensitivityCache,
    fisher_layer,
    measure_layer,
    model_hash,
    task_fingerprint,
    val_metrics,
)

__all__ = ["OBJECTIVES", "SearchTable", "TableMeta", "build_table"]

#: what the exact selection minimises: the summed loss increase, or the summed accuracy drop
OBJECTIVES = ("loss", "accuracy")


@dataclass(frozen=True, slots=True)
class TableMeta:
    """Where a table's numbers come from (recorded in plans), and how many were measured."""

    task: str
    task_fingerprint: str
    model_hash: str
    criterion: str
    sensitivity: str
    seed: int
    calib_batches: int
    baseline_loss: float
    baseline_accuracy: float
    measured: int = 0   # (layer, candidate) sensitivities computed by this build
    reused: int = 0     # … and read from the disk cache

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class SearchTable:
    """Sensitivity and cost of every (layer, candidate); build with :func:`build_table` or
    :meth:`from_arrays`.

    Attributes
    ----------
    array : ArrayConfig
    layers : tuple of str
        Prunable layers, execution order (L).
    candidates : tuple of SparsityPattern
        Candidate patterns (C).
    allowed : ndarray (L, C) of bool
        False where a candidate does not apply (channel pruning of the output layer).
    loss, accuracy : ndarray (L, C) of float
        Validation loss change (nats) and accuracy change (fraction; NaN when unknown, as with
        the fisher proxy).  0 where not allowed.
    costs : ndarray (L, C, 3) of float
        Cycles, energy (pJ) and weight bytes of each layer under each candidate (:data:`COST_KEYS`).
    fixed : Cost
        What the layers outside the search cost (activation × activation products).
    reference_costs : ndarray (L, 3) of float
        Each layer as given (unpruned, or with the masks it already has).
    masks : mapping (layer, candidate index) → ndarray
        The masks a plan must carry because the pattern alone does not fix their cost.
    meta : TableMeta or None
        Provenance (None for synthetic tables).
    """

    array: ArrayConfig
    layers: tuple[str, ...]
    candidates: tuple[SparsityPattern, ...]
    allowed: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    costs: np.ndarray
    fixed: Cost
    reference_costs: np.ndarray
    masks: Mapping[tuple[str, int], np.ndarray] = field(default_factory=lambda: MappingProxyType({}))
    meta: TableMeta | None = None

    @classmethod
    def from_arrays(cls, array: str | ArrayConfig, layers: Sequence[str], candidates: Sequence[SparsityPattern | str],
                    loss: Any, costs: Mapping[str, Any] | Any, *, allowed: Any = None, accuracy: Any = None,
                    fixed: Cost | None = None, reference_costs: Any = None,
                    masks: Mapping[tuple[str, int], np.ndarray] | None = None,
                    meta: TableMeta | None = None) -> SearchTable:
        """Validated constructor.  ``costs``: an (L, C, 3) array or a mapping of
        :data:`COST_KEYS` to (L, C) arrays (missing keys are zero)."""
        cfg = load_array(array)
        layers = tuple(layers)
        cands = tuple(parse_pattern(c) for c in candidates)
        if not layers or not cands:
            raise ConfigError("a search table needs at least one layer and one candidate")
        if len(set(layers)) != len(layers):
            raise ConfigError(f"duplicate layer names in {layers}")
        shape = (len(layers), len(cands))
        loss = np.array(loss, dtype=np.float64)
        acc = np.full(shape, np.nan) if accuracy is None else np.array(accuracy, dtype=np.float64)
        ok = np.ones(shape, dtype=bool) if allowed is None else np.array(allowed, dtype=bool)
        if isinstance(costs, Mapping):
            unknown = set(costs) - set(COST_KEYS)
            if unknown:
                raise ConfigError(f"unknown cost keys {sorted(unknown)}; expected {COST_KEYS}")
            cost = np.stack([np.array(costs.get(k, np.zeros(shape)), dtype=np.float64) for k in COST_KEYS], axis=-1)
        else:
            cost = np.array(costs, dtype=np.float64)
        for name, a, want in (("loss", loss, shape), ("accuracy", acc, shape), ("allowed", ok, shape),
                              ("costs", cost, (*shape, len(COST_KEYS)))):
            if a.shape != want:
                raise ConfigError(f"search table {name} has shape {a.shape}, expected {want}")
        if not ok.any(axis=1).all():
            bad = [layers[i] for i in np.flatnonzero(~ok.any(axis=1))]
            raise ConfigError(f"layers with no allowed candidate: {', '.join(bad)}")
        if not np.isfinite(loss[ok]).all() or not np.isfinite(cost[ok]).all():
            raise ConfigError("search table has NaN or infinite losses or costs")
        if (cost[ok] < 0).any():
            raise ConfigError("search table has negative costs")
        loss = np.where(ok, loss, 0.0)
        cost = np.where(ok[..., None], cost, 0.0)
        fixed = fixed or Cost(0, 0.0, 0)
        if reference_costs is None:
            dense = [i for i, c in enumerate(cands) if isinstance(c, Dense)]
            if not dense or not ok[:, dense[0]].all():
                raise ConfigError("give the reference costs when 'dense' is not a candidate of every layer")
            ref = cost[:, dense[0]].copy()
        else:
            ref = np.array(reference_costs, dtype=np.float64)
            if ref.shape != (len(layers), len(COST_KEYS)):
                raise ConfigError(f"reference costs have shape {ref.shape}, expected {(len(layers), len(COST_KEYS))}")
        for a in (loss, acc, ok, cost, ref):
            a.setflags(write=False)
        return cls(cfg, layers, cands, ok, loss, acc, cost, fixed, ref,
                   MappingProxyType(dict(masks or {})), meta)

    @property
    def reference(self) -> Cost:
        """The whole model as given (every layer unchanged): what budget fractions refer to."""
        return self.fixed + _cost(self.reference_costs.sum(axis=0))

    def layer_cost(self, i: int, j: int | None = None) -> Cost:
        """Cost of layer ``i`` under candidate ``j`` (None: as given)."""
        return _cost(self.reference_costs[i] if j is None else self.costs[i, j])

    def objective(self, name: str = "loss") -> np.ndarray:
        """(L, C) values the selection minimises: loss increase, or accuracy drop."""
        if name == "loss":
            return self.loss
        if name == "accuracy":
            if np.isnan(self.accuracy[self.allowed]).any():
                raise ConfigError("objective 'accuracy' needs measured sensitivities; this table "
                                  "has none (the fisher proxy predicts loss only)")
            return np.where(self.allowed, -self.accuracy, 0.0)
        raise ConfigError(f"unknown objective {name!r}; expected {', '.join(OBJECTIVES)}")

    def column(self, pattern: SparsityPattern | str) -> int:
        """Index of a candidate (ConfigError if it is not one)."""
        pat = parse_pattern(pattern)
        try:
            return self.candidates.index(pat)
        except ValueError:
            raise ConfigError(f"{pat} is not a candidate; candidates: "
                              f"{', '.join(map(str, self.candidates))}") from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: per layer, per candidate: allowed, loss, accuracy, cycles, energy, bytes."""
        rows = {}
        for i, name in enumerate(self.layers):
            rows[name] = {str(c): {"loss": float(self.loss[i, j]),
                                   "accuracy": None if np.isnan(self.accuracy[i, j]) else float(self.accuracy[i, j]),
                                   **{k: _num(self.costs[i, j, n], k) for n, k in enumerate(COST_KEYS)}}
                          for j, c in enumerate(self.candidates) if self.allowed[i, j]}
        return {"array": self.array.name, "candidates": [str(c) for c in self.candidates],
                "fixed": dict(zip(COST_KEYS, self.fixed.as_tuple())),
                "reference": dict(zip(COST_KEYS, self.reference.as_tuple())),
                "meta": self.meta.to_dict() if self.meta else None, "layers": rows}


def _cost(row: np.ndarray) -> Cost:
    return Cost(round(float(row[0])), float(row[1]), round(float(row[2])))


def _num(value: float, key: str) -> float | int:
    return float(value) if key == "energy_pj" else round(float(value))


# -- building a table from a model and a task ---------------------------------------------------

def build_table(model: nn.Module, data: WorkloadLike | str, array: str | ArrayConfig = "os16x16", *,
                criterion: str = "l1", candidates: str | Sequence[SparsityPattern | str] | None = None,
                sensitivity: str = "measured", seed: int = 0, calib_batches: int = 8,
                cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                progress: bool = False, check: Callable[[SearchTable], None] | None = None) -> SearchTable:
    """Measure sensitivity and cost of every (layer, candidate) of a trained ``model``.

    Parameters
    ----------
    model : nn.Module
        Trained (possibly already pruned: candidates then only remove more).  Left unchanged.
    data : WorkloadLike or str
        A built-in task (or its name) or a :class:`~hwprune.workload.Workload`: calibration
        batches for the criterion, the validation split for sensitivity.
    array : str or ArrayConfig
        Preset name or TOML path.
    criterion : str
        Importance criterion that turns a candidate pattern into a mask (as ``prune`` does).
    candidates : str or sequence, optional
        ``--candidates`` text or patterns; default :func:`~hwprune.search.candidates.default_candidates`.
    sensitivity : ``"measured"`` or ``"fisher"``
        One-shot measurement per (layer, candidate), or the OBD/Fisher proxy (no extra passes).
    seed, calib_batches : int
        Calibration batches of the criterion (and the random criterion's seed), as in ``prune``.
    cache_dir : path, optional
        Sensitivity cache (default ``$HWPRUNE_CACHE/sensitivity`` or ``~/.cache/hwprune/sensitivity``).
    use_cache : bool
        False measures everything and writes nothing.
    progress : bool
        A rich progress bar (on stderr) over the measurements.
    check : callable, optional
        Called with the table's cost side (sensitivities still zero) before anything is
        measured, so an impossible budget is rejected in seconds, not after the measurements.
    """
    from ..importers import from_torch
    from ..prune.criteria import LayerContext, get_criterion
    from ..prune.engine import (
        collect_stats,
        layer_graph,
        make_permanent,
        prunable_layers,
    )
    from ..prune.method import PatternPruning, as_matrix
    from ..train import _progress, clone_model, deterministic, refresh_pruned

    if sensitivity not in SENSITIVITY_METHODS:
        raise ConfigError(f"unknown sensitivity method {sensitivity!r}; expected {', '.join(SENSITIVITY_METHODS)}")
    if isinstance(calib_batches, bool) or not isinstance(calib_batches, int) or calib_batches < 1:
        raise ConfigError(f"calibration batches must be a positive integer, not {calib_batches!r}")
    task = as_workload(data)
    cfg = load_array(array)
    cands = parse_candidates(candidates, cfg) if candidates is None or isinstance(candidates, str) \
        else tuple(parse_pattern(c) for c in candidates)
    crit = get_criterion(criterion)
    cache = SensitivityCache(Path(cache_dir)) if cache_dir is not None else SensitivityCache.default()

    refresh_pruned(model)
    was_training = model.training
    model.eval()
    targets = prunable_layers(model)
    _, followers = layer_graph(model, task.example_inputs(2), targets)
    specs = from_torch(make_permanent(clone_model(model)), task.example_inputs(1))
    # execution order as the importer saw it (forward hooks miss MultiheadAttention.out_proj);
    # a layer that never runs costs nothing and is not searched
    layers = list(dict.fromkeys(b for s in specs if s.has_weights and (b := s.name.split("#", 1)[0]) in targets))
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no prunable layer the search can cost")
    grouped, rest = specs_by_layer(specs, layers)
    fixed = sum((candidate_cost([s], cfg, None, None) for s in rest), Cost(0, 0.0, 0))

    needs = crit.needs | ({"fisher"} if sensitivity == "fisher" else set())
    # the same call, threads and seed as prune_model's scoring: the masks must come out identical
    stats = collect_stats(model, {n: targets[n] for n in layers}, task, frozenset(needs),
                          batches=calib_batches, seed=seed)
    with deterministic(seed):
        baseline = val_metrics(model, task) if sensitivity == "measured" else (float("nan"), float("nan"))
    mhash, tfp = model_hash(model), task_fingerprint(task, calib_batches=calib_batches, seed=seed)

    L, C = len(layers), len(cands)
    allowed = np.ones((L, C), dtype=bool)
    loss = np.zeros((L, C))
    acc = np.full((L, C), np.nan if sensitivity == "fisher" else 0.0)
    costs = np.zeros((L, C, len(COST_KEYS)))
    masks: dict[tuple[str, int], np.ndarray] = {}
    reference = np.zeros((L, len(COST_KEYS)))
    todo: list[tuple[int, int, np.ndarray, str, torch.Tensor | None]] = []
    reused = 0
    for i, name in enumerate(layers):
        t = targets[name]
        existing = getattr(t.module, t.param + "_mask", None)
        alive = None if existing is None else as_matrix(existing).detach().cpu().numpy().astype(bool)
        reference[i] = candidate_cost(grouped[name], cfg, None, alive).as_tuple()
        for j, pat in enumerate(cands):
            if isinstance(pat, Channel) and name == layers[-1]:
                allowed[i, j] = False  # removing output channels of the classifier removes classes
                continue
            if isinstance(pat, Dense):
                mask = alive  # the layer as it is
            else:
                scores = crit(LayerContext(name, t.weight, pat, stats[name], seed))
                if alive is not None:
                    scores = scores * torch.from_numpy(alive).to(scores.dtype)
                w = getattr(t.module, t.param)
                default = torch.ones_like(w) if existing is None else existing
                mask = as_matrix(PatternPruning(pat).compute_mask(scores.reshape(w.shape), default)).numpy().astype(bool)
                if alive is not None:
                    mask &= alive
            cost = candidate_cost(grouped[name], cfg, pat, mask)
            costs[i, j] = cost.as_tuple()
            if mask is not None and pattern_only_cost(grouped[name], cfg, pat) != cost:
                masks[(name, j)] = mask
            if isinstance(pat, Dense):
                continue  # the model as given: no change by definition
            if sensitivity == "fisher":
                st = stats[name]
                s = fisher_layer(t.weight, st.fisher, st.samples, mask, alive)
                loss[i, j] = s.loss
                continue
            key = SensitivityCache.key(model=mhash, task=tfp, criterion=crit.name, seed=seed,
                                       calib_batches=calib_batches, layer=name, candidate=str(pat))
            hit = cache.get(key) if use_cache else None
            if hit is not None:
                loss[i, j], acc[i, j] = hit.loss, hit.accuracy
                reused += 1
            else:  # a compensating criterion (obs) is measured with its re-fitted weights, as prune applies them
                fitted = None if crit.update is None else crit.update(
                    LayerContext(name, t.weight, pat, stats[name], seed), torch.from_numpy(mask))
                todo.append((i, j, mask, key, fitted))

    if check is not None:
        check(SearchTable.from_arrays(cfg, layers, cands, np.zeros((L, C)), costs, allowed=allowed,
                                      fixed=fixed, reference_costs=reference))
    with deterministic(seed), _progress(progress and bool(todo), "sensitivity", len(todo)) as advance:
        for i, j, mask, key, fitted in todo:
            name, pat = layers[i], cands[j]
            s = measure_layer(model, task, targets[name], mask, baseline, followers=followers, weight=fitted)
            loss[i, j], acc[i, j] = s.loss, s.accuracy
            if use_cache:
                cache.put(key, s, layer=name, candidate=str(pat), criterion=crit.name, task=tfp, model=mhash)
            advance()
    model.train(was_training)
    meta = TableMeta(task.name, tfp, mhash, crit.name, sensitivity, seed, calib_batches,
                     baseline[0], baseline[1], measured=len(todo), reused=reused)
    return SearchTable.from_arrays(cfg, layers, cands, loss, costs, allowed=allowed, accuracy=acc,
                                   fixed=fixed, reference_costs=reference, masks=masks, meta=meta)
