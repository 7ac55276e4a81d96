"""Gradual pruning inside the user's own training loop, as ``torch.ao.pruning``'s schedulers do.

::

    pruner = hwprune.GradualPruner(model, "2:4", end_step=len(loader) * 3)
    for epoch in range(4):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            pruner.step()                 # prunes on Zhu & Gupta's cubic schedule
    pruner.result.masks                   # the final N×K masks (torch.nn.utils.prune kept on the model)

The pruner counts optimizer steps; after step t = start + jΔt (Δt = (end − start)/events,
j = 1 … events) it prunes every layer to the AGP fraction of its final pattern
(:func:`~hwprune.prune.schedules.agp_event`, the same rule :func:`~hwprune.prune.prune_model`'s
``agp`` schedule follows); N:M layers step through their levels linearly, event j of n keeping
N + round((1 − j/n)(M − N)) per group.  Masks are ``torch.nn.utils.prune`` reparametrisations, so the user's
optimizer keeps updating ``weight_orig`` and pruned weights stay exactly zero; pruning composes
with any earlier pruning; rows left empty get their bias and following batch-norm masked when
example inputs (or ``data``) let the pruner see which batch-norm follows which layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..patterns import SparsityPattern
from ..workload import WorkloadLike, as_workload
from .criteria import get_criterion
from .engine import (SCOPES, PruneResult, _global_density, _prior_patterns, _resolve_patterns, _Run, _Session,
                     current_masks, layer_graph, prunable_layers, rescore_steps)
from .plan import PruningPlan
from .schedules import agp_event

__all__ = ["GradualPruner"]


def _positive(name: str, value: object, *, zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        raise ConfigError(f"{name} must be a {'non-negative' if zero else 'positive'} integer, not {value!r}")
    return value


class GradualPruner:
    """Prune ``model`` to ``pattern`` (or a ``plan``) gradually; call :meth:`step` after each
    optimizer step.

    Parameters
    ----------
    model : nn.Module
        Pruned in place.
    pattern : str, SparsityPattern or mapping
        The final pattern (channel patterns spare the final classifier) or layer → pattern.
    data : WorkloadLike, optional
        Calibration data, needed by data-driven criteria (taylor, hessian, activation, obs).
    plan : PruningPlan, optional
        Per-layer final patterns, instead of ``pattern``.
    criterion, scope, min_density, row_floor, calib_batches, rescore, seed
        As in :func:`~hwprune.prune.prune_model` (``rescore`` scorings are spread over the events).
    start_step, end_step : int
        The first event fires after optimizer step ``start_step + Δt``, the last (the final
        pattern) after ``end_step``.
    events : int
        Number of pruning events (default 4).
    example_inputs : tuple of Tensor, optional
        One forward pass's inputs, to find the batch-norm after each layer (default: ``data``'s).
    """

    def __init__(self, model: nn.Module, pattern: SparsityPattern | str | Mapping[str, Any] | None = None, *,
                 end_step: int, data: WorkloadLike | str | None = None, plan: PruningPlan | None = None,
                 criterion: str = "l1", scope: str = "layer", start_step: int = 0, events: int = 4,
                 min_density: float = 0.02, row_floor: int = 1, calib_batches: int = 8,
                 example_inputs: tuple[torch.Tensor, ...] | None = None, rescore: int | None = None,
                 seed: int = 0) -> None:
        crit = get_criterion(criterion)
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; expected layer or global")
        start, end, n = (_positive("start_step", start_step, zero=True), _positive("end_step", end_step),
                         _positive("events", events))
        if end - start < n:
            raise ConfigError(f"{n} pruning events need at least {n} optimizer steps between start_step "
                              f"{start} and end_step {end}")
        if crit.needs and data is None:
            raise ConfigError(f"criterion {crit.name!r} needs calibration data: give data=")
        data = as_workload(data) if data is not None else None
        targets = prunable_layers(model)
        inputs = example_inputs if example_inputs is not None else (data.example_inputs(2) if data else None)
        order, followers = layer_graph(model, inputs, targets) if inputs is not None else (list(targets), {})
        finals = _resolve_patterns(targets, order, pattern, plan)
        gd = _global_density(scope, finals, custom=plan is not None or isinstance(pattern, Mapping))
        run = _Run(crit, scope, "agp", n, 0, 1.0, min_density, _positive("calib_batches", calib_batches),
                   _positive("row_floor", row_floor, zero=True), seed, False, rescore_steps(crit, scope, rescore))
        self._session = _Session(model, data, run, targets, order, followers, finals, gd,
                                 PruneResult(model, dict(finals), {}, crit.name, scope, "agp", n, 0),
                                 _prior_patterns(targets))
        self.start_step, self.end_step, self.events = start, end, n
        self._dt = (end - start) // n
        self.step_count = 0

    def step(self) -> bool:
        """Count one optimizer step; prune if an event is due.  Returns whether it pruned."""
        self.step_count += 1
        event = agp_event(self.step_count, t0=self.start_step, dt=self._dt, n=self.events)
        if event is None:
            return False
        j, fraction = event  # the last event's fraction is exactly 1: the final pattern
        self._session.prune_to(fraction, {"round": j, "step": self.step_count}, progress=j / self.events)
        return True

    @property
    def done(self) -> bool:
        """Whether the final pattern has been reached."""
        return len(self._session.result.history) >= self.events

    @property
    def result(self) -> PruneResult:
        """What was pruned so far (masks, patterns, event history)."""
        res = self._session.result
        res.masks = current_masks(self._session.model, self._session.targets)
        return res

    def state_dict(self) -> dict[str, int]:
        """The step counter (the masks live in the model's state dict)."""
        return {"step_count": self.step_count}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.step_count = _positive("step_count", state.get("step_count"), zero=True)
