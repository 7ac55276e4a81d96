"""Sparsity schedules: how the final pattern is reached.

* ``oneshot`` — prune once to the final pattern, then fine-tune.
* ``iterative`` — k prune → fine-tune rounds; round i keeps density d_f^(i/k) (each round removes
  the same share of what is left); N:M layers step through k *distinct* levels (at most M − N
  rounds); the fine-tune budget goes mostly to later rounds, half of it to the final model
  (:func:`finetune_split`).
* ``agp`` — automated gradual pruning (Zhu & Gupta 2017): during fine-tuning, at steps
  t = t0 + jΔt (j = 1 … n), sparsity s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³.

Schedules speak in *fractions of the final sparsity* so one schedule drives any pattern or a
per-layer plan: :func:`at_fraction` turns a final pattern and a fraction into the pattern of that
step (unstructured/block/channel densities interpolate; N:M moves N from M down to N).
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from ..patterns import NM, Block, Channel, Dense, SparsityPattern, Unstructured

__all__ = ["SCHEDULES", "agp_sparsity", "agp_steps", "iterative_fractions", "step_fractions", "at_fraction",
           "check_schedule", "finetune_split", "nm_levels", "check_agp_budget", "agp_event", "AGP_END"]

#: AGP reaches the final sparsity after this fraction of the fine-tuning steps
AGP_END = 0.75

SCHEDULES = ("oneshot", "iterative", "agp")


def check_schedule(schedule: str, steps: int) -> None:
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"schedule steps must be a positive integer, not {steps!r}")


def agp_sparsity(t: float, *, s_i: float, s_f: float, t0: float, n: int, dt: float) -> float:
    """Zhu & Gupta's cubic schedule, clamped to [s_i, s_f] outside t0 … t0 + nΔt."""
    if n < 1 or dt <= 0:
        raise ConfigError(f"AGP needs n ≥ 1 and Δt > 0, not n={n!r}, dt={dt!r}")
    progress = min(max((t - t0) / (n * dt), 0.0), 1.0)
    return s_f + (s_i - s_f) * (1.0 - progress) ** 3


def agp_steps(total_steps: int, n: int, *, end: float = AGP_END) -> tuple[int, int]:
    """(t0, Δt) spreading n pruning events over the first ``end`` of ``total_steps``.

    Event j (1 … n) fires before optimizer step t0 + jΔt ≤ ``end``·total, so every event is
    followed by fine-tuning; :func:`check_agp_budget` refuses budgets too short for that.
    """
    check_agp_budget(total_steps, n, end=end)
    return 0, int(total_steps * end) // n


def agp_event(t: int, *, t0: int, dt: int, n: int) -> tuple[int, float] | None:
    """(event index j, fraction of the final sparsity) if AGP prunes before step ``t``, else None.

    Events fire at t = t0 + jΔt for j = 1 … n, reaching the cubic schedule's value there.
    """
    if dt < 1 or t <= t0 or (t - t0) % dt:
        return None
    j = (t - t0) // dt
    if not 1 <= j <= n:
        return None
    return j, min(1.0, agp_sparsity(t, s_i=0.0, s_f=1.0, t0=t0, n=n, dt=dt))


def check_agp_budget(total_steps: int, n: int, *, end: float = AGP_END, steps_per_epoch: int | None = None) -> None:
    """ConfigError naming the minimum fine-tune epochs when n AGP events cannot all fit
    (one optimizer step apart, the last one at ``end`` of the budget, fine-tuning after it)."""
    if int(total_steps * end) >= n:
        return
    need = math.ceil(n / end)
    if steps_per_epoch:
        raise ConfigError(f"AGP with {n} pruning events needs at least {math.ceil(need / steps_per_epoch)} "
                          f"fine-tune epoch(s) ({need} optimizer steps at {steps_per_epoch} per epoch), "
                          f"not {total_steps // steps_per_epoch}; give more epochs or fewer steps")
    raise ConfigError(f"AGP with {n} pruning events needs at least {need} optimizer steps, not {total_steps}")


def finetune_split(total_steps: int, rounds: int) -> list[int]:
    """Optimizer steps of fine-tuning after each of ``rounds`` prune rounds.

    The final model gets half of the budget (it is what is deployed); the other half is shared
    by the earlier rounds in proportion 1 : 2 : … : k−1 (later, sparser models need more).
    One round takes everything.  Integer steps, summing to ``total_steps``.
    """
    if rounds <= 1:
        return [total_steps]
    final = total_steps - total_steps // 2
    weights = list(range(1, rounds))
    early = [total_steps // 2 * w // sum(weights) for w in weights]
    early[-1] += total_steps // 2 - sum(early)
    return early + [final]


def nm_levels(pattern: SparsityPattern) -> int | None:
    """Distinct N:M levels below dense an N:M pattern can step through (M − N), else None."""
    return pattern.m - pattern.n if isinstance(pattern, NM) else None


def iterative_fractions(steps: int, density: float | None = None) -> list[float]:
    """Fractions of the final sparsity reached after each of ``steps`` rounds.

    With the final ``density`` given, round i keeps density^(i/steps): every round removes the
    same share of the weights still alive (Han et al. 2015), so the last round is no harsher
    than the first.  Without it, the fractions are linear (i/steps).
    """
    return step_fractions(0.0, 1.0, steps, density)


def step_fractions(start: float, end: float, steps: int, density: float | None = None) -> list[float]:
    """``steps`` fractions of the final sparsity leading from ``start`` (exclusive) to ``end``.

    The model's density 1 − f·(1 − ``density``) moves geometrically (each step removes the same
    share of what is alive); linearly in f when the final ``density`` is not given.  The last
    fraction is exactly ``end``.
    """
    end = float(end)
    if steps <= 1 or end <= start:
        return [end]
    if density is None or density >= 1.0:
        return [start + (end - start) * i / steps for i in range(1, steps)] + [end]
    d0, d1 = 1.0 - start * (1.0 - density), 1.0 - end * (1.0 - density)
    return [(1.0 - d0 * (d1 / d0) ** (i / steps)) / (1.0 - density) for i in range(1, steps)] + [end]


def at_fraction(pattern: SparsityPattern, fraction: float, *, progress: float | None = None) -> SparsityPattern:
    """The pattern that removes ``fraction`` of what ``pattern`` removes (1.0 → ``pattern``).

    N:M moves N from M down to N by ``progress`` (default ``fraction``): the iterative schedule
    passes i/k so that k ≤ M − N rounds give k distinct levels.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"schedule fraction must lie in [0, 1], not {fraction!r}")
    if isinstance(pattern, NM):
        p = fraction if progress is None else progress
        n = pattern.n + round((1.0 - p) * (pattern.m - pattern.n))
        return NM(n, pattern.m)
    if fraction >= 1.0 or isinstance(pattern, Dense):
        return pattern
    density = 1.0 - fraction * (1.0 - pattern.density)
    if isinstance(pattern, Unstructured):
        return Unstructured(density)
    if isinstance(pattern, Block):
        return Block(pattern.bh, pattern.bw, density)
    if isinstance(pattern, Channel):
        return Channel(density)
    raise ConfigError(f"no schedule for pattern kind {pattern.kind!r}")
