"""Hardware-aware search: the cost model picks each layer's sparsity pattern, exactly.

The idea, in three steps:

1. **Table** (:func:`build_table`): for every prunable layer × candidate pattern
   (:mod:`.candidates`), the validation loss/accuracy change of pruning *only* that layer that
   way, one shot (:mod:`.sensitivity`, cached on disk), and its cycles, energy and weight bytes
   from the cost model with the candidate's actual mask (:mod:`.costs`).
2. **Selection** (:mod:`.solve`): one candidate per layer minimising the summed sensitivity
   under cycle / energy / weight-byte budgets — a multiple-choice knapsack solved exactly by
   ``scipy.optimize.milp`` (HiGHS); a NetAdapt-style greedy baseline; a Pareto sweep.
3. **Plan** (:func:`make_plan`): a :class:`~hwprune.prune.plan.PruningPlan` with per-layer
   predictions that ``hwprune prune --plan`` applies and ``hwprune estimate --plan`` costs, to
   the same cycle.

Three lines of Python do what ``hwprune search`` does::

    task = load_task("digits_cnn"); model, _ = train_task(task)
    result = search(model, task, "os16x16", Budget(fraction=0.5), criterion="l1")
    save_plan("plan.json", result.plan); plot_pareto(result.pareto(), "pareto.png")
"""

from .api import SearchResult, as_budget, make_plan, search
from .candidates import CANDIDATES_SYNTAX, default_candidates, parse_candidates
from .costs import COST_KEYS, Cost, candidate_cost, plan_cost, weight_bytes
from .plot import plot_pareto
from .sensitivity import (
                    SENSITIVITY_METHODS,
                    Sensitivity,
                    SensitivityCache,
                    model_hash,
                    task_fingerprint,
)
from .solve import (
                    METHODS,
                    Budget,
                    ParetoFront,
                    ParetoPoint,
                    Selection,
                    minimum_cost,
                    pareto,
                    select,
                    solve_exact,
                    solve_greedy,
                    uniform_selection,
)
from .table import OBJECTIVES, SearchTable, TableMeta, build_table

__all__ = [
                    "CANDIDATES_SYNTAX",
                    "COST_KEYS",
                    "METHODS",
                    "OBJECTIVES",
                    "SENSITIVITY_METHODS",
                    "Budget",
                    "Cost",
                    "ParetoFront",
                    "ParetoPoint",
                    "SearchResult",
                    "SearchTable",
                    "Selection",
                    "Sensitivity",
                    "SensitivityCache",
                    "TableMeta",
                    "as_budget",
                    "build_table",
                    "candidate_cost",
                    "default_candidates",
                    "make_plan",
                    "minimum_cost",
                    "model_hash",
                    "pareto",
                    "parse_candidates",
                    "plan_cost",
                    "plot_pareto",
                    "search",
                    "select",
                    "solve_exact",
                    "solve_greedy",
                    "task_fingerprint",
                    "uniform_selection",
                    "weight_bytes",
]
