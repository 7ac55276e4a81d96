"""Sparsity schedules: how the final pattern is reached.

* ``oneshot`` — prune once to the final pattern, then fine-tune.
* ``iterative`` — k prune → fine-tune rounds; round i keeps density d_f^(i/k) (each round removes
  the same share of what is left).
* ``agp`` — automated gradual pruning (Zhu & Gupta 2017): during fine-tuning, at steps
  t = t0 + jΔt (j = 1 … n), sparsity s_t = s_f + (s_i − s_f)(1 − (t − t0)/(nΔt))³.

Schedules speak in *fractions of the final sparsity* so one schedule drives any pattern or a
per-layer plan: :func:`at_fraction` turns a final pattern and a fraction into the pattern of that
step (unstructured/block/channel densities interpolate; N:M moves N from M down to N).
"""

from __future__ import annotations

from ..errors import ConfigError
from ..patterns import NM, Block, Channel, Dense, SparsityPattern, Unstructured

__all__ = ["SCHEDULES", "agp_sparsity", "agp_steps", "iterative_fractions", "at_fraction",
           "check_schedule"]

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


def agp_steps(total_steps: int, n: int, *, end: float = 0.75) -> tuple[int, int]:
    """(t0, Δt) spreading n pruning events over the first ``end`` of ``total_steps``."""
    if total_steps < 1:
        return 0, 1
    dt = max(1, int(total_steps * end) // n)
    return 0, dt


def iterative_fractions(steps: int, density: float | None = None) -> list[float]:
    """Fractions of the final sparsity reached after each of ``steps`` rounds.

    With the final ``density`` given, round i keeps density^(i/steps): every round removes the
    same share of the weights still alive (Han et al. 2015), so the last round is no harsher
    than the first.  Without it, the fractions are linear (i/steps).
    """
    if density is None or density >= 1.0:
        return [i / steps for i in range(1, steps + 1)]
    return [(1.0 - density ** (i / steps)) / (1.0 - density) for i in range(1, steps + 1)]


def at_fraction(pattern: SparsityPattern, fraction: float) -> SparsityPattern:
    """The pattern that removes ``fraction`` of what ``pattern`` removes (1.0 → ``pattern``)."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"schedule fraction must lie in [0, 1], not {fraction!r}")
    if fraction >= 1.0 or isinstance(pattern, Dense):
        return pattern
    density = 1.0 - fraction * (1.0 - pattern.density)
    if isinstance(pattern, NM):
        n = pattern.n + round((1.0 - fraction) * (pattern.m - pattern.n))
        return NM(n, pattern.m)
    if isinstance(pattern, Unstructured):
        return Unstructured(density)
    if isinstance(pattern, Block):
        return Block(pattern.bh, pattern.bw, density)
    if isinstance(pattern, Channel):
        return Channel(density)
    raise ConfigError(f"no schedule for pattern kind {pattern.kind!r}")
