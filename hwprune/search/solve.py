"""Choosing one candidate per layer under a budget: exactly, greedily, and over a sweep.

The problem is a multiple-choice knapsack.  With x_lc = 1 when layer l takes candidate c::

    minimise    Σ_lc s_lc · x_lc                      (summed sensitivity)
    subject to  Σ_c x_lc = 1                 ∀ l      (one candidate per layer)
                fixed_k + Σ_lc a_lck · x_lc ≤ B_k  ∀ k  (cycles, energy, weight bytes)
                x_lc ∈ {0, 1}

It is NP-hard in general but tiny here (layers × candidates binaries), and HiGHS's branch and
bound through :func:`scipy.optimize.milp` solves it to proven optimality (relative and absolute
gaps set to 0) in milliseconds — a ResNet-50 table, 53 layers × 12 candidates, well under a
second.  Summing per-layer sensitivities assumes they add up; that is the usual assumption of
NetAdapt, AMC and HALP's lookup tables, and what the benchmark tests against fine-tuned accuracy.

The greedy baseline is NetAdapt-style: from the least-sensitive choice of every layer, repeatedly
take the single change with the smallest sensitivity increase per unit of budget excess removed
(excesses of several budgets are summed, each relative to its own excess), never raising a
budgeted cost, until every budget holds.

:func:`pareto` solves both over a sweep of cycle budgets and adds every uniform plan (one
candidate everywhere it applies, dense elsewhere).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from ..errors import ConfigError
from ..patterns import Dense, SparsityPattern
from .costs import COST_KEYS, Cost
from .table import SearchTable, _cost

__all__ = [
    "METHODS",
    "Budget",
    "ParetoFront",
    "ParetoPoint",
    "Selection",
    "check_budget",
    "minimum_cost",
    "pareto",
    "select",
    "solve_exact",
    "solve_greedy",
    "uniform_selection",
]

#: selection methods
METHODS = ("exact", "greedy")

_UNITS = {"cycles": "cycles", "energy_pj": "pJ", "weight_bytes": "bytes"}


@dataclass(frozen=True, slots=True)
class Budget:
    """Upper bounds on whole-model cost; any combination, at least one.

    ``fraction`` bounds cycles to that fraction of the model's unpruned cycles; with ``cycles``
    as well, the smaller bound holds.  Create with keywords: ``Budget(fraction=0.5)``,
    ``Budget(cycles=2000, energy_pj=3e6)``.
    """

    fraction: float | None = None
    cycles: int | None = None
    energy_pj: float | None = None
    weight_bytes: int | None = None

    def __post_init__(self) -> None:
        if all(v is None for v in (self.fraction, self.cycles, self.energy_pj, self.weight_bytes)):
            raise ConfigError("a budget needs at least one of fraction, cycles, energy or weight bytes")
        if self.fraction is not None and (isinstance(self.fraction, bool) or
                                          not isinstance(self.fraction, (int, float)) or
                                          not 0.0 < self.fraction <= 1.0 or math.isnan(self.fraction)):
            raise ConfigError(f"budget fraction must lie in (0, 1] of the dense cycles, not {self.fraction!r}")
        for key in ("cycles", "energy_pj", "weight_bytes"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                                  or math.isinf(v)):
                raise ConfigError(f"budget {key} must be a positive number, not {v!r}")

    def caps(self, reference: Cost) -> dict[str, float]:
        """Resource → upper bound on the whole model's total (fractions resolved)."""
        out: dict[str, float] = {}
        if self.fraction is not None:
            out["cycles"] = math.floor(self.fraction * reference.cycles)
        if self.cycles is not None:
            out["cycles"] = min(out.get("cycles", math.inf), self.cycles)
        if self.energy_pj is not None:
            out["energy_pj"] = float(self.energy_pj)
        if self.weight_bytes is not None:
            out["weight_bytes"] = self.weight_bytes
        return out

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("fraction", "cycles", "energy_pj", "weight_bytes")}


@dataclass(frozen=True, slots=True)
class Selection:
    """One candidate per layer, with the totals it is predicted to reach."""

    method: str
    objective: str
    layers: tuple[str, ...]
    choice: tuple[int, ...]                 # candidate index per layer
    patterns: Mapping[str, SparsityPattern]
    cost: Cost                              # whole model, fixed layers included
    layer_costs: tuple[Cost, ...]
    value: float                            # summed objective
    loss: float                             # summed loss change
    accuracy: float | None                  # summed accuracy change (None if unknown)
    caps: Mapping[str, float] = field(default_factory=dict)
    solve_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "objective": self.objective, "value": self.value,
                "loss_delta": self.loss, "accuracy_delta": self.accuracy,
                **dict(zip(COST_KEYS, self.cost.as_tuple())), "caps": dict(self.caps),
                "patterns": {k: str(v) for k, v in self.patterns.items()}}


def _selection(table: SearchTable, choice: Sequence[int], method: str, objective: str,
               caps: Mapping[str, float], seconds: float = 0.0) -> Selection:
    rows = np.arange(len(table.layers))
    ch = np.asarray(choice, dtype=np.int64)
    layer_costs = tuple(table.layer_cost(i, j) for i, j in zip(rows, ch))
    total = sum(layer_costs, table.fixed)
    acc = table.accuracy[rows, ch]
    return Selection(method, objective, table.layers, tuple(int(c) for c in ch),
                     {n: table.candidates[c] for n, c in zip(table.layers, ch)}, total, layer_costs,
                     float(table.objective(objective)[rows, ch].sum()), float(table.loss[rows, ch].sum()),
                     None if np.isnan(acc).any() else float(acc.sum()), dict(caps), seconds)


def minimum_cost(table: SearchTable) -> Cost:
    """Per resource, the least any plan can reach (each resource minimised on its own)."""
    return table.fixed + _cost(np.where(table.allowed[..., None], table.costs, np.inf).min(axis=1).sum(axis=0))


def _fmt(key: str, value: float) -> str:
    if key == "energy_pj":
        return f"{value / 1e6:,.3f} µJ"
    if key == "weight_bytes":
        return f"{value / 1024:,.2f} KiB ({int(value):,} bytes)"
    return f"{int(value):,} cycles"


_NAMES = {"cycles": "cycle", "energy_pj": "energy", "weight_bytes": "weight-byte"}


def _check_feasible(table: SearchTable, caps: Mapping[str, float]) -> None:
    low = dict(zip(COST_KEYS, minimum_cost(table).as_tuple()))
    for key, cap in caps.items():
        if low[key] > cap:
            what = (f"{int(cap):,} ({cap / table.reference.cycles:.3f} of the dense {table.reference.cycles:,} cycles)"
                    if key == "cycles" else _fmt(key, cap))
            raise ConfigError(f"{_NAMES[key]} budget {what} is infeasible on {table.array.name}: the minimum "
                              f"feasible is {_fmt(key, low[key])} (every layer at its cheapest candidate)")


def check_budget(table: SearchTable, budget: Budget) -> None:
    """ConfigError when some budget is below what any plan reaches (costs only are read)."""
    _check_feasible(table, budget.caps(table.reference))


def _joint_infeasible(table: SearchTable, caps: Mapping[str, float]) -> ConfigError:
    low = dict(zip(COST_KEYS, minimum_cost(table).as_tuple()))
    parts = ", ".join(f"{k} ≤ {_fmt(k, v)} (alone ≥ {_fmt(k, low[k])})" for k, v in caps.items())
    return ConfigError(f"no plan meets the budgets together on {table.array.name}: {parts}")


def solve_exact(table: SearchTable, budget: Budget, *, objective: str = "loss") -> Selection:
    """The optimal selection (MILP, HiGHS).  ConfigError when no plan fits the budget; its
    message names the minimum feasible cost."""
    caps = budget.caps(table.reference)
    _check_feasible(table, caps)
    values = table.objective(objective)
    L, C = values.shape
    n = L * C
    rows = np.repeat(np.arange(L), C)
    one_each = csr_array((np.ones(n), (rows, np.arange(n))), shape=(L, n))
    constraints = [LinearConstraint(one_each, 1, 1)]
    fixed = dict(zip(COST_KEYS, table.fixed.as_tuple()))
    for key, cap in caps.items():
        k = COST_KEYS.index(key)
        coef = table.costs[..., k].ravel()
        # the cap minus what every plan pays anyway: the fixed layers and each layer's cheapest
        # choice, so the row's numbers stay small next to HiGHS's tolerances
        floor = np.where(table.allowed, table.costs[..., k], np.inf).min(axis=1)
        constraints.append(LinearConstraint((coef - np.repeat(floor, C))[None, :], -np.inf,
                                            cap - fixed[key] - floor.sum()))
    keep = table.allowed & ~_dominated(values, table.costs[..., [COST_KEYS.index(k) for k in caps]], table.allowed)
    t0 = time.perf_counter()
    res = milp(values.ravel(), constraints=constraints, integrality=np.ones(n),
               bounds=Bounds(0, keep.ravel().astype(float)),
               options={"mip_rel_gap": 0.0, "presolve": True})
    seconds = time.perf_counter() - t0
    if res.status == 2:
        raise _joint_infeasible(table, caps)
    if res.x is None or res.status != 0:
        raise ConfigError(f"the MILP solver stopped without a plan: {res.message}")
    choice = np.asarray(res.x).reshape(L, C).argmax(axis=1)
    sel = _selection(table, choice, "exact", objective, caps, seconds)
    _verify(sel, caps)
    return sel


def _dominated(values: np.ndarray, costs: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """(L, C) True where another allowed candidate of the layer is no worse in value and in
    every budgeted cost, and strictly better in one (or equal in all and listed first).

    Dropping these keeps the optimum (swap one in a plan: no cost rises, the value does not
    grow) and shrinks what branch and bound explores.
    """
    v = np.where(allowed, values, np.inf)[:, :, None]                 # candidate j (axis 1) …
    w = np.where(allowed, values, np.inf)[:, None, :]                 # … against candidate k (axis 2)
    cj, ck = costs[:, :, None, :], costs[:, None, :, :]
    no_worse = (w <= v) & (ck <= cj).all(axis=-1) & allowed[:, None, :]
    strictly = (w < v) | (ck < cj).any(axis=-1)
    first = np.arange(values.shape[1])[None, :] < np.arange(values.shape[1])[:, None]  # k < j
    return (no_worse & (strictly | first[None])).any(axis=2)


def _verify(sel: Selection, caps: Mapping[str, float]) -> None:
    totals = dict(zip(COST_KEYS, sel.cost.as_tuple()))
    for key, cap in caps.items():
        if totals[key] > cap * (1 + 1e-9):
            raise ConfigError(f"internal: the {sel.method} plan exceeds the {key} budget ({totals[key]} > {cap})")


def solve_greedy(table: SearchTable, budget: Budget, *, objective: str = "loss") -> Selection:
    """NetAdapt-style greedy selection (module docstring).  ConfigError when it finds no plan."""
    caps = budget.caps(table.reference)
    _check_feasible(table, caps)
    values = np.where(table.allowed, table.objective(objective), np.inf)
    keys = [COST_KEYS.index(k) for k in caps]
    cap = np.array([caps[k] for k in caps], dtype=np.float64)
    fixed = np.array(table.fixed.as_tuple(), dtype=np.float64)[keys]
    costs = table.costs[..., keys]                                    # (L, C, K)
    L = len(table.layers)
    # start: least-sensitive candidate, cheapest among equals
    choice = np.array([min(np.flatnonzero(table.allowed[i]), key=lambda j: (values[i, j], *costs[i, j]))
                       for i in range(L)])
    rows = np.arange(L)
    t0 = time.perf_counter()
    while True:
        total = fixed + costs[rows, choice].sum(axis=0)
        excess = total - cap
        if (excess <= 1e-9 * np.maximum(cap, 1)).all():
            break
        over = excess > 0
        delta = costs - costs[rows, choice][:, None, :]               # (L, C, K) change of each move
        no_rise = (delta <= 0).all(axis=2) & table.allowed
        gain = (-delta[..., over] / excess[over]).sum(axis=2)          # share of the excess removed
        ok = no_rise & (gain > 0)
        if not ok.any():
            raise ConfigError(f"the greedy search finds no plan within {', '.join(_fmt(k, v) for k, v in caps.items())} "
                              f"on {table.array.name}")
        dv = values - values[rows, choice][:, None]
        ratio = np.where(ok, dv / np.where(ok, gain, 1.0), np.inf)
        best = np.flatnonzero(ratio.ravel() == ratio[ok].min())
        # ties: the move that removes most of the excess, then the first layer
        i, j = divmod(int(best[np.argmax(gain.ravel()[best])]), ratio.shape[1])
        choice[i] = j
    sel = _selection(table, choice, "greedy", objective, caps, time.perf_counter() - t0)
    _verify(sel, caps)
    return sel


def select(table: SearchTable, budget: Budget, *, method: str = "exact", objective: str = "loss") -> Selection:
    """:func:`solve_exact` or :func:`solve_greedy` by name."""
    if method == "exact":
        return solve_exact(table, budget, objective=objective)
    if method == "greedy":
        return solve_greedy(table, budget, objective=objective)
    raise ConfigError(f"unknown selection method {method!r}; expected {', '.join(METHODS)}")


def uniform_selection(table: SearchTable, pattern: SparsityPattern | str, *, objective: str = "loss") -> Selection:
    """Every layer the same candidate, dense (or, without a dense candidate, the layer's first
    allowed one) where it does not apply — what ``prune --pattern`` does."""
    j = table.column(pattern)
    dense = [c for c, p in enumerate(table.candidates) if isinstance(p, Dense)]
    choice = [j if table.allowed[i, j] else (dense[0] if dense and table.allowed[i, dense[0]]
                                             else int(np.flatnonzero(table.allowed[i])[0]))
              for i in range(len(table.layers))]
    return _selection(table, choice, f"uniform {table.candidates[j]}", objective, {})


@dataclass(frozen=True, slots=True)
class ParetoPoint:
    """One plan of the sweep: its budget (None for uniform plans) and predicted totals."""

    method: str
    budget_cycles: int | None
    cycles: int
    energy_pj: float
    weight_bytes: int
    value: float
    loss: float
    accuracy: float | None
    patterns: Mapping[str, str]

    @classmethod
    def of(cls, sel: Selection, budget_cycles: int | None) -> ParetoPoint:
        return cls(sel.method, budget_cycles, *sel.cost.as_tuple(), sel.value, sel.loss, sel.accuracy,
                   {k: str(v) for k, v in sel.patterns.items()})

    def to_dict(self) -> dict[str, Any]:
        return {k: (dict(v) if k == "patterns" else v) for k in self.__dataclass_fields__
                for v in [getattr(self, k)]}


@dataclass(frozen=True, slots=True)
class ParetoFront:
    """The sweep: exact and greedy plans per cycle budget, and every uniform plan."""

    array: str
    objective: str
    reference_cycles: int
    exact: tuple[ParetoPoint, ...]
    greedy: tuple[ParetoPoint, ...]
    uniform: tuple[ParetoPoint, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"array": self.array, "objective": self.objective, "reference_cycles": self.reference_cycles,
                **{k: [p.to_dict() for p in getattr(self, k)] for k in ("exact", "greedy", "uniform")}}


def pareto(table: SearchTable, *, points: int = 16, budgets: Sequence[int] | None = None,
           objective: str = "loss") -> ParetoFront:
    """Exact and greedy plans over cycle budgets, plus the uniform plans.

    ``budgets`` (cycles) default to ``points`` values evenly spaced from the least feasible
    cycles to the unpruned model's.  A budget the greedy search cannot meet has no greedy point.
    """
    low, high = minimum_cost(table).cycles, table.reference.cycles
    if budgets is None:
        if isinstance(points, bool) or not isinstance(points, int) or points < 2:
            raise ConfigError(f"a Pareto sweep needs at least 2 points, not {points!r}")
        budgets = sorted({round(float(b)) for b in np.linspace(low, max(low, high), points)})
    exact, greedy = [], []
    for b in budgets:
        if b < low:
            continue
        exact.append(ParetoPoint.of(solve_exact(table, Budget(cycles=b), objective=objective), b))
        try:
            greedy.append(ParetoPoint.of(solve_greedy(table, Budget(cycles=b), objective=objective), b))
        except ConfigError:
            pass
    uniform = [ParetoPoint.of(uniform_selection(table, c, objective=objective), None) for c in table.candidates]
    return ParetoFront(table.array.name, objective, high, tuple(exact), tuple(greedy), tuple(uniform))
