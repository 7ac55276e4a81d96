"""One call from a trained model to a plan: table → selection → :class:`PruningPlan`.

>>> from hwprune.search import Budget, search
>>> result = search(model, task, "os16x16", Budget(fraction=0.5), criterion="taylor")
>>> result.plan          # PruningPlan: save_plan(path, result.plan); prune_model(..., plan=result.plan)
>>> result.pareto()      # ParetoFront: exact, greedy and uniform plans over cycle budgets
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..config import ArrayConfig
from ..errors import ConfigError
from ..patterns import SparsityPattern
from ..prune.plan import LayerPrediction, PruningPlan
from ..workload import WorkloadLike
from .costs import COST_KEYS
from .solve import METHODS, Budget, ParetoFront, Selection, check_budget, pareto, select
from .table import OBJECTIVES, SearchTable, build_table

__all__ = ["SearchResult", "as_budget", "make_plan", "search"]


def as_budget(budget: Budget | float) -> Budget:
    """A :class:`Budget`; a bare number in (0, 1] is a fraction of the dense cycles."""
    if isinstance(budget, Budget):
        return budget
    if isinstance(budget, (int, float)) and not isinstance(budget, bool):
        return Budget(fraction=float(budget))
    raise ConfigError(f"a budget must be a Budget or a fraction of the dense cycles, not {budget!r}")


def make_plan(table: SearchTable, selection: Selection, budget: Budget | None = None) -> PruningPlan:
    """The plan of a selection: every searched layer's pattern and prediction, the masks a
    pattern alone cannot cost, and the table's provenance."""
    layers, predicted, masks = {}, {}, {}
    for i, (name, j) in enumerate(zip(table.layers, selection.choice)):
        layers[name] = table.candidates[j]
        c = selection.layer_costs[i]
        acc = table.accuracy[i, j]
        predicted[name] = LayerPrediction(c.cycles, c.energy_pj, c.weight_bytes, float(table.loss[i, j]),
                                          None if np.isnan(acc) else float(acc))
        if (name, j) in table.masks:
            masks[name] = table.masks[(name, j)]
    meta = table.meta
    search_info: dict[str, Any] = {
        "method": selection.method, "objective": selection.objective,
        "predicted": {**dict(zip(COST_KEYS, selection.cost.as_tuple())),
                      "loss_delta": selection.loss, "accuracy_delta": selection.accuracy},
        "reference": dict(zip(COST_KEYS, table.reference.as_tuple())),
        "fixed": dict(zip(COST_KEYS, table.fixed.as_tuple())),
        "candidates": [str(c) for c in table.candidates],
    }
    if meta is not None:
        search_info.update(task=meta.task, task_fingerprint=meta.task_fingerprint, sensitivity=meta.sensitivity,
                           seed=meta.seed, calib_batches=meta.calib_batches,
                           baseline={"val_loss": meta.baseline_loss, "val_accuracy": meta.baseline_accuracy})
    return PruningPlan.make(table.array.name, layers, predicted=predicted, masks=masks,
                            criterion=meta.criterion if meta else None,
                            model_hash=meta.model_hash if meta else None,
                            budget={**(budget.to_dict() if budget else {}), **{f"cap_{k}": v for k, v in selection.caps.items()}},
                            search=search_info)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A search's table (reusable under other budgets), its selection and the plan."""

    table: SearchTable
    selection: Selection
    plan: PruningPlan
    budget: Budget

    def pareto(self, *, points: int = 16, budgets: Sequence[int] | None = None) -> ParetoFront:
        """Exact, greedy and uniform plans over cycle budgets, from the same table."""
        return pareto(self.table, points=points, budgets=budgets, objective=self.selection.objective)

    def with_budget(self, budget: Budget | float, *, method: str | None = None) -> SearchResult:
        """The same table under another budget (nothing is measured again)."""
        b = as_budget(budget)
        sel = select(self.table, b, method=method or self.selection.method, objective=self.selection.objective)
        return SearchResult(self.table, sel, make_plan(self.table, sel, b), b)


def search(model: nn.Module, data: WorkloadLike | str, array: str | ArrayConfig = "os16x16",
           budget: Budget | float = 0.5, *, criterion: str = "l1",
           candidates: str | Sequence[SparsityPattern | str] | None = None, sensitivity: str = "measured",
           objective: str = "loss", method: str = "exact", seed: int = 0, calib_batches: int = 8,
           cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
           progress: bool = False) -> SearchResult:
    """Choose one pattern per layer of a trained ``model`` under ``budget`` on ``array``.

    Parameters
    ----------
    model : nn.Module
        Trained model of ``task`` (left unchanged).
    data : WorkloadLike or str
        A built-in task (or its name) or a :class:`~hwprune.workload.Workload` of the user's
        DataLoaders: calibration batches and the validation split.
    array : str or ArrayConfig
        Preset name or TOML path.
    budget : Budget or float
        Cost bounds; a bare float is a fraction of the unpruned model's cycles.
    criterion : str
        Importance criterion that makes each candidate's mask (as ``prune`` would).
    candidates : str or sequence, optional
        ``--candidates`` text or patterns (default: derived from the array).
    sensitivity : ``"measured"`` or ``"fisher"``
        One-shot measurement (cached on disk) or the OBD/Fisher proxy.
    objective : ``"loss"`` or ``"accuracy"``
        Minimise the summed validation-loss increase or the summed accuracy drop.
    method : ``"exact"`` or ``"greedy"``
        MILP optimum or the NetAdapt-style baseline.

    Raises
    ------
    ConfigError
        Bad arguments, or a budget no plan meets (the message names the minimum feasible cost).
    """
    b = as_budget(budget)
    if method not in METHODS:
        raise ConfigError(f"unknown selection method {method!r}; expected {', '.join(METHODS)}")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; expected {', '.join(OBJECTIVES)}")
    table = build_table(model, data, array, criterion=criterion, candidates=candidates, sensitivity=sensitivity,
                        seed=seed, calib_batches=calib_batches, cache_dir=cache_dir, use_cache=use_cache,
                        progress=progress, check=lambda costs: check_budget(costs, b))
    sel = select(table, b, method=method, objective=objective)
    return SearchResult(table, sel, make_plan(table, sel, b), b)
